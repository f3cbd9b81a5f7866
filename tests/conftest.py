"""Shared fixtures: the official goldens (../shared/golden) and checkpoints rebuilt from them."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# ../shared/golden beside the checkout, or where NBP_GOLDEN_DIR says (a copy carried to a GPU machine)
GOLDEN = Path(os.environ.get("NBP_GOLDEN_DIR") or Path(__file__).resolve().parents[2] / "shared" / "golden")


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` run only where a CUDA GPU is (tests/test_cuda.py also with NBP_TEST_DEVICE=cpu, which
    checks those tests on a CPU)."""
    if torch.cuda.is_available():
        return
    on_cpu = os.environ.get("NBP_TEST_DEVICE") == "cpu"
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and not (on_cpu and item.path.name == "test_cuda.py"):
            item.add_marker(skip)


def golden_dir() -> Path:
    if not (GOLDEN / "detfill.py").is_file():
        pytest.skip(f"official goldens not found at {GOLDEN} (they live in ../shared/golden beside the repo)")
    return GOLDEN


def det_state_dict(spec_entries, seed, gain=1.0):
    """detfill.det_state_dict from the golden folder: the exact weights the goldens were computed with."""
    sys.path.insert(0, str(golden_dir()))
    try:
        from detfill import det_state_dict as fill
    finally:
        sys.path.pop(0)
    return fill(spec_entries, seed, gain)


@pytest.fixture(scope="session")
def golden():
    def load(name):
        return dict(np.load(golden_dir() / name))
    return load


@pytest.fixture(scope="session")
def official_magvit2_checkpoint(tmp_path_factory):
    """An official-format `magvit2_*.pt` ({'model_state_dict': {'module.' + key: ...}}) with golden weights."""
    spec = json.loads((golden_dir() / "magvit2_nbp_spec.json").read_text())
    state = {"module." + k: v for k, v in det_state_dict(spec, 7).items()}
    path = tmp_path_factory.mktemp("official") / "magvit2_det.pt"
    torch.save({"model_state_dict": state, "epoch": 1}, path)
    return path
