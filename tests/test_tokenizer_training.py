import logging

import lightning as L
import pytest
import torch

from nbp.checkpoint import load_model
from nbp.checkpoint.perceptual import PerceptualConfig, load_perceptual
from nbp.config import ConfigError, build_config
from nbp.data.synthetic import make_dataset
from nbp.models.lpips import LPIPS
from nbp.training.loggers import read_metrics
from nbp.training.tokenizer import AutoencoderSystem, TokenizerTrainConfig, train_tokenizer

from conftest import det_state_dict


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synth"), videos_per_class=3, size=32, seed=5)


def config(root, run_dir, *overrides):
    return build_config(TokenizerTrainConfig, overrides=[
        f"run.run_dir={run_dir}", f"data.root={root}", "data.resolution=32", "data.frames=5",
        "data.batch_size=2", "data.num_workers=0", "run.steps=14", "disc_start=8", "run.checkpoint_every=5",
        "run.log_every=1", "lr=1e-3", "disc_lr=1e-3", "discriminator.channels=8",
        "discriminator.norm_groups=4", "perceptual_weight=0", *overrides])


def batch_rows(run_dir):
    return [row for row in read_metrics(run_dir) if row.get("train/batch")]


class KillAt(L.Callback):
    def __init__(self, batch):
        self.batch = batch

    def on_train_batch_end(self, trainer, system, outputs, batch, batch_idx):
        if int(system.batches_seen) == self.batch:
            raise RuntimeError("killed")


def test_training_reduces_loss_engages_the_discriminator_and_resumes_exactly(synthetic, tmp_path):
    straight = train_tokenizer(config(synthetic, tmp_path / "a"))
    rows = batch_rows(tmp_path / "a")
    batches = [int(float(r["train/batch"])) for r in rows]
    assert batches == list(range(1, 15))
    rec = [float(r["train/rec"]) for r in rows]
    assert sum(rec[-3:]) / 3 < 0.8 * sum(rec[:3]) / 3  # reconstruction loss falls
    engaged = [bool(r["train/d_loss"]) for r in rows]
    assert engaged == [b > 8 for b in batches]  # the discriminator trains from its start step on
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == \
        ["step_00000005.ckpt", "step_00000010.ckpt", "step_00000014.ckpt"]

    with pytest.raises(RuntimeError, match="killed"):
        train_tokenizer(config(synthetic, tmp_path / "b"), callbacks=[KillAt(12)])
    assert (tmp_path / "b" / "checkpoints" / "step_00000010.ckpt").exists()
    resumed = train_tokenizer(config(synthetic, tmp_path / "b"))  # picks up at batch 10
    # the killed run logged batches 1-11 (batch 12 died before its log), the resumed one 11-14
    assert [int(float(r["train/batch"])) for r in batch_rows(tmp_path / "b")] == list(range(1, 12)) + list(range(11, 15))
    a, b = load_model(straight), load_model(resumed)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)  # bitwise: same data, same updates
    a_ckpt = torch.load(tmp_path / "a" / "checkpoints" / "step_00000014.ckpt", weights_only=False)
    b_ckpt = torch.load(tmp_path / "b" / "checkpoints" / "step_00000014.ckpt", weights_only=False)
    for name, x in a_ckpt["state_dict"].items():
        torch.testing.assert_close(b_ckpt["state_dict"][name], x, rtol=0, atol=0, msg=name)
    official = torch.load(tmp_path / "a" / "tokenizer_official.pt", weights_only=True)["model_state_dict"]
    assert set(official) == {"module." + k for k in a.state_dict()}


def test_image_curriculum_and_bf16_run(synthetic, tmp_path):
    path = train_tokenizer(config(synthetic, tmp_path / "c", "run.steps=4", "disc_start=2", "image_steps=2",
                                  "run.precision=bf16-mixed", "ema_decay=0"))
    assert load_model(path).config.resolution == 32


def test_validation_psnr_is_that_of_the_exported_tokenizer_on_the_val_split(synthetic, tmp_path):
    from nbp.data.dataset import VideoDataset
    from nbp.metrics import psnr

    path = train_tokenizer(config(synthetic, tmp_path / "v", "run.steps=4", "run.val_every=4", "disc_start=2"))
    logged = [float(r["val/psnr"]) for r in read_metrics(tmp_path / "v") if r.get("val/psnr")]
    clips = VideoDataset(synthetic, synthetic / "testlist.txt", sequence_length=5, resolution=32, sampling="centre")
    videos = torch.stack([clips[i]["video"] for i in range(len(clips))])
    with torch.no_grad():
        expected = psnr(load_model(path)(videos).float().clamp(0, 1), videos).mean()
    assert len(logged) == 1 and abs(logged[0] - float(expected)) < 1e-3


@pytest.mark.parametrize("overrides, message", [
    (["run.steps=10", "disc_start=10"], "discriminator would never train"),
    (["data.resolution=36"], "divisible by 8"),
    (["image_steps=14"], "leaves no video steps"),
])
def test_invalid_combinations_fail_before_training(synthetic, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train_tokenizer(config(synthetic, tmp_path / "d", *overrides))
    assert not (tmp_path / "d" / "checkpoints").exists()


def test_non_finite_losses_are_skipped_then_stop(synthetic, tmp_path):
    system = AutoencoderSystem(config(synthetic, tmp_path / "e", "max_bad_steps=3"))
    nan = torch.tensor(float("nan"))
    assert not system.finite_or_skip(nan, 7) and not system.finite_or_skip(nan, 8)
    assert system.finite_or_skip(torch.tensor(1.0), 9) and int(system.bad_steps) == 2  # reset by a good update
    system.bad_steps.zero_()
    system.finite_or_skip(nan, 10)
    system.finite_or_skip(torch.tensor(float("inf")), 11, what="gradient norm")
    with pytest.raises(FloatingPointError, match="stopped at step 12: 3 non-finite values in a row \\(last loss nan\\)"):
        system.finite_or_skip(nan, 12)


def test_perceptual_loss_from_weight_files(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert load_perceptual(PerceptualConfig(search=[str(tmp_path)])) is None
    assert "perceptual loss OFF" in caplog.text
    keys = LPIPS().state_dict()
    vgg = det_state_dict([(k, list(v.shape)) for k, v in keys.items() if k.startswith("features.")], 1)
    vgg["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision's file also holds the classifier
    lin = det_state_dict([(k, list(v.shape)) for k, v in keys.items() if k.startswith("lin")], 2)
    lin = {k: v.abs() for k, v in lin.items()}  # LPIPS's linear weights are non-negative
    torch.save(vgg, tmp_path / "vgg16-397923af.pth")
    torch.save(lin, tmp_path / "vgg.pth")
    assert sorted(k for k in vgg if k.startswith("features."))[:2] == ["features.0.bias", "features.0.weight"]
    lpips = load_perceptual(PerceptualConfig(search=[str(tmp_path)]))
    a, b = torch.rand(2, 3, 5, 32, 32), torch.rand(2, 3, 5, 32, 32)
    assert torch.equal(lpips.video(a, a), torch.zeros(2))
    d_ab, d_ba = lpips.video(a, b), lpips.video(b, a)
    torch.testing.assert_close(d_ab, d_ba)
    assert (d_ab > 0).all() and (lpips.video(a, a + 0.01) < d_ab).all()
