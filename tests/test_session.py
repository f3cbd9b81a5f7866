"""WorldSession, both families: a played session makes the offline pipeline's frames (token world models: codes;
FAR_Long: latents from the same noise), an action changes the next frame and no earlier one, a step's input stays
flat once the window slides, and the saved session is an episode the evaluation reads."""
import numpy as np
import pytest
import torch
from test_world_pipeline import world  # noqa: F401 (fixture)

from nbp.checkpoint import save_model
from nbp.config import InputError, from_preset
from nbp.data.episodes import load_episode
from nbp.generation.far import FARSamplingConfig, generate_latents
from nbp.models.dcae import DCAE, DCAEConfig
from nbp.models.far import FAR, FARConfig
from nbp.models.world import WorldConfig, WorldTransformer
from nbp.pipelines import FARPipeline, WorldPipeline, WorldSession


@pytest.fixture(scope="module")
def world_files(world):  # noqa: F811
    torch.manual_seed(1)
    model = WorldTransformer(from_preset(WorldConfig, "world-tiny", latent_shape=[6, 4, 4], video_vocab=1000, block=16,
                                         n_layer=2, n_embd=64, n_head=4, short_frames=3, long_frames=2))
    save_model(model, world / "world.safetensors")
    return world / "world.safetensors", world / "tok.safetensors", world / "crafter" / "test" / "ep_00000.mp4"


@pytest.mark.parametrize("sampling", [dict(greedy=True), dict(top_k=8, cfg_scale=1.5)])
def test_a_session_makes_the_offline_pipelines_frames_inside_and_past_the_window(world_files, sampling):
    model, tokenizer, episode = world_files
    frames, actions = load_episode(episode)
    context, steps = 3, 9  # the window (3 frames in full, 2 compressed) slides after the first steps
    session = WorldSession.from_files(model, tokenizer, seed=4, **sampling)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    session.reset(video[:context], actions[:context])
    played = torch.stack([session.step(int(a)) for a in actions[context:context + steps]], dim=1)  # (3, N, H, W)

    pipeline = WorldPipeline.from_files(str(tokenizer), str(model))
    offline = pipeline(steps, video[:context].transpose(0, 1)[None],
                       actions=torch.from_numpy(actions[:context + steps])[None],
                       generator=torch.Generator().manual_seed(4), **sampling)
    assert torch.equal(torch.stack(session.codes), offline.codes[0, context:])
    torch.testing.assert_close(played, offline.videos[0, :, context:], atol=1e-5, rtol=0)


def test_an_action_changes_the_next_frame_and_no_earlier_one(world_files):
    model, tokenizer, episode = world_files
    frames, actions = load_episode(episode)
    runs = []
    for last in (1, 3):
        session = WorldSession.from_files(model, tokenizer, greedy=True)
        session.reset(episode)
        runs.append([session.step(a) for a in (2, 4, last)])
    assert all(torch.equal(a, b) for a, b in zip(runs[0][:2], runs[1][:2]))
    assert not torch.equal(runs[0][2], runs[1][2])


def test_the_input_of_a_step_is_flat_once_the_window_slides_and_the_session_saves_an_episode(world_files, tmp_path):
    model, tokenizer, episode = world_files
    session = WorldSession.from_files(model, tokenizer, greedy=True)
    with pytest.raises(InputError, match="call reset"):
        session.step(1)
    session.reset(episode)
    fed = []
    for step in range(40):
        session.step(step % 5)
        fed.append(session.stats["tokens_fed"])
        assert session.stepper.frames.shape[1] <= 3 + 2 + 1  # only the frames the window reaches are kept
    assert len(set(fed[-30:])) == 1  # past the window, every step feeds the same window again
    path = session.save(tmp_path / "played")
    video, actions = load_episode(path)
    assert video.shape == (41, 32, 32, 3) and actions[1:].tolist() == [s % 5 for s in range(40)]
    np.testing.assert_allclose(video[-1] / 255, session.frames[-1] / 255, atol=1 / 255)
    stats = session.stats
    assert stats["frames"] == 40 and stats["seconds"] >= stats["model_seconds"] > 0


@pytest.fixture(scope="module")
def far_files(tmp_path_factory):
    """An action-conditioned FAR_Long (a 3-frame window) with every weight drawn, and a tiny DC-AE (64 px -> 8x8)."""
    folder = tmp_path_factory.mktemp("far_session")
    torch.manual_seed(0)
    model = FAR(from_preset(FARConfig, "far-tiny-long", short_window=3, num_classes=5))
    with torch.no_grad():  # FAR's init zeroes the output layers
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    save_model(model, folder / "far.safetensors")
    save_model(DCAE(from_preset(DCAEConfig, "dcae-tiny")), folder / "dcae.safetensors")
    video = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    return folder / "far.safetensors", folder / "dcae.safetensors", video


@pytest.mark.parametrize("cfg_scale", [1.0, 1.5])
def test_a_far_session_makes_the_offline_latents_inside_and_past_the_window(far_files, cfg_scale):
    model, dcae, video = far_files
    steps, long_frames = 9, 2  # past the window of 3, and past the 2 long-term frames kept
    actions = torch.randint(0, 5, (1, len(video) + steps), generator=torch.Generator().manual_seed(2))
    noise = torch.randn(1, steps, 32, 8, 8, generator=torch.Generator().manual_seed(3))
    session = WorldSession.from_files(model, dcae, steps=2, cfg_scale=cfg_scale, long_frames=long_frames)
    session.reset(video, actions[0, :len(video)])
    played = torch.stack([session.step(int(actions[0, len(video) + k]), noise=noise[0, k]) for k in range(steps)], 1)

    pipeline = FARPipeline.from_files(str(dcae), str(model))
    sampling = FARSamplingConfig(steps=2, cfg_scale=cfg_scale, long_frames=long_frames)
    offline = pipeline(steps, video.transpose(0, 1)[None], actions=actions, noise=noise, sampling=sampling)
    assert torch.equal(torch.stack(session.latents), offline.latents[0, len(video):])
    torch.testing.assert_close(played, offline.videos[0, :, len(video):], atol=1e-5, rtol=0)
    unbounded = generate_latents(pipeline.far, steps, pipeline.encode(video.transpose(0, 1)[None]), actions=actions,
                                 noise=noise, steps=2, cfg_scale=cfg_scale)
    assert not torch.allclose(unbounded[0, -1], offline.latents[0, -1])  # the bound changed what the last frame saw


def test_a_far_action_changes_the_next_frame_and_no_earlier_one(far_files):
    model, dcae, video = far_files
    runs = []
    for last in (1, 3):
        session = WorldSession.from_files(model, dcae, steps=1, seed=5)
        session.reset(video, [0, 1, 2, 3])
        runs.append([session.step(a) for a in (2, 4, last)])
    assert all(torch.equal(a, b) for a, b in zip(runs[0][:2], runs[1][:2]))
    assert not torch.equal(runs[0][2], runs[1][2])


def test_a_far_sessions_cost_and_memory_are_flat_and_it_saves_an_episode(far_files, tmp_path):
    model, dcae, video = far_files
    session = WorldSession.from_files(model, dcae, steps=1, long_frames=4)
    session.reset(video)  # no actions: the null action for the context frames
    fed = []
    for step in range(24):
        session.step(step % 5)
        fed.append(session.stats["tokens_fed"])
        assert session.stepper.video.clean.shape[1] <= 4 + 3  # the kept long-term frames and the window
        assert session.stepper.cond.actions.shape[1] <= 4 + 3 + 1
    # past the window and the bound: the 4 long-term frames (2x2 tokens each), the 2 clean window frames (8x8), the
    # noisy frame's step
    assert fed[-12:] == [4 * 4 + 2 * 64 + 64] * 12
    with pytest.raises(InputError, match=r"actions must lie in \[0, 4\]"):
        session.step(9)
    with pytest.raises(InputError, match="noise must be one frame's latents"):
        session.step(1, noise=torch.zeros(32, 4, 4))
    path = session.save(tmp_path / "played")
    frames, actions = load_episode(path)
    assert frames.shape == (25, 64, 64, 3) and actions[1:].tolist() == [s % 5 for s in range(24)]
    replay = WorldSession.from_files(model, dcae, steps=1)
    np.testing.assert_allclose(replay.reset(path).numpy(), session.frames[-1].transpose(2, 0, 1) / 255, atol=1 / 255)


@pytest.mark.parametrize("family", ["tokens", "far"])
def test_undo_restores_the_state_so_replaying_makes_the_same_frames_and_a_new_action_branches(family, world_files,
                                                                                               far_files):
    if family == "tokens":
        model, autoencoder, start = world_files[0], world_files[1], world_files[2]
        session = WorldSession.from_files(model, autoencoder, top_k=8, seed=3, undo_steps=2)
    else:
        model, autoencoder, start = far_files
        session = WorldSession.from_files(model, autoencoder, steps=1, seed=3, undo_steps=2, long_frames=1)
    session.reset(start)
    played = [session.step(a) for a in (1, 2, 3, 4, 1)]  # past the FAR window (3) and its long-term bound
    session.undo()
    last = session.undo()  # two steps back: the third step's frame is the last again
    np.testing.assert_allclose(last.numpy(), played[2].numpy(), atol=0.5 / 255)
    with pytest.raises(InputError, match="nothing to undo"):
        session.undo()
    assert len(session.frames) == 4 and session.actions[-1] == 3 and session.stats["frames"] == 3
    replayed = [session.step(a) for a in (4, 1)]
    assert all(torch.equal(a, b) for a, b in zip(replayed, played[3:]))  # the same draws as before the undo
    session.undo()
    assert not torch.equal(session.step(2), played[4])  # a branch
