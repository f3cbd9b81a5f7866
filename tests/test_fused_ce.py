import pytest
import torch
import torch.nn.functional as F

from nbp.models.fused_ce import linear_cross_entropy


@pytest.mark.parametrize("chunk", [3, 7, 64])
def test_chunked_linear_cross_entropy_equals_the_plain_path(chunk):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(20, 8, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 8, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (20,), generator=g)
    scale = torch.rand(20, generator=g, dtype=torch.float64)
    losses, top1, top5 = linear_cross_entropy(hidden, weight, targets, chunk=chunk)
    (losses * scale).sum().backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    logits = hidden @ weight.T
    reference = F.cross_entropy(logits, targets, reduction="none")
    (reference * scale).sum().backward()
    torch.testing.assert_close(losses, reference.float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grads[0], hidden.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1], weight.grad, rtol=1e-5, atol=1e-6)
    assert torch.equal(top1, logits.argmax(-1) == targets)
    assert torch.equal(top5, (logits.topk(5, -1).indices == targets[:, None]).any(-1))


@pytest.mark.parametrize("chunk", [5, 64])
def test_mean_loss_gradients_equal_the_plain_path(chunk):
    """A mean (every row the same incoming gradient) takes the scaled-product path of backward."""
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(12, 6, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(30, 6, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 30, (12,), generator=g)
    linear_cross_entropy(hidden, weight, targets, chunk=chunk)[0].mean().backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    F.cross_entropy(hidden @ weight.T, targets).backward()
    torch.testing.assert_close(grads[0], hidden.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grads[1], weight.grad, rtol=1e-5, atol=1e-7)


def test_bf16_autocast_matches_the_plain_autocast_path():
    """Under autocast the logits' gradient is rounded to bf16 once, as in the plain path's head backward."""
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(40, 32, generator=g, requires_grad=True)
    weight = (0.1 * torch.randn(500, 32, generator=g)).requires_grad_()
    targets = torch.randint(0, 500, (40,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = linear_cross_entropy(hidden, weight, targets, chunk=16)[0].mean()
    loss.backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = F.cross_entropy((hidden @ weight.T).float(), targets)
    reference.backward()
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)
    assert grads[0].dtype == torch.float32 and grads[1].dtype == torch.float32
    torch.testing.assert_close(grads[0], hidden.grad, rtol=2e-2, atol=2e-4)
    torch.testing.assert_close(grads[1], weight.grad, rtol=2e-2, atol=2e-4)


def test_a_target_far_below_the_others_keeps_a_finite_exact_loss():
    """softmax(target) underflows float32 (logit 200 below the best): the loss comes from log-sum-exp instead."""
    hidden = torch.eye(3)
    weight = torch.tensor([[0.0, 0.0, 0.0], [200.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    targets = torch.tensor([0, 0, 2])
    losses = linear_cross_entropy(hidden, weight, targets)[0]
    reference = F.cross_entropy(hidden @ weight.T, targets, reduction="none")
    assert torch.isfinite(losses).all() and losses[0] > 199
    torch.testing.assert_close(losses, reference)


def test_count_above_counts_strictly_greater_values():
    from nbp.models.fused_ce import count_above_

    values = torch.tensor([[0.5, 0.2, 0.5, 0.1], [0.0, 0.0, 0.3, 1.0]])
    assert count_above_(values.clone(), torch.tensor([[0.5], [0.0]])).tolist() == [0, 2]
    assert count_above_(values.clone(), values[:, 1:2].clone()).tolist() == [2, 2]
