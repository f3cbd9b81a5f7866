import pytest
import torch
import torch.nn.functional as F

from nbp.training.fused_ce import linear_cross_entropy


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
