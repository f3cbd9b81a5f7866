"""The examples run on deterministic stand-ins for the official files (the goldens' formats and weights)."""
import json
import runpy
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch

from nbp.metrics import InceptionI3d

from conftest import det_state_dict, golden_dir

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name, argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", [name, *map(str, argv)])
    return runpy.run_path(str(EXAMPLES / name), run_name="example")["main"](list(map(str, argv)))


def test_sample_from_official_nbp_files(official_magvit2_checkpoint, tmp_path, monkeypatch):
    spec = json.loads((golden_dir() / "nbp_gpt_small_spec.json").read_text())["hybrid_spec"]
    args = Namespace(n_layer=2, n_head=4, n_embd=64, token_number_per_step=16, cond_token_num=8, hybrid=True,
                     starts_with_bov=True, cond_stage_key="text", unconditional=False)
    torch.save({"state_dict": {"transformer." + k: v for k, v in det_state_dict(spec, 11).items()},
                "hyper_parameters": {"args": args}}, tmp_path / "ucf.ckpt")
    written = run_example("sample_official_nbp.py", ["--tokenizer", official_magvit2_checkpoint, "--lm",
                                                     tmp_path / "ucf.ckpt", "--resolution", 32, "--num-samples", 2,
                                                     "--text-ids", "1,5,9,13,2,0,0,0", "--top-k", 100,
                                                     "--out", tmp_path / "out"], monkeypatch)
    assert [p.name for p in written] == ["sample_0.mp4", "sample_1.mp4", "contact_sheet.png"]
    assert all(p.stat().st_size > 0 for p in written)


def test_far_rollout_on_a_dmlab_episode(tmp_path, monkeypatch):
    spec = json.loads((golden_dir() / "far_small_spec.json").read_text())
    torch.save(det_state_dict(spec["far_long"]["spec"], spec["far_long"]["seed"]), tmp_path / "FAR_Long.pth")
    torch.save(det_state_dict(spec["dcae"]["spec"], spec["dcae"]["seed"]), tmp_path / "DCAE.pth")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "5.npz", video=rng.integers(0, 256, (10, 64, 64, 3), dtype=np.uint8),
             actions=rng.integers(0, 4, 10))
    result = run_example("far_rollout_dmlab.py", ["--far", tmp_path / "FAR_Long.pth", "--dcae", tmp_path / "DCAE.pth",
                                                  "--episode", tmp_path / "5.npz", "--context", 6, "--frames", 3,
                                                  "--steps", 2, "--short-window", 4, "--out", tmp_path / "out"],
                         monkeypatch)
    assert len(result["psnr_per_frame"]) == 3 and all(0 < v < 60 for v in result["psnr_per_frame"])
    assert result["videos"].shape == (1, 3, 9, 64, 64)
    assert (tmp_path / "out" / "truth_vs_prediction.mp4").is_file()


@pytest.mark.filterwarnings("ignore:feats_. has 3 samples")
def test_fvd_between_two_folders(tmp_path, monkeypatch):
    torch.save(det_state_dict([(k, list(v.shape)) for k, v in InceptionI3d(400).state_dict().items()], 3, 2.0),
               tmp_path / "i3d.pt")
    rng = np.random.default_rng(0)
    for name in ("real", "fake"):
        (tmp_path / name).mkdir()
        for i in range(3):
            np.save(tmp_path / name / f"{i}.npy", rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))
    fvd = run_example("fvd_two_folders.py", [tmp_path / "real", tmp_path / "fake", "--i3d", tmp_path / "i3d.pt"],
                      monkeypatch)
    same = run_example("fvd_two_folders.py", [tmp_path / "real", tmp_path / "real", "--i3d", tmp_path / "i3d.pt"],
                       monkeypatch)
    assert fvd > 0 and abs(same) < 1e-5 * fvd  # the same set: zero up to round-off of large features
