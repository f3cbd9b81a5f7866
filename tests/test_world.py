"""World models (nbp.models.world): actions, long-short context, sliding-window generation."""
import pytest
import torch

from nbp.config import ConfigError, from_preset
from nbp.generation import generate, predict_frames
from nbp.generation.frames import window_of
from nbp.models.transformer import TransformerConfig
from nbp.models.world import WorldConfig, WorldTransformer, frame_layout
from nbp.training.lm import training_window

HW = 16  # 4x4 tokens per frame


def world_model(**overrides) -> WorldTransformer:
    torch.manual_seed(0)
    cfg = dict(n_layer=2, n_head=4, n_embd=64, latent_shape=[8, 4, 4], block=HW, begin=False, video_vocab=50,
               num_actions=5, short_frames=4, long_frames=2)
    model = WorldTransformer(WorldConfig(**{**cfg, **overrides})).eval()
    with torch.no_grad():  # larger weights than the training init, so logits are far from ties
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def random_video(batch=2, frames=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(50, (batch, frames, HW), generator=g), torch.randint(5, (batch, frames), generator=g)


def test_without_actions_or_compression_equals_the_plain_block_forward():
    model = world_model(num_actions=0)
    codes, _ = random_video()
    plain = model(model.layout.inputs(codes.flatten(1), None))
    assert torch.allclose(model.frame_logits(codes), plain, atol=1e-5)


def test_an_action_changes_predictions_only_from_the_frame_it_produces():
    model = world_model()
    codes, actions = random_video()
    base = model.frame_logits(codes, actions).view(2, 7, HW, -1)  # predictions of frames 1..7
    for t in (2, 5):
        changed = actions.clone()
        changed[:, t] = (changed[:, t] + 1) % 5
        out = model.frame_logits(codes, changed).view(2, 7, HW, -1)
        assert torch.equal(out[:, :t - 1], base[:, :t - 1])  # frames 1 .. t-1
        assert (out[:, t - 1] - base[:, t - 1]).abs().max() > 1e-3  # frame t


def test_compressed_frames_are_pooled_patches_at_their_centres():
    model = world_model()
    groups, coords = frame_layout(model.config, 3, 4, 2)
    assert groups.tolist() == [3] * 4 + [4] * 4 + [5] * 16 + [6] * 16
    assert coords[:4].tolist() == [[4, 0.5, 0.5], [4, 0.5, 2.5], [4, 2.5, 0.5], [4, 2.5, 2.5]]
    codes, actions = random_video()
    x = model.embed_frames(codes[:, :4], actions[:, :4], 2)
    assert x.shape == (2, 2 * 4 + 2 * HW, 64)
    patch = model.tok_emb(codes[0, 0, [0, 1, 4, 5]] + model.config.video_offset) + model.action_emb(actions[0, 0])
    assert torch.allclose(x[0, 0], model.compress(patch.flatten()), atol=1e-6)


def test_cached_generation_equals_the_full_forward_while_the_window_fills():
    model = world_model(short_frames=0, long_frames=0)
    codes, actions = random_video(frames=6)
    out = predict_frames(model, codes[:, :2], 4, actions=actions, greedy=True)
    video = codes[:, :2]
    for t in range(2, 6):
        target_slot = torch.cat([video, video[:, -1:]], dim=1)  # the last frame is only a target
        logits = model.frame_logits(target_slot, actions[:, :t + 1])[:, -HW:, model.config.video_offset:]
        video = torch.cat([video, logits.argmax(-1)[:, None]], dim=1)
    assert torch.equal(out, video[:, 2:])


def test_sliding_window_matches_unwindowed_while_the_context_fits_then_uses_the_window():
    model = world_model()
    codes, actions = random_video(frames=12)
    actions = torch.randint(5, (2, 12), generator=torch.Generator().manual_seed(3))
    windowed = predict_frames(model, codes[:, :2], 10, actions=actions, greedy=True)
    unwindowed = predict_frames(model, codes[:, :2], 10, actions=actions, greedy=True, short_frames=0)
    fits = 4 + 1 - 2  # frames 2..4 are predicted from at most 4 frames
    assert torch.equal(windowed[:, :fits], unwindowed[:, :fits])
    video = torch.cat([codes[:, :2], windowed], dim=1)
    for t in (6, 9, 11):  # past the window: the last 4 frames in full, up to 2 compressed before them
        first, compressed = window_of(t, 4, 2)
        logits = model.frame_logits(video[:, first:t + 1], actions[:, first:t + 1], compressed)
        assert torch.equal(logits[:, -HW:, model.config.video_offset:].argmax(-1), video[:, t])
    assert not torch.equal(windowed, unwindowed)


def test_action_guidance_scale_one_is_unguided_and_null_actions_are_unconditional():
    model = world_model()
    codes, actions = random_video(frames=5)
    kwargs = dict(greedy=True)
    plain = predict_frames(model, codes[:, :2], 3, actions=actions, **kwargs)
    assert torch.equal(predict_frames(model, codes[:, :2], 3, actions=actions, cfg_scale=1.0, **kwargs), plain)
    guided = predict_frames(model, codes[:, :2], 3, actions=actions, cfg_scale=3.0, **kwargs)
    assert not torch.equal(guided, plain)
    unconditional = predict_frames(model, codes[:, :2], 3, actions=actions, cfg_scale=0.0, **kwargs)
    assert torch.equal(unconditional, predict_frames(model, codes[:, :2], 3, **kwargs))  # u + 0 (c - u) = null


def test_training_windows_cover_every_generation_window():
    g = torch.Generator().manual_seed(0)
    seen = {training_window(8, 4, 2, g) for _ in range(200)}
    assert seen == {(2, 0), (1, 1), (0, 2)}  # 4 full input frames after 0, 1 or 2 compressed ones
    assert {window_of(t, 4, 2)[1] for t in range(20)} <= {c for _, c in seen}


@pytest.mark.parametrize("overrides, message", [
    (dict(begin=True), "world model"), (dict(block=4), "frame blocks"),
    (dict(short_frames=6, long_frames=2), "must be below"), (dict(long_pool=3), "long_pool=3"),
])
def test_world_config_errors(overrides, message):
    cfg = dict(latent_shape=[8, 4, 4], block=HW, begin=False, num_actions=5, short_frames=4, long_frames=2)
    with pytest.raises(ConfigError, match=message):
        WorldConfig(**{**cfg, **overrides}).validate()


def test_bad_actions_are_refused():
    model = world_model()
    codes, actions = random_video(frames=4)
    with pytest.raises(ValueError, match="actions must lie in"):
        predict_frames(model, codes[:, :2], 2, actions=actions + 5)
    with pytest.raises(ValueError, match=r"actions must be \(2, 3\)"):
        model.frame_logits(codes, actions[:, :3])
    assert isinstance(from_preset(TransformerConfig, "world-tiny"), WorldConfig)


def test_token_generation_of_a_frame_model_without_actions_equals_frame_prediction():
    """A world model without actions or long context is a no-begin frame-block model: the token models' loop and
    the frame loop generate the same frames."""
    model = world_model(num_actions=0, short_frames=0, long_frames=0)
    codes, _ = random_video(frames=5)
    frames = predict_frames(model, codes[:, :2], 3, greedy=True)
    tokens = generate(model, 3 * HW, context=codes[:, :2].flatten(1), greedy=True)
    assert torch.equal(tokens, frames.flatten(1))
