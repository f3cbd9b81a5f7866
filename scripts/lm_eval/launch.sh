#!/usr/bin/env bash
# bash scripts/lm_eval/launch.sh DATASET PROCESSES lm=LM tokenizer=TOK [key=value ...]
# Samples sharded over the processes (torchrun sets RANK/WORLD_SIZE; each rank writes its own files and a rerun
# makes only the missing ones), exports the real clips once, then computes FVD. Settings: DATASET_*.yaml here.
set -euo pipefail
cd "$(dirname "$0")/../.."
dataset=$1; processes=$2; shift 2
.venv/bin/torchrun --nproc-per-node "$processes" -m nbp.cli sample "scripts/lm_eval/${dataset}_sample.yaml" "$@"
[ -f "runs/eval_${dataset}/real.npy" ] || .venv/bin/nbp export-clips "scripts/lm_eval/${dataset}_real.yaml"
exec .venv/bin/nbp eval "scripts/lm_eval/${dataset}_fvd.yaml"
