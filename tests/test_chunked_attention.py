import pytest
import torch
import torch.nn.functional as F

from nbp.models import transformer_attention as attention
from nbp.models.layout import SequenceLayout
from nbp.models.transformer_attention import AttentionMask, causal_by_group, chunked_attention, nbp_mask

MASKS = {
    "block": lambda: nbp_mask(70, 5, prefix=1),
    "hybrid": lambda: nbp_mask(70, 5, prefix=3, hybrid=True),
    "groups": lambda: causal_by_group(torch.tensor([0] * 9 + [1] * 20 + [2] * 3 + [3] * 38)),
}


def attention_and_grads(fn, q, k, v, weights):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v)
    (out * weights).sum().backward()
    return [out.detach()] + [t.grad for t in (q, k, v)]


@pytest.mark.parametrize("name", sorted(MASKS))
@pytest.mark.parametrize("chunk", [16, 29, 128])
def test_chunked_attention_equals_sdpa_in_float64(name, chunk):
    """The explicit-matmul chunks give SDPA's outputs and gradients, to float64 rounding."""
    mask = MASKS[name]()
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 70, 8, generator=g, dtype=torch.float64) for _ in range(3))
    weights = torch.randn(2, 3, 70, 8, generator=g, dtype=torch.float64)
    ours = attention_and_grads(lambda *t: chunked_attention(*t, AttentionMask(mask, chunk)), q, k, v, weights)
    reference = attention_and_grads(lambda *t: F.scaled_dot_product_attention(*t, attn_mask=mask), q, k, v, weights)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_bf16_chunked_attention_is_as_close_to_exact_as_sdpa():
    """In bf16 the scores are rounded to bf16 (as in an eager attention under autocast): its error against the
    float64 result stays within 3x that of PyTorch's bf16 SDPA kernel, outputs and gradients alike."""
    mask = nbp_mask(1280, 16, prefix=1)
    g = torch.Generator().manual_seed(1)
    q, k, v, weights = (torch.randn(1, 2, 1280, 64, generator=g).bfloat16() for _ in range(4))
    exact = attention_and_grads(lambda *t: F.scaled_dot_product_attention(*t, attn_mask=mask),
                                *(t.double() for t in (q, k, v, weights)))
    ours = attention_and_grads(lambda *t: chunked_attention(*t, AttentionMask(mask, 256)), q, k, v, weights)
    sdpa = attention_and_grads(lambda *t: F.scaled_dot_product_attention(*t, attn_mask=mask), q, k, v, weights)
    for a, b, e in zip(ours, sdpa, exact):
        our_error, sdpa_error = ((x.double() - e).abs().max() for x in (a, b))
        assert our_error <= 3 * sdpa_error, (our_error, sdpa_error)


def test_score_biases_hide_what_the_mask_hides():
    mask = nbp_mask(12, 4)
    biases = AttentionMask(mask, 6).biases(torch.bfloat16)  # rows 0-5 see keys < 8, rows 6-11 all 12
    assert [tuple(b.shape) for b in biases] == [(6, 8), (6, 12)]
    assert torch.equal(biases[0] == 0, mask[:6, :8]) and torch.equal(biases[1].isinf(), ~mask[6:])


def test_the_model_uses_it_on_cpu_in_both_dtypes():
    """`attend` sends a training mask through chunked_attention on CPU; it matches the one-call SDPA result."""
    mask = SequenceLayout(5, 1, True, False, (14, 1, 5), 0).mask(70, "cpu")
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, 70, 16, generator=g) for _ in range(3))
    calls = []
    original = attention.chunked_attention
    attention.chunked_attention = lambda *a: calls.append(a[0].dtype) or original(*a)
    try:
        fp32 = attention.attend(q, k, v, mask)
        bf16 = attention.attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    finally:
        attention.chunked_attention = original
    assert calls == [torch.float32, torch.bfloat16]
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense)
    torch.testing.assert_close(fp32, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bf16.float(), reference, rtol=0.05, atol=0.03)


def test_without_gradients_the_same_result_keeps_no_probabilities():
    mask = AttentionMask(nbp_mask(70, 5, prefix=1), 16)
    q, k, v = (torch.randn(1, 2, 70, 8, requires_grad=True) for _ in range(3))
    with_grad = chunked_attention(q, k, v, mask)
    with torch.no_grad():
        without = chunked_attention(q, k, v, mask)
    assert with_grad.grad_fn is not None and without.grad_fn is None
    torch.testing.assert_close(without, with_grad.detach(), rtol=0, atol=0)
