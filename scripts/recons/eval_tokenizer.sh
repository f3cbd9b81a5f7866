#!/usr/bin/env bash
# Reconstruction metrics of a tokenizer on a dataset split:
#   bash scripts/recons/eval_tokenizer.sh tokenizer=ckpt/magvit2_ucf.pt clips.root=data/UCF-101 clips.annotations=testlist01.txt i3d=ckpt/i3d_pretrained_400.pt
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/nbp eval-tokenizer "$@"
