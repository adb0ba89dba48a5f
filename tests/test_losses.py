"""training.losses on hand-made depth maps (no ../shared needed)."""

import torch
import torch.nn.functional as F

from training.losses import volume_loss, volume_targets


def _depths(size: int = 192) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    front = torch.rand(2, size, size, generator=g) * 60 - 10
    back = front - torch.rand(2, size, size, generator=g) * 40
    front[:, :, :20] = -torch.inf  # empty columns, as outside a face
    back[:, :, :20] = torch.inf
    return front, back


def test_pooled_targets_at_stride_4_are_the_stride_2_targets_pooled_again():
    front, back = _depths()
    fine = volume_targets(front, back, "pooled", stride=2)
    assert fine.shape == (2, 200, 96, 96)
    torch.testing.assert_close(volume_targets(front, back, "pooled"), F.avg_pool2d(fine, 2))


def test_a_coarser_stack_is_scored_against_the_targets_pooled_to_its_cells():
    front, back = _depths()
    targets = volume_targets(front, back, "pooled", stride=2)
    coarse = torch.randn(2, 200, 48, 48)
    fine = torch.randn(2, 200, 96, 96)
    expected = (
        F.binary_cross_entropy_with_logits(coarse, F.avg_pool2d(targets, 2))
        + F.binary_cross_entropy_with_logits(fine, targets)
    ) / 2
    torch.testing.assert_close(volume_loss([coarse, fine], targets, "pooled"), expected)
