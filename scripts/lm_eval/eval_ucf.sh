#!/usr/bin/env bash
# Sample at scale and compute FVD: bash scripts/lm_eval/eval_ucf.sh PROCESSES lm=LM.ckpt tokenizer=TOK.pt [key=value ...]
# Sampling is sharded over the processes (torchrun sets RANK/WORLD_SIZE), each rank writes its own files, and a
# rerun only makes the missing ones. Settings: scripts/lm_eval/ucf_*.yaml.
set -euo pipefail
cd "$(dirname "$0")/../.."
processes=$1; shift
.venv/bin/torchrun --nproc-per-node "$processes" -m nbp.cli sample --recipe scripts/lm_eval/ucf_sample.yaml "$@"
[ -f runs/eval_ucf/real.npy ] || .venv/bin/nbp export-clips --recipe scripts/lm_eval/ucf_real.yaml
exec .venv/bin/nbp eval --recipe scripts/lm_eval/ucf_fvd.yaml
