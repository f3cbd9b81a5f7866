"""DeepSpeed ZeRO through Lightning, on GPUs and on CPU processes.

Lightning's DeepSpeedStrategy refuses anything but CUDA. On CPU, DeepSpeed itself runs (DS_ACCELERATOR=cpu, gloo,
torch's AdamW), so `CPUDeepSpeedStrategy` only replaces the three places that insist on CUDA. It is how the
tests exercise ZeRO 1/2/3 on 2 CPU processes, and it lets a CPU cluster train with ZeRO too.
"""
from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # read when deepspeed is first imported

from lightning.fabric.utilities.seed import reset_seed  # noqa: E402
from lightning.pytorch.strategies import DeepSpeedStrategy  # noqa: E402
from lightning.pytorch.strategies.ddp import DDPStrategy  # noqa: E402

from nbp.config import InputError


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    def setup_environment(self) -> None:
        DDPStrategy.setup_environment(self)  # skips DeepSpeedStrategy's CUDA-only check

    @property
    def root_device(self) -> torch.device:
        return torch.device("cpu", 0)  # DeepSpeed reads the index as the device rank; every rank is "cpu"

    def setup_distributed(self) -> None:
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()  # gloo: the default backend for a CPU root device


def deepspeed_strategy(stage: int) -> DeepSpeedStrategy:
    """ZeRO `stage` (1, 2 or 3) with torch's optimizer; the CPU variant when there is no GPU."""
    if stage not in (1, 2, 3):
        raise InputError(f"DeepSpeed ZeRO stage must be 1, 2 or 3, got {stage}")
    if torch.cuda.is_available():
        return DeepSpeedStrategy(stage=stage, zero_allow_untested_optimizer=True)
    return CPUDeepSpeedStrategy(stage=stage, zero_allow_untested_optimizer=True, process_group_backend="gloo")
