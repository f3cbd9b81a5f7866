"""WorldSession (token world models): a played session makes the offline pipeline's frames, an action changes the
next frame and no earlier one, a step's input stays flat once the window slides, and the saved session is an
episode the evaluation reads."""
import numpy as np
import pytest
import torch
from test_world_pipeline import world  # noqa: F401 (fixture)

from nbp.checkpoint import save_model
from nbp.config import InputError, from_preset
from nbp.data.episodes import load_episode
from nbp.models.world import WorldConfig, WorldTransformer
from nbp.pipelines import WorldPipeline, WorldSession


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
    from nbp.models.far import FAR, FARConfig
    save_model(FAR(from_preset(FARConfig, "far-tiny")), tmp_path / "far.safetensors")
    with pytest.raises(InputError, match="is a FAR model: sessions play token world models so far"):
        WorldSession.from_files(tmp_path / "far.safetensors", tokenizer)
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
