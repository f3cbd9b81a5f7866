#!/usr/bin/env bash
# FVD of two video sets: bash scripts/fvd.sh real=REAL fake=FAKE protocol=ucf101-10k i3d=ckpt/i3d_pretrained_400.pt
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/nbp eval "$@"
