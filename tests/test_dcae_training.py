import pytest
import torch

from nbp.checkpoint import load_dcae
from nbp.config import ConfigError, build_config
from nbp.training.dcae import DCAESystem, DCAETrainConfig, train_dcae
from nbp.training.loggers import read_metrics

import test_tokenizer_training
from test_tokenizer_training import KillAt

synthetic = test_tokenizer_training.synthetic  # the tokenizer tests' video dataset (fixture)


def config(root, run_dir, *overrides):
    return build_config(DCAETrainConfig, overrides=[
        f"run.run_dir={run_dir}", f"data.root={root}", "data.resolution=32", "data.frames=3",
        "data.batch_size=2", "data.num_workers=0", "run.steps=10", "disc_start=6", "run.checkpoint_every=4",
        "run.log_every=1", "lr=2e-3", "disc_lr=1e-3", "model.preset=dcae-tiny",
        "discriminator.channels=8", "discriminator.norm_groups=4", "discriminator.layers=2", "perceptual_weight=0",
        "ema_decay=0.9", *overrides])


def test_two_phases_freeze_the_encoder_export_both_layouts_and_resume_exactly(synthetic, tmp_path):
    path = train_dcae(config(synthetic, tmp_path / "a"))
    rows = [r for r in read_metrics(tmp_path / "a") if r.get("train/batch")]
    assert [bool(r["train/d_loss"]) for r in rows] == [i > 6 for i in range(1, 11)]
    checkpoints = tmp_path / "a" / "checkpoints"
    at_8 = torch.load(checkpoints / "step_00000008.ckpt", weights_only=False)["state_dict"]
    at_10 = torch.load(checkpoints / "step_00000010.ckpt", weights_only=False)["state_dict"]
    encoder = [k for k in at_8 if k.startswith("tokenizer.encoder.")]
    decoder = [k for k in at_8 if k.startswith("tokenizer.decoder.") and k.endswith("weight")]
    assert all(torch.equal(at_8[k], at_10[k]) for k in encoder)  # GAN phase: the encoder stays as it was
    assert not all(torch.equal(at_8[k], at_10[k]) for k in decoder)  # and the decoder trains

    ours, official = load_dcae(path), load_dcae(tmp_path / "a" / "dcae_official.pth", config="dcae-tiny",
                                                 resolution=32)
    video = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))[None]
    for a, b in zip(ours.state_dict().values(), official.state_dict().values()):
        assert torch.equal(a, b)
    live_bn = at_10["tokenizer.decoder.up_blocks.2.1.norm.running_mean"]
    assert torch.equal(ours.state_dict()["decoder.up_blocks.2.1.norm.running_mean"], live_bn)  # stats: the live model's
    frames = video[0] * 2 - 1
    assert torch.equal(ours.encoder(frames), official.encoder(frames))  # the scales differ: see the test below

    with pytest.raises(RuntimeError, match="killed"):
        train_dcae(config(synthetic, tmp_path / "b"), callbacks=[KillAt(9)])
    resumed = load_dcae(train_dcae(config(synthetic, tmp_path / "b")))
    for (name, a), b in zip(ours.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_reconstruction_improves_on_its_start(synthetic, tmp_path):
    cfg = config(synthetic, tmp_path / "c", "run.steps=30", "adversarial_weight=0", "ema_decay=0")
    start = DCAESystem(cfg).tokenizer.eval()
    trained = load_dcae(train_dcae(cfg))
    clips = torch.stack([cfg.data.dataset(cfg.data.train, training=False).load_clip(i)["video"] for i in range(4)])
    error = lambda model: (model(clips).clamp(0, 1) - clips).abs().mean()
    with torch.no_grad():
        assert error(trained) < 0.7 * error(start)


def test_export_scales_the_latents_to_unit_std_unless_told(synthetic, tmp_path):
    cfg = config(synthetic, tmp_path / "e", "run.steps=4", "adversarial_weight=0", "scale_clips=3")
    dcae = load_dcae(train_dcae(cfg))
    dataset = cfg.data.dataset(cfg.data.train, training=True)
    clips = torch.stack([dataset.load_clip(i, draw=i)["video"] for i in range(3)]).transpose(1, 2)
    with torch.no_grad():
        latents = dcae.encode_video(clips).double()
    assert dcae.config.scaling_factor != 0.2889
    assert abs(latents.std(unbiased=False).item() - 1) < 1e-5
    fixed = load_dcae(train_dcae(config(synthetic, tmp_path / "f", "run.steps=4", "adversarial_weight=0",
                                        "scaling_factor=0.5")))
    assert fixed.config.scaling_factor == 0.5
    tuned = load_dcae(train_dcae(config(synthetic, tmp_path / "g", "run.steps=4", "adversarial_weight=0",
                                        f"init_from={tmp_path / 'f' / 'dcae.safetensors'}")))
    assert tuned.config.scaling_factor == 0.5  # a fine-tuned model keeps its own


@pytest.mark.parametrize("overrides, message", [
    (["data.resolution=36"], "divisible by the DC-AE's 8"),
    (["disc_start=10"], "GAN phase would never run"),
])
def test_invalid_settings_fail_before_training(synthetic, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train_dcae(config(synthetic, tmp_path / "d", *overrides))
