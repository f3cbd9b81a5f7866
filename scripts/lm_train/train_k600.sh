#!/usr/bin/env bash
# Train the k600 LM: bash scripts/lm_train/train_k600.sh SIZE [NODES] [key=value ...]   (SIZE: 700m, 1.2b, 3b)
exec "$(dirname "$0")/launch.sh" k600 "$@"
