#!/usr/bin/env bash
# Launch FAR training: bash scripts/far_train/launch.sh RECIPE.yaml [key=value ...]
set -euo pipefail
exec "$(dirname "$0")/../../.venv/bin/nbp" train-far "$@"
