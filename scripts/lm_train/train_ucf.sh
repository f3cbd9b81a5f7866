#!/usr/bin/env bash
# Train the ucf LM: bash scripts/lm_train/train_ucf.sh SIZE [NODES] [key=value ...]   (SIZE: 700m, 1.2b, 3b)
exec "$(dirname "$0")/launch.sh" ucf "$@"
