"""training.train's batch loader: a worker process makes each step's batch and targets, the
same ones the engine gives for that step; or they are read from a batch cache (no ../shared
needed)."""

from types import SimpleNamespace

import pytest
import torch

from training.batch_cache import BatchCache, write_cache
from training.losses import volume_targets
from training.train import DEFAULTS, TrainingBatches, batch_loader


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


class RandomFaces:
    """Batches of random images, depths and points, the same for the same index."""

    def batch(self, index: int, size: int) -> SimpleNamespace:
        g = torch.Generator().manual_seed(index)
        front = torch.rand(size, 192, 192, generator=g) * 250
        front[:, :20] = -float("inf")  # no head there
        back = torch.where(front.isinf(), float("inf"), front + 30)
        image = torch.rand(size, 3, 192, 192, generator=g)
        points = torch.rand(size, 68, 2, generator=g) * 191
        return SimpleNamespace(image=image, front=front, back=back, points68=points)


def cache_config(**changes) -> dict:
    return {**DEFAULTS, "batch_size": 2, "steps": 5, **changes}


def test_a_cache_gives_back_the_batches_and_targets_it_was_written_from(tmp_path):
    config = cache_config()
    assert write_cache(RandomFaces(), config, tmp_path, batches=3) == 3
    assert write_cache(RandomFaces(), config, tmp_path, batches=3) == 0  # resumes: all there
    cache = BatchCache(tmp_path, config)
    for index in (0, 2, 4):  # past the end it starts over: index 4 is batch 1
        made, read = RandomFaces().batch(index % 3, 2), cache.batch(index, 2)
        torch.testing.assert_close(read.image, made.image, atol=0.5 / 255 + 1e-6, rtol=0)
        torch.testing.assert_close(read.points68, made.points68)
        for name in ("front", "back"):  # fp16: within 1/8 px below depth 256
            torch.testing.assert_close(getattr(read, name), getattr(made, name), atol=0.13, rtol=0)
        assert read.front[:, :20].isneginf().all() and read.back[:, :20].isposinf().all()
        torch.testing.assert_close(
            volume_targets(read.front, read.back, "pooled"),
            volume_targets(made.front, made.back, "pooled"), atol=0.01, rtol=0,
        )  # fmt: skip
    loader = batch_loader(TrainingBatches(cache, config, 1, 0), 0, torch.device("cpu"))
    assert loader.num_workers == 0  # reading needs no worker process
    assert len(list(loader)) == 5


def test_a_cache_refuses_another_data_recipe_or_batch_size(tmp_path):
    write_cache(RandomFaces(), cache_config(), tmp_path, batches=2)
    with pytest.raises(ValueError, match="real_share"):
        BatchCache(tmp_path, cache_config(real_share=0.5))
    with pytest.raises(ValueError, match="other data settings"):
        write_cache(RandomFaces(), cache_config(seed=3), tmp_path, batches=2)
    with pytest.raises(ValueError, match="batches of 2, not 4"):
        BatchCache(tmp_path, cache_config()).batch(0, 4)
    (tmp_path / "0000001.pt").unlink()
    with pytest.raises(FileNotFoundError, match="lacks 1 of its 2 batches"):
        BatchCache(tmp_path, cache_config())
