"""FAR training: the system's loss equals the official one on the official draws, latents extracted once and
resumably, a tiny run whose export loads, and a resumed run equal to an uninterrupted one."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from nbp.checkpoint import save_model
from nbp.cli import main
from nbp.config import ConfigError, InputError, from_dict, from_preset
from nbp.data.latents import ExtractLatentsConfig, LatentDataset, extract_latents, write_item
from nbp.download import load_dcae, load_far
from nbp.eval.world import WorldEvalConfig, evaluate_world, frame_psnr, shuffled_in_time
from nbp.generation.far import FARSamplingConfig
from nbp.models.dcae import DCAE, DCAEConfig
from nbp.pipelines.far import FARPipeline
from nbp.training import far as far_training
from nbp.training.far import Draws, FARSystem, FARTrainConfig, clip_window

from conftest import det_state_dict, golden_dir


@pytest.fixture(scope="module")
def golden_far():
    spec = json.loads((golden_dir() / "far_small_spec.json").read_text())
    return spec, {k: torch.from_numpy(v) for k, v in np.load(golden_dir() / "far_small.npz").items()}


def test_the_training_step_equals_the_official_loss_on_its_draws(golden_far, monkeypatch):
    spec, g = golden_far
    cfg = from_dict(FARTrainConfig, {"model": {"preset": "far-tiny", "condition": "label", "num_classes": 5},
                                     "train": "unused"})
    system = FARSystem(cfg)
    system.model.load_state_dict(det_state_dict(spec["far"]["label_spec"], spec["far"]["seed"]))
    recorded = Draws(g["loss_u"].view(2, 6), g["loss_noise"], g["loss_ctx_uniform"] < 0.1, g["loss_label_uniform"] < 0.1)
    monkeypatch.setattr(far_training, "draw", lambda *args: recorded)
    batch = {"latents": g["loss_latent"] * 0.2889, "label": g["loss_label"]}
    with torch.no_grad():
        loss = system.loss(batch, (torch.Generator(), []), drop=True)
    torch.testing.assert_close(loss, g["loss_value"], atol=0, rtol=1e-6)


def test_the_long_clip_sampler_covers_every_length_and_start():
    generator = torch.Generator().manual_seed(0)
    seen = {clip_window(12, 4, generator) for _ in range(2000)}
    assert seen == {(start, length) for length in range(4, 12) for start in range(12 - length + 1)}


def test_noise_levels_move_with_the_logit_mean_and_keep_the_official_draws_by_default():
    cfg = from_dict(FARTrainConfig, {"model": {"preset": "far-tiny"}, "train": "unused"})
    latents = torch.zeros(2, 6, 32, 8, 8)
    generators = lambda: [torch.Generator().manual_seed(seed) for seed in (3, 4)]  # noqa: E731
    official = far_training.draw(cfg, latents, False, generators())
    normals = torch.stack([torch.randn(6, generator=g) for g in generators()])
    assert torch.equal(official.u, torch.sigmoid(normals))  # FAR's u = sigmoid(N(0, 1))
    cfg.logit_mean, cfg.logit_std = -1.0, 0.5
    moved = far_training.draw(cfg, latents, False, generators())
    torch.testing.assert_close(moved.u, torch.sigmoid(normals * 0.5 - 1), atol=0, rtol=0)
    assert torch.equal(moved.noise, official.noise) and torch.equal(moved.clean, official.clean)
    cfg.logit_std = 0
    with pytest.raises(ConfigError, match="logit_std"):
        cfg.validate()


@pytest.fixture(scope="module")
def latent_episodes(golden_far, tmp_path_factory):
    """Episodes as FAR's DMLab files (.npz: video, actions), a DC-AE file, and their latents."""
    spec, _ = golden_far
    folder = tmp_path_factory.mktemp("far_train")
    rng = np.random.default_rng(0)
    for i in range(4):  # divisible by 2 ranks, so that both split the same stream
        video = rng.integers(0, 256, (10, 64, 64, 3), dtype=np.uint8)
        np.savez(folder / f"ep_{i}.npz", video=video, actions=rng.integers(0, 4, 10))
    dcae = DCAE(from_preset(DCAEConfig, "dcae-tiny"))
    dcae.load_state_dict(det_state_dict(spec["dcae"]["spec"], spec["dcae"]["seed"]))
    save_model(dcae, folder / "dcae.safetensors")
    cfg = ExtractLatentsConfig(dcae=str(folder / "dcae.safetensors"), out=str(folder / "latents"),
                               episodes=str(folder))
    counts = extract_latents(cfg)
    assert (counts["written"], counts["kept"]) == (4, 0) and 0 < counts["latent_std"] < 10  # the std is logged
    assert extract_latents(cfg) == {"written": 0, "kept": 4}  # a rerun keeps what is there
    return folder


def test_latents_are_the_dcae_encoding_of_every_frame(latent_episodes):
    data = LatentDataset(latent_episodes / "latents", frames=10)
    video = np.load(latent_episodes / "ep_1.npz")["video"]
    with torch.no_grad():
        expected = load_dcae(latent_episodes / "dcae.safetensors").encode_video(
            torch.from_numpy(video).permute(0, 3, 1, 2)[None].float() / 255)[0]
    item = data[1]
    torch.testing.assert_close(item["latents"], expected, atol=1e-5, rtol=0)
    assert item["actions"].tolist() == np.load(latent_episodes / "ep_1.npz")["actions"].tolist()
    window = LatentDataset(latent_episodes / "latents", frames=6)[(1, 5)]
    start = next(s for s in range(5) if torch.equal(window["latents"], item["latents"][s:s + 6]))
    assert window["actions"].tolist() == item["actions"][start:start + 6].tolist()


def test_items_too_short_for_a_clip_are_skipped_with_a_count(latent_episodes, tmp_path, caplog):
    shutil.copytree(latent_episodes / "latents", tmp_path / "latents")
    with np.load(tmp_path / "latents" / "000002.npz") as item:
        write_item(tmp_path / "latents", 2, item["latents"][:7], item["actions"][:7], -1, "short")
    data = LatentDataset(tmp_path / "latents", frames=8)
    assert (len(data), data.skipped) == (3, ["000002.npz"])
    assert "1 of 4 items have fewer than 8 frames and are skipped" in caplog.text
    with pytest.raises(InputError, match="holds no latents of 11 frames or more"):
        LatentDataset(tmp_path / "latents", frames=11)


def far_run(folder, run_dir, steps, **extra):
    return ["train-far", f"train={folder / 'latents'}", f"run.run_dir={run_dir}", f"run.steps={steps}",
            "run.checkpoint_every=3", "model.preset=far-tiny-long", "model.condition=action", "model.num_classes=4",
            "clip_frames=8", "batch_size=2", "lr=1e-3", "ema_decay=0.9", *[f"{k}={v}" for k, v in extra.items()]]


def test_a_resumed_run_equals_an_uninterrupted_one_and_its_export_loads(latent_episodes, tmp_path):
    assert main(far_run(latent_episodes, tmp_path / "straight", 6)) == 0
    assert main(far_run(latent_episodes, tmp_path / "resumed", 3)) == 0
    assert main(far_run(latent_episodes, tmp_path / "resumed", 6)) == 0  # resumes from batch 3
    straight, resumed = (load_far(tmp_path / name / "far.safetensors") for name in ("straight", "resumed"))
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    official = load_far(tmp_path / "straight" / "far_official.pth", short_window=4)
    assert official.config.long and official.config.condition == "action"
    for key, value in straight.state_dict().items():
        assert torch.equal(value, official.state_dict()[key])
    rows = (tmp_path / "straight" / "logs").rglob("metrics.csv")
    losses = [float(line.split(",")[2]) for path in rows for line in path.read_text().splitlines()[1:]
              if line.split(",")[2:3] != [""]]
    assert losses and all(np.isfinite(losses))


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_on_two_cpu_processes_gives_the_weights_of_one(latent_episodes, tmp_path, stage):
    """Every clip draws its noise from its place in the global stream, so 2 ranks x 2 clips = 1 process x 4. (FAR
    without the long context: a FAR_Long clip of W frames leaves the long-term projections without gradients,
    which torch's AdamW skips and DeepSpeed's steps with zeros.)"""
    common = [a for a in far_run(latent_episodes, tmp_path / "x", 3, grad_clip=0, ema_decay=0.5)[1:]
              if not a.startswith("model.preset=")] + ["model.preset=far-tiny"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    def run(run_dir, *extra):
        args = [a for a in common if not a.startswith(("run.run_dir=", "batch_size="))]
        done = subprocess.run([sys.executable, "-m", "nbp.cli", "train-far", *args, f"run.run_dir={run_dir}", *extra],
                              capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-3000:]

    run(tmp_path / "single", "batch_size=4")
    run(tmp_path / "zero", "batch_size=2", "run.devices=2", f"run.strategy=deepspeed_stage_{stage}")
    single, zero = (load_far(tmp_path / name / "far.safetensors").state_dict() for name in ("single", "zero"))
    for key, value in single.items():
        torch.testing.assert_close(zero[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_training_from_videos_equals_training_from_their_extracted_latents(latent_episodes, tmp_path):
    assert main(far_run(latent_episodes, tmp_path / "latents", 3)) == 0
    from_videos = far_run(latent_episodes, tmp_path / "videos", 3, dcae=latent_episodes / "dcae.safetensors")
    from_videos[1] = f"train={latent_episodes}"  # the episodes themselves
    assert main(from_videos) == 0
    a, b = (load_far(tmp_path / name / "far.safetensors") for name in ("latents", "videos"))
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, atol=2e-5, rtol=0, msg=key)  # encoding in chunks: ~1e-6


def test_world_eval_scores_a_far_model_on_the_clips_and_metrics_of_the_discrete_one(latent_episodes, tmp_path):
    assert main(far_run(latent_episodes, tmp_path / "far", 3)) == 0
    far, dcae = str(tmp_path / "far" / "far.safetensors"), str(latent_episodes / "dcae.safetensors")
    cfg = WorldEvalConfig(far=far, dcae=dcae, episodes=str(latent_episodes), out=str(tmp_path / "eval"),
                          context=4, horizon=6, far_sampling=FARSamplingConfig(steps=3), max_episodes=1, seed=3)
    results = evaluate_world(cfg)
    assert results["clips"] == 1 and len(results["psnr_curve"]["true_actions"]) == 6

    pipeline = FARPipeline.from_files(dcae, far)
    video = torch.from_numpy(np.load(latent_episodes / "ep_0.npz")["video"]).permute(3, 0, 1, 2)[None].float() / 255
    actions = torch.from_numpy(np.load(latent_episodes / "ep_0.npz")["actions"])[None]
    generator = torch.Generator().manual_seed(3)
    shuffled_in_time(actions, 4, generator)  # world-eval draws the shuffled actions first, then predicts
    predicted = pipeline(6, video[:, :, :4], steps=3, actions=actions, generator=generator)
    expected = frame_psnr(predicted.videos[:, :, 4:], video[:, :, 4:])[0]
    np.testing.assert_allclose(results["psnr_curve"]["true_actions"], expected.numpy(), atol=1e-3)
    ceiling = frame_psnr(pipeline.decode(pipeline.encode(video[:, :, 4:])), video[:, :, 4:])[0]
    np.testing.assert_allclose(results["psnr_curve"]["tokenizer"], ceiling.numpy(), atol=1e-3)
    with pytest.raises(InputError, match="not a mix"):
        evaluate_world(WorldEvalConfig(far=far, dcae=dcae, lm=far, episodes=str(latent_episodes)))


def test_extraction_reruns_keep_items_by_source_and_refuse_other_settings(latent_episodes, tmp_path):
    """Issue 32, item 1: an episode that sorts first gets a new item (none shifted, none twice); another DC-AE or
    resolution into the same folder is refused; nothing to extract is an error, not an empty dataset."""
    source = latent_episodes
    episodes = tmp_path / "episodes"
    episodes.mkdir()
    for i in range(3):
        (episodes / f"ep_{i}.npz").write_bytes((source / f"ep_{i}.npz").read_bytes())
    cfg = ExtractLatentsConfig(dcae=str(source / "dcae.safetensors"), out=str(tmp_path / "latents"),
                               episodes=str(episodes), resolution=64)
    first = extract_latents(cfg)
    assert (first["written"], first["kept"]) == (3, 0)
    (episodes / "a_first.npz").write_bytes((source / "ep_3.npz").read_bytes())
    counts = extract_latents(cfg)
    assert (counts["written"], counts["kept"]) == (1, 3)
    sources = sorted(str(np.load(p)["source"]) for p in (tmp_path / "latents").glob("[0-9]*.npz"))
    assert sources == sorted(str(p) for p in episodes.glob("*.npz"))  # each episode once
    with pytest.raises(InputError, match="made with other settings .*resolution: 64 here, 32 now"):
        extract_latents(ExtractLatentsConfig(**{**cfg.__dict__, "resolution": 32}))
    other = DCAE(from_preset(DCAEConfig, "dcae-tiny"))
    save_model(other, tmp_path / "other_dcae.safetensors")
    with pytest.raises(InputError, match="dcae_sha256"):
        extract_latents(ExtractLatentsConfig(**{**cfg.__dict__, "dcae": str(tmp_path / "other_dcae.safetensors")}))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="nothing to extract"):
        extract_latents(ExtractLatentsConfig(**{**cfg.__dict__, "episodes": str(tmp_path / "empty"),
                                                "out": str(tmp_path / "none")}))
    assert not (tmp_path / "none" / "meta.json").exists()


def damaged_copy(latent_episodes, tmp_path, damage):
    """The latent dataset with item 2 rewritten by `damage(latents, actions) -> (latents, actions)`."""
    folder = tmp_path / "latents"
    shutil.copytree(latent_episodes / "latents", folder)
    with np.load(folder / "000002.npz") as item:
        latents, actions = damage(item["latents"], item["actions"])
    path = folder / "000002.npz"
    np.savez(path, latents=latents, label=np.int64(-1), source=np.array("x"),
             **({} if actions is None else {"actions": actions}))
    return folder


@pytest.mark.parametrize("damage, message", [
    (lambda z, a: (z, None), "holds no actions, which this action-conditioned model needs"),
    (lambda z, a: (z, a + 10), r"actions 10\.\.13 outside the model's \[0, 3\]"),
    (lambda z, a: (z.astype(np.int32), a), "latents int32"),
    (lambda z, a: (np.zeros((len(z), 32, 4, 4), np.float32), a), r"\(10, 32, 4, 4\), but the folder.s meta.json"),
    (lambda z, a: (np.where(np.arange(z.size).reshape(z.shape) == 5, np.nan, z), a), "NaN or infinite"),
    (lambda z, a: (z, a[:5]), "for 10 frames: need one integer id per frame"),
])
def test_train_far_checks_its_data_against_the_model_before_training(latent_episodes, tmp_path, capsys, damage,
                                                                    message):
    """Issue 32, item 3: one line naming the item, before the first step (not mid-run, not trained on nulls)."""
    damaged_copy(latent_episodes, tmp_path, damage)
    argv = far_run(tmp_path, tmp_path / "run", 2)  # train= the damaged copy (far_run's folder / "latents")
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "000002.npz" in error and re.search(message, error) and "Traceback" not in error
    assert not (tmp_path / "run" / "checkpoints").exists()
