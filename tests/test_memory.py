"""lmc_ref.memory: huge-page arrays behave exactly like np.zeros / np.full."""

import sys

import numpy as np
import pytest

from lmc_ref import memory


@pytest.mark.parametrize("shape,dtype", [((3, 5), np.uint32), ((8, 1 << 20), np.uint32), (3 << 20, np.uint16)])
def test_zeros_is_np_zeros(shape, dtype):
    a = memory.zeros(shape, dtype)
    assert a.shape == np.zeros(shape).shape and a.dtype == dtype
    assert a.flags.c_contiguous and a.flags.writeable
    assert not a.any()
    a[...] = 7  # the whole view is usable memory
    assert int(a.sum(dtype=np.int64)) == 7 * a.size


def test_big_arrays_start_on_a_huge_page_boundary():
    a = memory.zeros((8, 1 << 20), np.uint32)  # 32 MiB
    if memory._MADVISE is None:
        pytest.skip(f"no madvise on {sys.platform}: ordinary pages")
    assert a.ctypes.data % memory.HUGE_PAGE == 0


def test_full_fills():
    a = memory.full((4096, 34), -5, np.int32)
    assert a.shape == (4096, 34) and (a == -5).all()
