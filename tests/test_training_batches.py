"""training.train's batch loader: a worker process makes each step's batch and targets, the
same ones the engine gives for that step (no ../shared needed)."""

from types import SimpleNamespace

import torch

from training.losses import volume_targets
from training.train import TrainingBatches, batch_loader


class CountingFaces:
    """Batch `index` is a slab whose depth encodes the index."""

    def batch(self, index: int, size: int) -> SimpleNamespace:
        front = torch.full((size, 192, 192), float(index % 50))
        return SimpleNamespace(index=index, front=front, back=front - 10.0)


def test_the_loader_resumes_at_a_step_and_gives_that_steps_batch_and_targets():
    config = {"steps": 9, "batch_size": 2, "loss_resolution": "pooled"}
    batches = TrainingBatches(CountingFaces(), config, world=2, rank=1)
    got = list(batch_loader(batches, first_step=6, device=torch.device("cpu")))
    assert [batch.index for batch, _ in got] == [13, 15, 17]  # step * world + rank
    for batch, targets in got:
        torch.testing.assert_close(targets, volume_targets(batch.front, batch.back, "pooled"))
