"""FAR sampling over a grid of shapes: latent sizes, windows, context patches, context lengths (none, inside and past
the window), batch sizes, guidance on and off. The cached, uncached and static (fixed-shape) paths must agree, the
latent size comes from the inputs (never from a default), and a rollout's last frame, denoised in one Euler step,
equals the teacher-forced forward over the same frames."""
import itertools

import pytest
import torch

from nbp.config import InputError, from_preset
from nbp.generation.far import FARSamplingConfig, LatentStepper, flow_schedule, generate_latents
from nbp.models.far import FAR, FARConfig

CHANNELS = 4


def tiny_far(long: bool, window: int, context_patch: int, condition: str) -> FAR:
    torch.manual_seed(0)
    fields = dict(in_channels=CHANNELS, head_dim=16, rope_axes=[4, 6, 6], short_window=window,
                  context_patch_size=context_patch)
    if not long:
        fields |= dict(condition=condition, num_classes=0 if condition == "none" else 5)
    model = FAR(from_preset(FARConfig, "far-tiny-long" if long else "far-tiny", **fields)).eval()
    with torch.no_grad():  # the official init zeroes the output layers: give every weight a value
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    return model


GRID = [  # (long, window, context patch, latent h, w, given frames, new frames, batch, guidance)
    (False, 16, 4, 6, 6, 0, 3, 2, 1.0),
    (False, 16, 4, 4, 6, 2, 2, 1, 1.0),
    (False, 16, 2, 2, 4, 1, 2, 2, 2.0),  # label guidance
    (True, 4, 2, 6, 6, 0, 6, 1, 1.5),  # from nothing, past the window
    (True, 4, 2, 4, 4, 2, 2, 2, 1.0),  # inside the window
    (True, 3, 2, 6, 4, 5, 3, 2, 1.5),  # given past the window
    (True, 4, 4, 8, 8, 1, 5, 1, 1.0),
    (True, 2, 2, 2, 2, 3, 3, 3, 2.0),
]


def rollout(model: FAR, given: int, frames: int, batch: int, size: tuple[int, int], guidance: float,
            **sampling) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    context = torch.randn(batch, given, CHANNELS, *size, generator=generator)
    noise = torch.randn(batch, frames, CHANNELS, *size, generator=generator)
    condition, classes = model.config.condition, model.config.num_classes
    labels = torch.randint(0, classes, (batch,), generator=generator) if condition == "label" else None
    actions = torch.randint(0, classes, (batch, given + frames), generator=generator) if condition == "action" else None
    return generate_latents(model, frames, context if given else None, labels=labels, actions=actions, noise=noise,
                            sampling=FARSamplingConfig(steps=2, cfg_scale=guidance, **sampling))


@pytest.mark.parametrize("long,window,patch,h,w,given,frames,batch,guidance", GRID)
def test_cache_on_equals_cache_off_equals_static_decoding(long, window, patch, h, w, given, frames, batch, guidance):
    model = tiny_far(long, window, patch, "label" if guidance != 1.0 else "none")
    paths = [rollout(model, given, frames, batch, (h, w), guidance, **path) for path in (
        dict(use_cache=True, decoding="dynamic"), dict(use_cache=False), dict(use_cache=True, decoding="static"))]
    assert paths[0].shape == (batch, given + frames, CHANNELS, h, w)
    for other in paths[1:]:
        torch.testing.assert_close(other, paths[0], atol=1e-4, rtol=0)  # as the goldens' paths


@pytest.mark.parametrize("long,size", itertools.product([False, True], [(6, 6), (4, 8)]))
def test_one_step_rollout_frame_equals_the_teacher_forced_forward(long, size):
    """With one Euler step a new frame is noise - v(noise at t=1000 | context): the forward over [context, noise]."""
    model = tiny_far(long, 4, 2, "none")
    generator = torch.Generator().manual_seed(2)
    context, noise = torch.randn(1, 5, CHANNELS, *size, generator=generator), torch.randn(1, 1, CHANNELS, *size)
    actions = torch.randint(0, 4, (1, 6), generator=generator) if long else None
    out = generate_latents(model, 1, context, actions=actions, noise=noise, sampling=FARSamplingConfig(steps=1))
    timestep, _ = flow_schedule(1)
    timesteps = torch.cat([torch.full((1, 5), -1.0), timestep.view(1, 1)], dim=1)
    with torch.no_grad():
        velocity = model(torch.cat([context, noise], 1), timesteps, actions=actions)[:, -1]
    torch.testing.assert_close(out[:, -1], noise[:, 0] - velocity, atol=1e-4, rtol=0)


def test_from_nothing_the_latent_size_comes_from_the_inputs():
    model = tiny_far(False, 16, 4, "none")
    noise = torch.randn(2, 2, CHANNELS, 6, 4)
    assert generate_latents(model, 2, noise=noise, sampling=FARSamplingConfig(steps=1)).shape == (2, 2, CHANNELS, 6, 4)
    sized = generate_latents(model, 1, batch=1, latent_size=(2, 6), sampling=FARSamplingConfig(steps=1))
    assert sized.shape == (1, 1, CHANNELS, 2, 6)
    with pytest.raises(InputError, match="needs the latent size"):
        generate_latents(model, 1, batch=1, sampling=FARSamplingConfig(steps=1))
    with pytest.raises(InputError, match="of the context's latent size"):
        generate_latents(model, 1, torch.zeros(2, 1, CHANNELS, 6, 6), noise=noise[:, :1],
                         sampling=FARSamplingConfig(steps=1))


@pytest.mark.parametrize("long_frames,given,guidance", [(0, 0, 1.0), (1, 2, 1.5), (2, 5, 1.0)])
def test_a_bounded_long_term_context_agrees_on_every_path(long_frames, given, guidance):
    """FAR_Long seeing only its newest `long_frames` long-term frames: the cache (its long-term level recomputed as it
    slides), the whole sequence again and the fixed-shape step agree; a bound no rollout reaches changes nothing."""
    model = tiny_far(True, 3, 2, "none")
    paths = [rollout(model, given, 7, 2, (4, 4), guidance, long_frames=long_frames, **path) for path in (
        dict(use_cache=True, decoding="dynamic"), dict(use_cache=False), dict(use_cache=True, decoding="static"))]
    for other in paths[1:]:
        torch.testing.assert_close(other, paths[0], atol=1e-4, rtol=0)
    unbounded, unreached = (rollout(model, given, 7, 2, (4, 4), guidance, long_frames=n) for n in (None, 100))
    assert torch.equal(unreached, unbounded) and not torch.allclose(paths[0][:, -1], unbounded[:, -1])


def test_an_open_ended_stepper_sizes_its_fixed_shapes_for_the_bounded_context():
    """With no frame count (a played session), the fixed-shape step holds the most a bounded context reaches, and
    refuses a context that never stops growing."""
    model = tiny_far(True, 3, 2, "none")
    generator = torch.Generator().manual_seed(3)
    context, noise = torch.randn(1, 2, CHANNELS, 4, 4, generator=generator), torch.randn(1, 9, CHANNELS, 4, 4, generator=generator)
    actions = torch.randint(0, 4, (1, 11), generator=generator)
    runs = []
    for decoding in ("static", "dynamic"):
        stepper = LatentStepper(model, context, FARSamplingConfig(steps=2, decoding=decoding, long_frames=2),
                                actions=actions[:, :2])
        runs.append(torch.stack([stepper.step(noise[:, k], actions[:, 2 + k]) for k in range(9)], dim=1))
    torch.testing.assert_close(runs[0], runs[1], atol=1e-4, rtol=0)
    with pytest.raises(InputError, match="open-ended run needs FAR_Long with long_frames set"):
        LatentStepper(model, context, FARSamplingConfig(decoding="static"), actions=actions[:, :2])
