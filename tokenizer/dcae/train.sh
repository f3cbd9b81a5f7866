#!/usr/bin/env bash
# Train a DC-AE from a recipe: bash tokenizer/dcae/train.sh crafter_tiny [key=value ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
recipe=$1; shift
exec .venv/bin/nbp train-dcae "tokenizer/dcae/${recipe}.yaml" "$@"
