"""tensorlite.utils.data: torch.utils.data's datasets, samplers, collation and DataLoader."""
import collections

import numpy as np
import pytest

import tensorlite as tl
from tensorlite.utils.data import (BatchSampler, ConcatDataset, DataLoader, Dataset,
                                   DistributedSampler, IterableDataset, RandomSampler,
                                   SequentialSampler, Subset, TensorDataset, default_collate,
                                   random_split)


def _ds(n=10):
    return TensorDataset(tl.arange(n).float().reshape(n, 1) * 10, tl.arange(n))


def _labels(loader):
    return [y.tolist() for _, y in loader]


def test_batches_in_order_with_a_short_last_one():
    dl = DataLoader(_ds(10), batch_size=4)
    batches = list(dl)
    assert len(dl) == 3 == len(batches)
    assert _labels(dl) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    x, y = batches[0]
    assert x.shape == (4, 1) and x.dtype == tl.float32 and y.dtype == tl.int64
    assert x[:, 0].tolist() == [0.0, 10.0, 20.0, 30.0]


def test_drop_last_drops_the_short_batch():
    dl = DataLoader(_ds(10), batch_size=4, drop_last=True)
    assert len(dl) == 2 and _labels(dl) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert len(DataLoader(_ds(8), batch_size=4, drop_last=True)) == 2


def test_shuffle_is_a_permutation_reproducible_from_a_seed():
    def epoch(gen):
        return sum(_labels(DataLoader(_ds(20), batch_size=6, shuffle=True, generator=gen)), [])
    a, b = epoch(tl.Generator(3)), epoch(tl.Generator(3))
    assert a == b and sorted(a) == list(range(20)) and a != list(range(20))
    assert epoch(tl.Generator(4)) != a
    # one loader, two epochs: the generator advances, so the epochs differ (as in PyTorch)
    dl = DataLoader(_ds(20), batch_size=20, shuffle=True, generator=tl.Generator(3))
    assert _labels(dl) != _labels(dl)
    # no generator: the default generator's seed decides
    tl.manual_seed(11)
    first = sum(_labels(DataLoader(_ds(20), batch_size=5, shuffle=True)), [])
    tl.manual_seed(11)
    assert sum(_labels(DataLoader(_ds(20), batch_size=5, shuffle=True)), []) == first
    # a NumPy generator works too
    r1 = list(RandomSampler(range(9), generator=np.random.default_rng(1)))
    assert r1 == list(RandomSampler(range(9), generator=np.random.default_rng(1)))


def test_collate_tuples_dicts_numpy_and_numbers():
    samples = [{"x": np.full(3, i, dtype=np.float32), "y": i, "w": 0.5 * i, "name": f"s{i}",
                "pair": (np.int64(i), [i, -i])} for i in range(4)]
    b = default_collate(samples)
    assert b["x"].shape == (4, 3) and b["x"].dtype == tl.float32
    assert b["y"].tolist() == [0, 1, 2, 3] and b["y"].dtype == tl.int64
    assert b["w"].dtype == tl.float64  # Python floats collate to float64, as in PyTorch
    assert b["name"] == ["s0", "s1", "s2", "s3"]
    assert isinstance(b["pair"], list) and b["pair"][0].tolist() == [0, 1, 2, 3]
    assert [t.tolist() for t in b["pair"][1]] == [[0, 1, 2, 3], [0, -1, -2, -3]]
    Point = collections.namedtuple("Point", "a b")
    p = default_collate([Point(tl.tensor([1.0]), 2), Point(tl.tensor([3.0]), 4)])
    assert isinstance(p, Point) and p.a.shape == (2, 1) and p.b.tolist() == [2, 4]
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([(1, 2), (3,)])
    with pytest.raises(TypeError, match="default_collate"):
        default_collate([object(), object()])


def test_custom_collate_and_batch_size_none():
    dl = DataLoader(_ds(5), batch_size=2, collate_fn=lambda s: len(s))
    assert list(dl) == [2, 2, 1]

    class Arrays(Dataset):
        def __getitem__(self, i):
            return np.arange(3) + i

        def __len__(self):
            return 2
    got = list(DataLoader(Arrays(), batch_size=None))
    assert len(got) == 2 and got[1].tolist() == [1, 2, 3] and isinstance(got[1], tl.Tensor)


def test_samplers_and_their_lengths():
    assert list(SequentialSampler(range(4))) == [0, 1, 2, 3]
    rs = RandomSampler(range(7), generator=tl.Generator(0))
    assert len(rs) == 7 and sorted(rs) == list(range(7))
    rr = RandomSampler(range(3), replacement=True, num_samples=10, generator=tl.Generator(0))
    assert len(rr) == 10 and len(list(rr)) == 10 and set(rr) <= {0, 1, 2}
    assert len(list(RandomSampler(range(3), num_samples=7))) == 7
    bs = BatchSampler(SequentialSampler(range(10)), 3, drop_last=False)
    assert len(bs) == 4 and list(bs)[-1] == [9]
    assert len(BatchSampler(range(10), 3, drop_last=True)) == 3
    dl = DataLoader(_ds(10), batch_sampler=BatchSampler(range(10), 5, False))
    assert len(dl) == 2 and _labels(dl)[1] == [5, 6, 7, 8, 9]


@pytest.mark.parametrize("n, world", [(10, 3), (12, 4), (5, 2), (3, 4)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_distributed_sampler_shares_are_disjoint_and_complete(n, world, shuffle):
    shares = [list(DistributedSampler(range(n), world, r, shuffle=shuffle, seed=5))
              for r in range(world)]
    per = -(-n // world)
    assert all(len(s) == per == len(DistributedSampler(range(n), world, r)) for r, s in enumerate(shares))
    flat = sum(shares, [])
    assert set(flat) == set(range(n))  # complete
    if n % world == 0:
        assert sorted(flat) == list(range(n))  # and disjoint: nothing is padded
    else:
        assert len(flat) - len(set(flat)) == per * world - n  # only the padding repeats
    # drop_last: disjoint, equal, trimmed
    dropped = [list(DistributedSampler(range(n), world, r, shuffle=shuffle, drop_last=True))
               for r in range(world)]
    flat = sum(dropped, [])
    assert len(flat) == len(set(flat)) == (n // world) * world
    assert all(len(s) == n // world for s in dropped)


def test_distributed_sampler_epochs_and_errors():
    s = DistributedSampler(range(20), num_replicas=2, rank=0, seed=1)
    e0 = list(s)
    assert list(s) == e0  # the same epoch gives the same order
    s.set_epoch(1)
    assert list(s) != e0
    other = DistributedSampler(range(20), num_replicas=2, rank=1, seed=1)
    other.set_epoch(1)
    assert set(s).isdisjoint(other)
    with pytest.raises(ValueError, match="Invalid rank 2"):
        DistributedSampler(range(4), num_replicas=2, rank=2)
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedSampler(range(4))
    # the loader batches the rank's share
    dl = DataLoader(_ds(10), batch_size=2, sampler=DistributedSampler(_ds(10), 2, 1, shuffle=False))
    assert _labels(dl) == [[1, 3], [5, 7], [9]] and len(dl) == 3


def test_random_split_lengths_fractions_disjoint():
    ds = _ds(10)
    a, b = random_split(ds, [7, 3], generator=tl.Generator(0))
    assert (len(a), len(b)) == (7, 3) and isinstance(a, Subset)
    ia, ib = set(a.indices), set(b.indices)
    assert ia.isdisjoint(ib) and ia | ib == set(range(10))
    again = random_split(ds, [7, 3], generator=tl.Generator(0))
    assert again[0].indices == a.indices
    parts = random_split(range(11), [0.5, 0.3, 0.2], generator=tl.Generator(0))
    assert [len(p) for p in parts] == [6, 3, 2]  # floors 5, 3, 2; the remainder 1 goes first
    assert sorted(sum((list(p) for p in parts), [])) == list(range(11))
    with pytest.raises(ValueError, match="does not equal"):
        random_split(ds, [5, 4])
    x, y = a[0]
    assert int(y.item()) == a.indices[0] and float(x.item()) == 10.0 * a.indices[0]


def test_iterable_dataset_and_concat():
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(7))

        def __len__(self):
            return 7
    dl = DataLoader(Stream(), batch_size=3)
    assert [b.tolist() for b in dl] == [[0, 1, 2], [3, 4, 5], [6]] and len(dl) == 3
    assert len(DataLoader(Stream(), batch_size=3, drop_last=True)) == 2
    with pytest.raises(ValueError, match="shuffle"):
        DataLoader(Stream(), shuffle=True)
    cat = _ds(3) + _ds(2)
    assert isinstance(cat, ConcatDataset) and len(cat) == 5 and int(cat[3][1].item()) == 0


def test_loader_argument_errors():
    ds = _ds(4)
    with pytest.raises(ValueError, match="mutually exclusive with shuffle"):
        DataLoader(ds, sampler=SequentialSampler(ds), shuffle=True)
    with pytest.raises(ValueError, match="batch_sampler option is mutually exclusive"):
        DataLoader(ds, batch_size=2, batch_sampler=BatchSampler(range(4), 2, False))
    with pytest.raises(ValueError, match="drop_last"):
        DataLoader(ds, batch_size=None, drop_last=True)
    with pytest.raises(ValueError, match="num_workers"):
        DataLoader(ds, num_workers=2)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(ds, batch_size=0)
    with pytest.raises(ValueError, match="size mismatch"):
        TensorDataset(tl.zeros(3), tl.zeros(4))
