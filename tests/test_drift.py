"""`nbp world-drift`: the game-frame statistics tell game frames from noise and blur, and a long played session is
scored against the replayed episode where it has frames (the same PSNR as computed from the session by hand), with
the movement policy's actions past its end."""
import json

import numpy as np
import pytest
import torch
from test_session import far_files, world_files  # noqa: F401 (fixtures)
from test_world_pipeline import world  # noqa: F401 (fixture)

from nbp.cli import main
from nbp.data.episodes import list_episodes, load_episode
from nbp.eval.drift import GameFrames, replayed_actions
from nbp.metrics.video import per_frame_psnr
from nbp.pipelines import WorldSession


def test_game_frame_statistics_tell_game_frames_from_noise_and_blur(world):  # noqa: F811
    train = list_episodes(world / "crafter" / "train")
    game = GameFrames.of(train[:1], 32, seed=0)
    real = torch.from_numpy(load_episode(train[1], 32)[0])
    noise = torch.randint(0, 256, real.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    blurred = torch.nn.functional.avg_pool2d(real.permute(0, 3, 1, 2).float(), 5, 1, 2).round().byte().permute(0, 2, 3, 1)
    assert game.palette_distance(real).mean() < 0.2 < 0.5 < game.palette_distance(noise).mean()
    assert game.sharpness(blurred).mean() < 0.6 < 0.8 < game.sharpness(real).mean() < 1.25 < 2 < game.sharpness(noise).mean()


def test_replayed_actions_follow_the_episode_then_the_movement_policy():
    actions = replayed_actions(np.array([0, 5, 6, 7]), 1, 10, seed=0)
    assert actions[:3] == [5, 6, 7] and len(actions) == 10 and set(actions) <= set(range(17))
    assert actions == replayed_actions(np.array([0, 5, 6, 7]), 1, 10, seed=0)


def test_world_drift_scores_a_long_session_against_the_replayed_episode(world_files, world, tmp_path, capsys):  # noqa: F811
    model, tokenizer, episode = world_files
    out = tmp_path / "drift"
    assert main(["world-drift", f"model={model}", f"autoencoder={tokenizer}", f"episodes={episode.parent}",
                 f"reference={world / 'crafter' / 'train'}", f"out={out}", "context=4", "steps=60",
                 "sampling.greedy=true", "device=cpu"]) == 0
    assert "sessions of 60 steps" in capsys.readouterr().out
    results = json.loads((out / "metrics.json").read_text())
    frames, actions = load_episode(episode)  # 40 frames: 36 steps have a true frame, 24 do not
    psnr = results["curves"]["psnr"]
    assert len(psnr) == 60 and all(x is not None for x in psnr[:36]) and all(x is None for x in psnr[36:])
    assert results["spans"]["psnr"]["101-1000"] is None and all(x is not None for x in results["curves"]["palette"])
    session = WorldSession.from_files(model, tokenizer, greedy=True)
    session.reset(frames[:4], actions[:4])
    first = session.step(int(actions[4]))
    truth = torch.from_numpy(frames[4]).permute(2, 0, 1).float() / 255
    played = torch.from_numpy(session.frames[-1]).permute(2, 0, 1).float() / 255
    assert psnr[0] == pytest.approx(float(per_frame_psnr(played[:, None], truth[:, None])[0]), abs=1e-3)
    assert first.shape == (3, 32, 32)
    for picture in ("psnr_over_steps.png", "game_frame_over_steps.png", "strip.png"):
        assert (out / picture).stat().st_size > 1000


def test_world_drift_plays_far_sessions_too(far_files, world, tmp_path, capsys):  # noqa: F811
    from nbp.io.media import save_video, to_uint8

    model, dcae, video = far_files
    (tmp_path / "episodes").mkdir()
    save_video(tmp_path / "episodes" / "ep.mp4", to_uint8(video.transpose(0, 1)), fps=10, lossless=True)
    np.save(tmp_path / "episodes" / "ep.actions.npy", np.array([0, 1, 2, 3]))
    assert main(["world-drift", f"model={model}", f"autoencoder={dcae}", f"episodes={tmp_path / 'episodes'}",
                 f"reference={world / 'crafter' / 'train'}", f"out={tmp_path / 'drift'}", "context=2", "steps=6",
                 "device=cpu"]) == 0
    assert "far world model, 1 sessions of 6 steps after 2 frames" in capsys.readouterr().out
    curves = json.loads((tmp_path / "drift" / "metrics.json").read_text())["curves"]
    assert [x is None for x in curves["psnr"]] == [False, False, True, True, True, True]
