"""Progress of long work: tqdm's bar on a terminal; elsewhere (a log file, CI, nohup) one plain line every few
percent with the rate and the time left, so a log shows how far a stage is."""
from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Iterable, Iterator

from tqdm import tqdm

EVERY_PERCENT = 5


def on_terminal() -> bool:
    return sys.stderr.isatty()


def clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


class ProgressLines:
    """A progress counter printing `desc: 25% (10/40 unit), 2.1 unit/s, 0:14 left` every EVERY_PERCENT percent."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", every: float = EVERY_PERCENT, initial: int = 0):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.done, self.initial, self.started = initial, initial, time.monotonic()  # a resumed count starts at initial
        self.next_percent = (100 * initial / total // every + 1) * every if total else every

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.total:
            return
        percent = 100 * self.done / self.total
        if percent >= self.next_percent or self.done >= self.total:
            self.report(percent)
            self.next_percent = (percent // self.every + 1) * self.every

    def report(self, percent: float) -> None:
        elapsed = time.monotonic() - self.started
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        print(f"{self.desc}: {percent:.0f}% ({self.done}/{self.total} {self.unit}), {rate:.3g} {self.unit}/s, "
              f"{clock(left)} left", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: int | None, desc: str, unit: str = "it", disable: bool = False):
    """A bar with `update(n)`: tqdm on a terminal, ProgressLines elsewhere."""
    if disable or on_terminal():
        return tqdm(total=total, desc=desc, unit=unit, disable=disable)
    return ProgressLines(total, desc, unit)


def progress(iterable: Iterable, desc: str, unit: str = "it", total: int | None = None) -> Iterator:
    """Iterate with progress shown (see `progress_bar`)."""
    total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
    with progress_bar(total, desc, unit) as bar:
        for item in iterable:
            yield item
            bar.update(1)


# what Lightning says at every start (devices, the seed, tips, advertisements) and known deprecation notes of the
# libraries' own code: none of it is the user's to act on
BANNERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
           "lightning.pytorch.trainer.connectors.checkpoint_connector", "lightning.fabric.utilities.seed")
LIBRARY_NOTES = (".*LeafSpec.*", ".*limit_val_batches.*", ".*does not have many workers.*")


def quiet_banners() -> None:
    """Training logs that hold nbp's lines and the libraries' warnings, not their banners."""
    for name in BANNERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in LIBRARY_NOTES:
        warnings.filterwarnings("ignore", message=message)
