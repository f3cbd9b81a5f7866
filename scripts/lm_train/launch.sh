#!/usr/bin/env bash
# bash scripts/lm_train/launch.sh DATASET SIZE [NODES] [key=value ...] -> nbp train-lm scripts/lm_train/DATASET_SIZE.yaml
# One node: the recipe's devices; several nodes: run this on each node with NODE_RANK and MASTER_ADDR set (torchrun).
set -euo pipefail
cd "$(dirname "$0")/../.."
dataset=$1; size=$2; shift 2
nodes=1
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then nodes=$1; shift; fi
recipe="scripts/lm_train/${dataset}_${size}.yaml"
if [ "$nodes" -gt 1 ]; then
  exec .venv/bin/torchrun --nnodes "$nodes" --nproc-per-node gpu --node-rank "${NODE_RANK:-0}" \
    --master-addr "${MASTER_ADDR:-localhost}" -m nbp.cli train-lm "$recipe" num_nodes="$nodes" "$@"
fi
exec .venv/bin/nbp train-lm "$recipe" "$@"
