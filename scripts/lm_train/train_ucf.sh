#!/usr/bin/env bash
# Train the ucf LM: bash scripts/lm_train/train_ucf.sh SIZE [NODES] [key=value ...]   (SIZE: 700m, 1.2b, 3b)
# One node: the recipe's devices; several nodes: torchrun per node (set MASTER_ADDR, NODE_RANK).
set -euo pipefail
cd "$(dirname "$0")/../.."
size=$1; nodes=${2:-1}; shift $(( $# > 1 ? 2 : 1 ))
if [ "$nodes" -gt 1 ]; then
  exec .venv/bin/torchrun --nnodes "$nodes" --nproc-per-node gpu --node-rank "${NODE_RANK:-0}" \
    --master-addr "${MASTER_ADDR:-localhost}" -m nbp.cli train-lm "scripts/lm_train/ucf_${size}.yaml" "$@"
fi
exec .venv/bin/nbp train-lm "scripts/lm_train/ucf_${size}.yaml" "$@"
