"""Big tables on huge pages: fewer address-translation misses for randomly accessed memory.

The context-mixing model reads its hash tables at random: every nibble of
input touches a new 64-byte bucket in each of eight tables of 16 MiB (at the
default ``mem=22``).  With ordinary 4 KiB pages nearly every such read also
misses the CPU's address-translation cache (TLB), a second wait on top of the
cache miss.  Linux can back memory with 2 MiB pages instead when asked with
``madvise(MADV_HUGEPAGE)`` (transparent huge pages, in "madvise" mode on most
systems); one TLB entry then covers 512 times as much table.  On this
project's test machine that made ``cm`` about 6 % faster (``bench/cm.py``).

It is only a hint: the values are the same zeros either way, and where the
call is not available (another OS, or huge pages switched off) the array is an
ordinary one.  Pages are still mapped lazily, as with ``np.zeros``.
"""

import ctypes
import sys

import numpy as np

HUGE_PAGE = 2 << 20
MADV_HUGEPAGE = 14          # from <sys/mman.h> on Linux


def _madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_MADVISE = _madvise()


def zeros(shape, dtype):
    """``np.zeros(shape, dtype)``, on huge pages where the system offers them and the array spans one or more.

    The array is a C-contiguous view into a buffer one huge page larger, starting at a
    huge-page boundary (a huge page must be aligned).
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if _MADVISE is None or nbytes < HUGE_PAGE:
        return np.zeros(shape, dtype)
    raw = np.zeros(nbytes + HUGE_PAGE, np.uint8)
    start = -raw.ctypes.data % HUGE_PAGE
    _MADVISE(raw.ctypes.data + start, nbytes // HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE)  # failure: ordinary pages
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def full(shape, value, dtype):
    """``np.full`` on huge pages (see ``zeros``)."""
    out = zeros(shape, dtype)
    out[...] = value
    return out
