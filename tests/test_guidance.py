"""One guidance room for both families: rows [conditional; null], one combination for logits and velocities."""
import torch

from nbp.config import from_preset
from nbp.generation.far import conditions_for
from nbp.generation.guidance import double_rows, guide, guide_rows, is_guided, with_null_rows
from nbp.models.far import FAR, FARConfig


def test_guide_rows_combines_a_doubled_batch_of_logits_or_velocities():
    conditional, unconditional = torch.randn(3, 5, 64000), torch.randn(3, 5, 64000)  # token logits
    torch.testing.assert_close(guide_rows(torch.cat([conditional, unconditional]), 2.5),
                               unconditional + 2.5 * (conditional - unconditional), rtol=0, atol=0)
    v_cond, v_null = torch.randn(2, 32, 8, 8), torch.randn(2, 32, 8, 8)  # FAR velocities, FAR's own formula
    torch.testing.assert_close(guide_rows(torch.cat([v_cond, v_null]), 1.5), v_null + 1.5 * (v_cond - v_null),
                               rtol=0, atol=0)
    torch.testing.assert_close(guide(v_cond, v_null, 1.0), v_cond)  # scale 1: the conditional output (to rounding)


def test_both_families_double_their_rows_the_same_way():
    ids = torch.tensor([[1, 2], [3, 0]])
    assert torch.equal(with_null_rows(ids, 9), torch.tensor([[1, 2], [3, 0], [9, 9], [9, 9]]))
    assert torch.equal(double_rows(ids, True), torch.cat([ids, ids])) and double_rows(ids, False) is ids
    assert not is_guided(None, True) and not is_guided(1.0, True) and not is_guided(3.0, False) and is_guided(0.0, True)
    far = FAR(from_preset(FARConfig, "far-tiny", condition="label", num_classes=5))
    cond = conditions_for(far, torch.tensor([1, 2]), None, 2.0)
    assert cond.doubled and torch.equal(cond.labels, torch.tensor([1, 2, 5, 5]))  # conditional rows first
    v = torch.randn(4, 3)
    torch.testing.assert_close(cond.guided(v), guide(v[:2], v[2:], 2.0), rtol=0, atol=0)
    assert not conditions_for(far, torch.tensor([1]), None, 1.0).doubled  # FAR: a scale <= 1 is the model alone
