"""The one `KVCache` both families use: positions per column, the dynamic and fixed-shape ways of writing it, and
growth; both families' decoders and FAR's context cache run on it."""
import pytest
import torch
from test_far_shapes import CHANNELS, tiny_far

from nbp.config import InputError, from_preset
from nbp.generation.far import FARSamplingConfig, LatentStepper, generate_latents
from nbp.models.far import FARConfig
from nbp.models.kv_cache import UNWRITTEN, KVCache, attention_shape
from nbp.models.transformer import TransformerConfig

FAR_TINY = from_preset(FARConfig, "far-tiny")


def keys(n: int, value: float) -> torch.Tensor:
    return torch.full((1, FAR_TINY.num_heads, n, FAR_TINY.head_dim), value)


def test_both_families_configs_give_the_attention_shape():
    assert attention_shape(FAR_TINY) == (2, 2, 64)
    assert attention_shape(from_preset(TransformerConfig, "tiny")) == (2, 4, 16)


@pytest.mark.parametrize("transposed", [False, True])
def test_a_dynamic_step_reads_the_filled_prefix_and_only_a_commit_keeps_it(transposed):
    cache = KVCache(FAR_TINY, 1, 8, "cpu", torch.float32, transposed_keys=transposed)
    k, v = cache.append(0, keys(3, 1.0), keys(3, 2.0))
    assert k.shape[2] == v.shape[2] == 3 and torch.equal(k, keys(3, 1.0))
    assert torch.equal(cache.key_positions(torch.tensor([5, 5, 5])), torch.tensor([5, 5, 5]))
    cache.commit(torch.tensor([0, 0, 1]))
    k, _ = cache.append(0, keys(2, 3.0), keys(2, 4.0))  # a step that is then discarded
    assert k.shape[2] == 5 and torch.equal(k[:, :, 3:], keys(2, 3.0))
    assert cache.key_positions(torch.tensor([2, 2])).tolist() == [0, 0, 1, 2, 2]
    cache.discard()
    assert cache.length == 3 and cache.positions[3:].eq(UNWRITTEN).all()
    cache.append(0, keys(1, 5.0), keys(1, 5.0))
    cache.commit()  # positions default to the columns' indices (the token family)
    assert cache.positions[:5].tolist() == [0, 0, 1, 3, UNWRITTEN]
    cache.truncate(2)
    assert cache.length == 2 and cache.positions[2:].eq(UNWRITTEN).all()


def test_a_fixed_shape_step_writes_at_device_columns_and_reads_every_column():
    cache = KVCache(FAR_TINY, 1, 6, "cpu", torch.float32, transposed_keys=False, fixed_shape=True)
    assert torch.equal(cache.values, torch.zeros_like(cache.values))  # masked columns weigh exactly 0
    cache.write_at(torch.tensor([1, 2]), torch.tensor([7, 7]))
    k, v = cache.append(1, keys(2, 1.0), keys(2, 2.0))
    assert k.shape[2] == v.shape[2] == 6 and torch.equal(k[:, :, 1:3], keys(2, 1.0)) and k[:, :, 0].eq(0).all()
    assert cache.key_positions(torch.tensor([7, 7])).tolist() == [UNWRITTEN, 7, 7, *[UNWRITTEN] * 3]
    cache.commit()
    assert cache.length == 0  # a fixed-shape step's columns are placed by `write_at`, not counted
    with pytest.raises(InputError, match="fixed-shape KV cache holds 6 positions; 9 needed"):
        cache.reserve(9)


@pytest.mark.parametrize("transposed", [False, True])
def test_a_dynamic_cache_grows_keeping_what_it_holds(transposed):
    cache = KVCache(FAR_TINY, 1, 2, "cpu", torch.float32, transposed_keys=transposed)
    for layer in range(2):
        cache.append(layer, keys(2, layer + 1.0), keys(2, -layer - 1.0))
    cache.commit(torch.tensor([4, 4]))
    cache.reserve(3)
    assert cache.capacity == 4 and cache.length == 2 and cache.positions.tolist() == [4, 4, UNWRITTEN, UNWRITTEN]
    for layer in range(2):
        k, v = cache.append(layer, keys(1, 9.0), keys(1, 9.0))
        assert torch.equal(k[:, :, :2], keys(2, layer + 1.0)) and torch.equal(v[:, :, :2], keys(2, -layer - 1.0))


def test_an_open_ended_far_rollout_grows_its_context_cache_and_agrees_with_a_sized_one():
    """Without a frame count and an unbounded context (a session of a plain FAR model), the dynamic cache starts
    small and grows; it gives the frames a cache sized for the whole rollout gives."""
    model = tiny_far(False, 16, 4, "none")
    generator = torch.Generator().manual_seed(5)
    context, noise = torch.randn(2, 1, CHANNELS, 4, 4, generator=generator), torch.randn(2, 6, CHANNELS, 4, 4, generator=generator)
    sampling = FARSamplingConfig(steps=2, decoding="dynamic")
    stepper = LatentStepper(model, context, sampling)
    first_capacity = stepper.cache.kv.capacity
    frames = torch.stack([stepper.step(noise[:, k]) for k in range(6)], dim=1)
    assert stepper.cache.kv.capacity > first_capacity
    sized = generate_latents(model, 6, context, noise=noise, sampling=sampling)
    torch.testing.assert_close(frames, sized[:, 1:], atol=1e-5, rtol=0)
