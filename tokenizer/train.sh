#!/usr/bin/env bash
# Train a tokenizer from a recipe: bash tokenizer/train.sh tiny [key=value ...]
# Multi-GPU: the recipe's devices/strategy; launch under torchrun for several nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
recipe=$1; shift
exec .venv/bin/nbp train-tokenizer "tokenizer/${recipe}.yaml" "$@"
