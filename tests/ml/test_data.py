from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.ml.data import (
    ArrayDataset,
    LoaderPool,
    PoolSource,
    TensorPool,
    make_loader,
    one_hot,
    shard_bounds,
    soft_targets,
    to_float_tensor,
)


def test_to_float_tensor_layouts() -> None:
    hw = np.arange(4 * 5, dtype=np.uint8).reshape(4, 5)
    assert to_float_tensor(hw, (1, 4, 5)).shape == (1, 4, 5)
    assert to_float_tensor(np.stack([hw, hw]), (1, 4, 5)).shape == (2, 1, 4, 5)
    hwc = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    chw = to_float_tensor(hwc, (3, 4, 5))
    assert chw.shape == (3, 4, 5)
    assert chw[2, 1, 3].item() == pytest.approx(hwc[1, 3, 2] / 255)
    assert to_float_tensor(hwc[None].repeat(2, 0), (3, 4, 5)).shape == (2, 3, 4, 5)
    assert to_float_tensor(np.zeros((2, 3, 4, 5), np.uint8), (3, 4, 5)).shape == (2, 3, 4, 5)
    flat = to_float_tensor(np.ones((2, 6), np.float64), (6,))
    assert flat.dtype == torch.float32
    assert flat.shape == (2, 6)
    assert float(flat.max()) == 1.0  # floats are not rescaled
    assert float(to_float_tensor(np.full((6,), 255, np.uint8), (6,)).max()) == 1.0
    with pytest.raises(ValueError, match="do not fit"):
        to_float_tensor(np.zeros((2, 7, 7), np.uint8), (1, 4, 5))


def test_array_dataset_and_loader_seeded() -> None:
    x = np.arange(10 * 3, dtype=np.uint8).reshape(10, 3)
    t = one_hot(np.arange(10) % 2, 2)
    ds = ArrayDataset(x, t)
    xi, ti = ds[3]
    assert xi.shape == (3,)
    assert ti.tolist() == [0.0, 1.0]
    order = [b[0][:, 0].tolist() for b in make_loader(ds, 4, shuffle=True, seed=5)]
    again = [b[0][:, 0].tolist() for b in make_loader(ds, 4, shuffle=True, seed=5)]
    assert order == again
    with pytest.raises(ValueError, match="seed"):
        make_loader(ds, 4, shuffle=True)


def test_loader_pool_streams_in_order_and_shards() -> None:
    x = np.arange(23 * 2, dtype=np.float32).reshape(23, 2)
    pool = LoaderPool(ArrayDataset(x, one_hot(np.zeros(23, int), 2)), batch_size=5)
    assert isinstance(pool, PoolSource)
    full = torch.cat(list(pool.batches()))
    assert torch.equal(full, torch.from_numpy(x))
    assert torch.equal(torch.cat(list(pool.batches())), full)  # re-iterable
    assert torch.equal(torch.cat(list(pool.shard(5, 15).batches())), full[5:15])
    assert torch.equal(torch.cat(list(pool.subset([7, 2]).batches())), full[[7, 2]])
    tp = TensorPool(full, batch_size=5)
    assert torch.equal(torch.cat(list(tp.shard(10, 23).batches())), full[10:])


def test_shard_bounds() -> None:
    assert shard_bounds(23, 5, 3) == [(0, 10), (10, 20), (20, 23)]
    assert shard_bounds(10, 5, 4) == [(0, 5), (5, 10)]
    assert shard_bounds(0, 5, 2) == [(0, 0)]
    for start, stop in shard_bounds(1000, 64, 7)[:-1]:
        assert start % 64 == 0
        assert (stop - start) % 64 == 0


def test_soft_targets() -> None:
    st = soft_targets(np.array([[3, 1], [0, 2]]))
    assert st.tolist() == [[0.75, 0.25], [0.0, 1.0]]
    with pytest.raises(ValueError, match="at least one vote"):
        soft_targets(np.array([[0, 0]]))
