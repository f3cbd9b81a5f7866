"""Sizing training runs to a time budget: time a few steps on this machine, then shorten the runs alike.

Used by `nbp demo`, whose budget has to hold on every CPU: an AVX2-only 2-core machine runs its steps about
3x slower than one with AVX-512, so fixed step counts that fit one overrun the other.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


def seconds_per_step(step: Callable[[], None], repeats: int = 3) -> float:
    """Mean wall time of `step` after one untimed call (which allocates and picks the kernels)."""
    step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


@dataclass
class Plan:
    steps: dict[str, int]  # per run: the steps to train
    seconds_per_step: dict[str, float]  # per run: measured bare step time
    factor: float  # the share of the wanted steps that fits (1: all of them)
    planned_seconds: float  # the expected training time of the chosen steps, overhead included

    def describe(self, budget_seconds: float) -> str:
        timings = ", ".join(f"{name} {seconds:.3f} s/step" for name, seconds in self.seconds_per_step.items())
        chosen = ", ".join(f"{name} {steps} steps" for name, steps in self.steps.items())
        fit = "all the steps fit" if self.factor >= 1 else f"{self.factor:.0%} of the steps fit"
        return (f"calibration: {timings}; {fit} in {budget_seconds / 60:.1f} min of training -> {chosen} "
                f"(about {self.planned_seconds / 60:.1f} min)")


def fit_steps(wanted: dict[str, int], seconds: dict[str, float], overheads: dict[str, float], budget_seconds: float,
              minimum: int = 20) -> Plan:
    """The largest equal share of each run's `wanted` steps whose time fits `budget_seconds`, a run's step
    costing its bare `seconds` times its `overheads` (the training loop, data loading, checkpoints, validation)."""
    cost = {name: seconds[name] * overheads[name] for name in wanted}
    needed = sum(wanted[name] * cost[name] for name in wanted)
    factor = min(1.0, budget_seconds / needed) if needed > 0 else 1.0
    steps = {name: max(minimum, int(count * factor)) for name, count in wanted.items()}
    planned = sum(steps[name] * cost[name] for name in steps)
    return Plan(steps, {name: round(value, 4) for name, value in seconds.items()}, round(factor, 4), round(planned, 1))


def update_step(loss_of: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """A training step from a loss function: forward, backward and the optimizer's update."""
    def run() -> None:
        loss = loss_of()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return run
