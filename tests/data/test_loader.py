"""Tests for the epoch sampler and the resumable loader every storage shares."""

from __future__ import annotations

import pytest
import torch

from siamkit.data.datasets import ImageSet
from siamkit.data.loader import EpochSampler, ResumableLoader, make_loader


@pytest.mark.parametrize(("n", "world"), [(40, 2), (41, 2), (30, 3), (7, 4)])
def test_ranks_share_an_epoch_disjointly_and_together_cover_it(n: int, world: int) -> None:
    """Training: each rank gets n // world images, no image twice, only the remainder left out."""
    shares = [EpochSampler(n, seed=3, rank=r, world=world) for r in range(world)]
    seen = [[i for _, i in s] for s in shares]
    assert all(len(s) == n // world for s in seen)
    flat = [i for s in seen for i in s]
    assert len(set(flat)) == len(flat)  # disjoint
    assert len(flat) == n - n % world  # together the epoch, less the remainder


def test_evaluation_order_pads_by_wrapping_and_keeps_order() -> None:
    """Without drop_last every image is visited; the last share wraps around."""
    shares = [
        [i for _, i in EpochSampler(5, shuffle=False, rank=r, world=2, drop_last=False)]
        for r in range(2)
    ]
    assert shares == [[0, 2, 4], [1, 3, 0]]
    assert [i for _, i in EpochSampler(4, shuffle=False)] == [0, 1, 2, 3]


def test_every_epoch_has_its_own_seeded_permutation() -> None:
    """The order depends on (seed, epoch) only: reproducible, and new each epoch."""
    a, b = EpochSampler(50, seed=0), EpochSampler(50, seed=0)
    first = [i for _, i in a]
    assert first == [i for _, i in b]
    a.set_epoch(1)
    second = [(e, i) for e, i in a]
    assert {e for e, _ in second} == {1}
    assert [i for _, i in second] != first
    assert sorted(i for _, i in second) == list(range(50))


def _loader(n: int = 20, batch: int = 4) -> ResumableLoader:
    images = ImageSet(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2))
    return make_loader(images, [], batch, train=True, seed=5)


def test_resume_inside_an_epoch_continues_at_the_next_batch() -> None:
    """state_dict after 2 of 5 batches; a new loader loaded with it yields batches 3-5 only."""
    loader = _loader()
    loader.epoch_sampler.set_epoch(2)
    it = iter(loader)
    full = [next(it).indices.tolist() for _ in range(2)]
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches": 2}
    full += [b.indices.tolist() for b in it]
    resumed = _loader()
    resumed.load_state_dict(state)
    rest = [b.indices.tolist() for b in resumed]
    assert rest == full[2:]
    assert resumed.state_dict() == {"epoch": 2, "batches": 5}


def test_resume_after_a_complete_epoch_starts_the_next() -> None:
    """A checkpoint at an epoch's end resumes at the start of the following epoch."""
    loader = _loader()
    done = [b.indices.tolist() for b in loader]
    resumed = _loader()
    resumed.load_state_dict(loader.state_dict())
    assert resumed.epoch_sampler.epoch == 1
    following = [b.indices.tolist() for b in resumed]
    reference = _loader()
    reference.epoch_sampler.set_epoch(1)
    assert following == [b.indices.tolist() for b in reference] != done
