"""`nbp` with slow checkpoint writes, for `bench/faults/faults.py`: each checkpoint reaches the disk in two halves with a
pause between them, so a SIGKILL can land while its temporary file is half written (a tiny model's checkpoint is
otherwise written in milliseconds and a random kill almost never meets one).

    python bench/faults/slow_writes.py PAUSE_SECONDS nbp-arguments...
"""
from __future__ import annotations

import io
import os
import sys
import time

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from nbp.cli import main


def write_in_two_halves(pause: float):
    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getvalue()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            time.sleep(pause)
            f.write(data[len(data) // 2:])
    return save_checkpoint


if __name__ == "__main__":
    TorchCheckpointIO.save_checkpoint = write_in_two_halves(float(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
