#!/usr/bin/env python
"""Convert a DeepSpeed ZeRO checkpoint folder of an nbp LM run into one fp32 file that load_transformer reads.

    python zero_to_fp32.py runs/lm/checkpoints/step_00010000.ckpt lm_fp32.safetensors
(the same as `nbp convert CHECKPOINT OUT`).
"""
import sys

from nbp.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
