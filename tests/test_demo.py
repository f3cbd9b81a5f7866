"""`nbp demo` end to end in a small mode (about 30 s), and the PNG charts it draws."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from nbp.budget import fit_steps
from nbp.cli import main
from nbp.data.dataset import VideoDataset
from nbp.data.synthetic import CLASSES
from nbp.download import load_magvit2
from nbp.io.plot import COLOURS, line_chart, nice_ticks
from nbp.metrics import psnr
from nbp.metrics.video import UINT8_PSNR

SMALL = ["--scale", "0.04", "videos_per_class=4", "windows=2", "samples_per_class=2"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--out", str(out), *SMALL]) == 0
    return out


def test_demo_writes_every_stage_and_its_metrics(demo_run, capsys):
    metrics = json.loads((demo_run / "metrics.json").read_text())
    assert set(metrics["stage_seconds"]) == {"calibrate", "data", "tokenizer", "tokenizer_eval", "tokens", "lm",
                                             "samples", "prediction"}
    plan = metrics["plan"]  # the wanted steps (1,000 and 1,200 x 0.04) fit the default budget of a 2-core CPU
    assert plan["steps"] == {"tokenizer": 40, "lm": 48} and plan["factor"] == 1.0
    assert 0 < plan["planned_seconds"] < 60 * metrics["settings"]["minutes"]
    for name in CLASSES:
        sheet = Image.open(demo_run / "samples" / name / "contact_sheet.png")
        assert sheet.size[1] > 2 * 32 and len(list((demo_run / "samples" / name).glob("sample_*.mp4"))) == 2
    for chart in ("tokenizer_loss.png", "lm_loss.png"):
        assert Image.open(demo_run / chart).size == (640, 400)
    assert (demo_run / "prediction" / "truth_vs_prediction.mp4").stat().st_size > 0
    tokenizer, prediction = metrics["tokenizer"], metrics["prediction"]
    assert tokenizer["clips"] == 4 and 0 < tokenizer["codes_used"] <= 1000
    accuracy = metrics["samples"]["classifier_accuracy"]  # over 4 x 2 samples and 4 real test clips
    assert accuracy["samples"] * 8 == round(accuracy["samples"] * 8) and accuracy["real_test"] * 4 == round(accuracy["real_test"] * 4)
    assert metrics["lm"]["val/loss"] < np.log(1000)  # below a uniform guess over the 1,000 codes

    # The copy-last-frame baseline, recomputed from the test videos.
    data = demo_run / "data"
    clips = VideoDataset(data, data / "testlist.txt", sequence_length=9, resolution=32, fps=4, sampling="centre")
    truth = torch.stack([clips[i]["video"] for i in range(len(clips))])
    copy = truth[:, :, 4:5].expand(-1, -1, 4, -1, -1)
    np.testing.assert_allclose(prediction["copy_last_frame"]["psnr"],
                               psnr(copy, truth[:, :, 5:], max_db=UINT8_PSNR).mean().item(),
                               rtol=1e-5)
    with torch.no_grad():  # the tokenizer's PSNR, recomputed from its file
        recon = load_magvit2(demo_run / "tokenizer" / "tokenizer.safetensors", resolution=32)(truth).clamp(0, 1)
    np.testing.assert_allclose(tokenizer["psnr"], psnr(recon, truth).mean().item(), rtol=1e-5)
    assert prediction["clips"] == 4

    capsys.readouterr()
    assert main(["demo", "--out", str(demo_run), *SMALL]) == 0  # a second run keeps every finished stage
    out = capsys.readouterr().out
    assert out.count("kept from the earlier run") == 8
    assert json.loads((demo_run / "metrics.json").read_text())["tokenizer"] == tokenizer
    assert main(["demo", "--out", str(demo_run), *SMALL, "lm_steps=10"]) == 2  # other settings: refused, kept
    assert "other settings (lm_steps)" in capsys.readouterr().err
    assert json.loads((demo_run / "metrics.json").read_text())["tokenizer"] == tokenizer


def test_fit_steps_shortens_every_run_alike_to_the_budget():
    seconds, overheads = {"tokenizer": 0.1, "lm": 0.3}, {"tokenizer": 2.0, "lm": 1.0}
    roomy = fit_steps({"tokenizer": 600, "lm": 800}, seconds, overheads, budget_seconds=1000)
    assert roomy.steps == {"tokenizer": 600, "lm": 800} and roomy.factor == 1.0
    assert roomy.planned_seconds == pytest.approx(120 + 240)
    tight = fit_steps({"tokenizer": 600, "lm": 800}, seconds, overheads, budget_seconds=180)
    assert tight.factor == pytest.approx(0.5) and tight.steps == {"tokenizer": 300, "lm": 400}
    assert tight.planned_seconds <= 180 + 1e-6
    assert "50% of the steps fit" in tight.describe(180)
    tiny = fit_steps({"tokenizer": 600, "lm": 800}, seconds, overheads, budget_seconds=1)
    assert tiny.steps == {"tokenizer": 20, "lm": 20}  # never below the minimum


def test_nice_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0, 1000) == [0, 200, 400, 600, 800, 1000]
    assert nice_ticks(2.13, 2.71) == [2.2, 2.4, 2.6]


def test_line_chart_draws_each_series_in_its_colour(tmp_path):
    path = line_chart({"a": ([0, 1, 2], [3.0, 2.0, 1.0]), "b": ([0, 2], [1.0, 3.0])}, tmp_path / "c.png", "t")
    pixels = {tuple(p) for p in np.asarray(Image.open(path)).reshape(-1, 3)}
    assert COLOURS[0] in pixels and COLOURS[1] in pixels and COLOURS[2] not in pixels
