#!/usr/bin/env bash
# Sample at scale and compute FVD: bash scripts/lm_eval/eval_k600.sh PROCESSES lm=LM.ckpt tokenizer=TOK.pt [key=value ...]
# Sampling is sharded over the processes (torchrun sets RANK/WORLD_SIZE), each rank writes its own files, and a
# rerun only makes the missing ones. Settings: scripts/lm_eval/k600_*.yaml.
set -euo pipefail
cd "$(dirname "$0")/../.."
processes=$1; shift
.venv/bin/torchrun --nproc-per-node "$processes" -m nbp.cli sample --recipe scripts/lm_eval/k600_sample.yaml "$@"
[ -f runs/eval_k600/real.npy ] || .venv/bin/nbp export-clips --recipe scripts/lm_eval/k600_real.yaml
exec .venv/bin/nbp eval --recipe scripts/lm_eval/k600_fvd.yaml
