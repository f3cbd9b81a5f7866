#!/usr/bin/env bash
# Sample at scale and compute FVD: bash scripts/lm_eval/eval_ucf.sh PROCESSES lm=LM tokenizer=TOK [key=value ...]
exec "$(dirname "$0")/launch.sh" ucf "$@"
