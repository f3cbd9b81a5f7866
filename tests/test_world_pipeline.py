"""The Crafter world-model pipeline: episodes on disk -> per-frame tokens -> training -> TECO-style evaluation."""
import json
import shutil

import numpy as np
import pytest
import torch

from nbp.checkpoint import save_model
from nbp.config import build_config, from_preset
from nbp.data.episodes import list_episodes, load_episode, make_crafter_dataset, record_crafter
from nbp.data.extract import TokenizeEpisodesConfig, encode_frames, tokenize_episodes
from nbp.data.tokens import EpisodeTokens
from nbp.data.video import frames_to_video
from nbp.download import load_magvit2
from nbp.eval.world import WorldEvalConfig, evaluate_world, frame_psnr
from nbp.generation.sampling import SamplingConfig
from nbp.models.tokenizer import TokenizerConfig, VideoTokenizer
from nbp.training.lm import LMTrainConfig, train_lm
from nbp.training.loggers import read_metrics


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Crafter episodes at 32 px, an untrained per-frame tokenizer (4x4 tokens) and their tokens."""
    folder = tmp_path_factory.mktemp("world")
    make_crafter_dataset(folder / "crafter", {"train": 2, "test": 1}, frames=40, size=32, seed=3)
    torch.manual_seed(0)
    tokenizer = VideoTokenizer(from_preset(TokenizerConfig, "tiny-frames", resolution=32, fsq_levels=[8, 5, 5, 5]))
    save_model(tokenizer, folder / "tok.safetensors")
    for split in ("train", "test"):
        tokenize_episodes(TokenizeEpisodesConfig(tokenizer=str(folder / "tok.safetensors"),
                                                 episodes=str(folder / "crafter" / split), out=str(folder / split),
                                                 resolution=32))
    return folder


def test_crafter_episodes_are_real_files_and_deterministic(world):
    paths = list_episodes(world / "crafter" / "train")
    assert [p.name for p in paths] == ["ep_00000.mp4", "ep_00001.mp4"]
    frames, actions = load_episode(paths[0])
    again, again_actions = record_crafter(3 * 100_003, 40, 32)  # the first episode's world seed
    assert np.array_equal(frames, again) and np.array_equal(actions, again_actions)  # lossless mp4, same seed
    assert actions[0] == 0 and set(actions[1:]) <= set(range(17)) and np.isin(actions[1:], (1, 2, 3, 4)).mean() > 0.5
    assert (world / "crafter" / "trainlist.txt").read_text().split() == ["train/ep_00000.mp4", "train/ep_00001.mp4"]


def test_crafter_tiles_align_with_8x_tokens_and_settings_are_kept(world):
    frames, actions = record_crafter(11, 30, 64)  # view=8: a tile is 8x8 pixels, one token of an 8x tokenizer
    world_view = frames[:, :48].astype(np.int16)  # 6 rows of tiles above the 2 inventory rows
    error = lambda a, b: np.abs(a - b).mean()
    scrolls = 0
    for t in range(1, len(frames)):
        now, before = world_view[t], world_view[t - 1]
        if actions[t] not in (1, 2, 3, 4) or error(now, before) < 8:
            continue  # not a move, or a blocked one
        by_a_tile = min(error(now[:, :-8], before[:, 8:]), error(now[:, 8:], before[:, :-8]),
                        error(now[:-8], before[8:]), error(now[8:], before[:-8]))
        assert by_a_tile < 0.5 * error(now, before)  # the view scrolled by exactly 8 pixels (the player's
        scrolls += 1                                   # sprite and the daylight explain the rest)
    assert scrolls >= 5
    assert json.loads((world / "crafter" / "crafter.json").read_text())["view"] == 8
    with pytest.raises(ValueError, match="recorded with"):
        make_crafter_dataset(world / "crafter", {"train": 2, "test": 1}, frames=40, size=32, seed=3, view=9)


def test_far_npz_episodes_load_like_video_ones(world, tmp_path):
    frames, actions = load_episode(world / "crafter" / "train" / "ep_00000.mp4")
    np.savez(tmp_path / "episode.npz", video=frames, actions=actions[:, None])  # DMLab/Minecraft layout
    video, acts = load_episode(tmp_path / "episode.npz")
    assert np.array_equal(video, frames) and np.array_equal(acts, actions)
    np.savez(tmp_path / "bad.npz", video=frames, actions=actions[:-1])
    with pytest.raises(ValueError, match="frames but"):
        load_episode(tmp_path / "bad.npz")


def test_minecraft_episodes_are_a_video_and_an_actions_npz(world, tmp_path):
    source = world / "crafter" / "train" / "ep_00000.mp4"
    frames, actions = load_episode(source)
    folder = tmp_path / "minecraft"
    folder.mkdir()
    shutil.copy(source, folder / "run_1.mp4")
    np.savez(folder / "run_1.npz", actions=actions)  # Minecraft's (TECO's) layout: actions beside the mp4
    np.savez(folder / "dmlab_2.npz", video=frames, actions=actions)
    assert [p.name for p in list_episodes(folder)] == ["dmlab_2.npz", "run_1.mp4"]
    video, acts = load_episode(folder / "run_1.mp4")
    assert np.array_equal(video, frames) and np.array_equal(acts, actions)


def test_episode_tokens_are_the_tokenizer_codes_of_each_frame(world):
    data = EpisodeTokens(world / "train", frames=6)
    tokenizer = load_magvit2(world / "tok.safetensors", resolution=32)
    frames, actions = load_episode(world / "crafter" / "train" / "ep_00001.mp4")
    codes = encode_frames(tokenizer, frames, chunk=7)
    start = data.meta["episodes"][1]["start"]
    item = data[data.starts.index(start + 3)]
    assert torch.equal(item["tokens"].view(6, 16), torch.from_numpy(codes[3:9].astype(np.int64)))
    assert torch.equal(item["actions"], torch.from_numpy(actions[3:9]))
    windows = sum((e["frames"] - 6) // 3 + 1 for e in data.meta["episodes"])
    assert data.latent_shape == (6, 4, 4) and len(data) == windows


def test_world_model_trains_and_evaluates(world, tmp_path):
    cfg = build_config(LMTrainConfig, overrides=[
        f"run.run_dir={tmp_path / 'lm'}", f"train={world / 'train'}", "model.preset=world-tiny", "run.steps=6",
        "batch_size=4", "run.log_every=1", "warmup_steps=1", "lr=3e-3", "model.latent_shape=[6,4,4]",
        "model.block=16", "model.short_frames=3", "model.long_frames=2", "model.video_vocab=1000",
        "model.n_layer=2", "model.n_embd=64", "run.sample_every=6", f"decoder={world / 'tok.safetensors'}"])
    lm = train_lm(cfg)
    assert (tmp_path / "lm" / "samples" / "step_00000006.png").is_file()  # the window and its prediction
    losses = [float(r["train/loss"]) for r in read_metrics(tmp_path / "lm") if r.get("train/loss")]
    assert len(losses) == 6 and losses[-1] < losses[0]
    out = tmp_path / "eval"
    results = evaluate_world(WorldEvalConfig(lm=str(lm), tokenizer=str(world / "tok.safetensors"),
                                             episodes=str(world / "crafter" / "test"), out=str(out), resolution=32,
                                             context=4, horizon=10, sampling=SamplingConfig(top_k=5)))
    assert results["clips"] == 1 and len(results["psnr_curve"]["true_actions"]) == 10
    frames, _ = load_episode(world / "crafter" / "test" / "ep_00000.mp4")
    truth = frames_to_video(frames[:14])
    copy_last = frame_psnr(truth[:, :, 3:4].expand(-1, -1, 10, -1, -1), truth[:, :, 4:])[0]
    tokenizer = load_magvit2(world / "tok.safetensors", resolution=32)
    with torch.no_grad():
        recon = tokenizer(truth[:, :, 4:]).clamp(0, 1)
    saved = json.loads((out / "metrics.json").read_text())["psnr_curve"]
    np.testing.assert_allclose(saved["copy_last"], copy_last.numpy(), atol=1e-3)
    np.testing.assert_allclose(saved["tokenizer"], frame_psnr(recon, truth[:, :, 4:])[0].numpy(), atol=1e-3)
    assert (out / "psnr_over_horizon.png").stat().st_size > 0 and (out / "truth_true_shuffled.mp4").stat().st_size > 0
