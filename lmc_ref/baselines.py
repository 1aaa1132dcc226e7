"""The classical baselines of the paper's Table 1 (gzip, LZMA2, PNG, FLAC) and extra rows.

bzip2, brotli, zstd and PPMd are added beside the paper's four.  Each adapter
is a pure bytes -> bytes pair that round-trips any input.  Where a format
cannot hold zero samples/pixels (PNG, FLAC), empty input compresses to empty
output and back.  The ``.lmc`` container is not used: these are the paper's
baselines, measured by their own output size.  ``CLASSICAL`` maps each row's
name to its ``ClassicalCompressor``.
"""

import bz2
import gzip
import io
import lzma
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class ClassicalCompressor:
    """A named lossless byte compressor: ``decompress(compress(x)) == x`` for all ``x``."""

    name: str
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes], bytes]
    description: str = ""


def gzip_compress(data):
    """gzip level 9 as the paper (``gzip.compress(data, compresslevel=9)``); ``mtime=0`` makes
    the bytes deterministic (the size is unchanged: the timestamp field is always 4 bytes)."""
    return gzip.compress(bytes(data), compresslevel=9, mtime=0)


def lzma_compress(data):
    """``lzma.compress`` with its defaults (xz container, preset 6, CRC-64), exactly as the paper."""
    return lzma.compress(bytes(data))


def bz2_compress(data):
    return bz2.compress(bytes(data), compresslevel=9)


def brotli_compress(data):
    import brotli

    return brotli.compress(bytes(data), quality=11)


def brotli_decompress(blob):
    import brotli

    return brotli.decompress(blob)


def zstd_compress(data):
    """zstd level 19 (the frame stores the content size, so decompression needs no hint)."""
    import zstandard

    return zstandard.ZstdCompressor(level=19).compress(bytes(data))


def zstd_decompress(blob):
    import zstandard

    return zstandard.ZstdDecompressor().decompress(blob)


# PPMd variant I (rev. 1, the variant ZIP uses; it writes an end mark, so no
# length is stored) with order 6 and 16 MiB of model memory: pyppmd's defaults
# and 7-Zip's PPMd defaults at its normal level -- the usual "PPMd" row of
# compression benchmarks.  Order 6 is long enough for text's word-level
# contexts, short enough to stay adaptive on 2048-byte chunks.
PPMD_ORDER = 6
PPMD_MEMORY = 16 << 20


def ppmd_compress(data):
    import pyppmd  # optional (dev extra); imported on use

    return pyppmd.compress(bytes(data), max_order=PPMD_ORDER, mem_size=PPMD_MEMORY, variant="I")


def ppmd_decompress(blob):
    import pyppmd

    return pyppmd.decompress(blob, max_order=PPMD_ORDER, mem_size=PPMD_MEMORY, variant="I")


def closest_factors(n):
    """The paper's ``_get_the_two_closest_factors``: ``(a, n // a)`` with ``a <= sqrt(n)`` largest.
    For n = 2048 this is (32, 64)."""
    a = round(math.sqrt(n))
    while n % a > 0:
        a -= 1
    return a, n // a


def _png_encode(data, size):
    from PIL import Image

    image = Image.frombytes(mode="L", size=size, data=data)  # size is (width, height)
    with io.BytesIO() as buffer:
        image.save(buffer, format="PNG", optimize=True)
        return buffer.getvalue()


def png_paper_compress(data):
    """PNG exactly as the paper's code: Pillow ``size=closest_factors(n)`` read as (width, height).

    For a 2048-byte patch of 32 rows x 64 columns that is an image 32 pixels wide
    and 64 high, so every patch row is split into two image rows and PNG's
    "pixel above" filters look 32 pixels back along the patch row instead of
    one patch row up.  Kept as its own row so the effect is shown, not hidden.
    """
    data = bytes(data)
    return _png_encode(data, closest_factors(len(data))) if data else b""


def png_compress(data):
    """PNG with the true patch shape: ``closest_factors(n)`` read as (rows, columns), i.e.
    Pillow ``size=(n // a, a)``; a 2048-byte patch is 64 pixels wide and 32 high as it was cut."""
    data = bytes(data)
    if not data:
        return b""
    a, b = closest_factors(len(data))
    return _png_encode(data, (b, a))


def png_decompress(blob):
    """Decode an 8-bit grayscale PNG back to its bytes (row-major)."""
    if not blob:
        return b""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own output: an unchunked gigabyte is not a "decompression bomb"
    try:
        with Image.open(io.BytesIO(blob)) as image:
            if image.mode != "L":
                raise ValueError(f"expected an 8-bit grayscale PNG, got mode {image.mode!r}")
            return image.tobytes()
    finally:
        Image.MAX_IMAGE_PIXELS = limit


FLAC_RATE = 16_000


def flac_compress(data):
    """FLAC of the bytes as 8-bit mono 16 kHz audio, written by libFLAC through soundfile.

    Each byte ``u`` is the unsigned 8-bit sample of the paper's audio pipeline; it
    is stored as the signed 8-bit sample ``u - 128`` (subtype ``PCM_S8``, a true
    8-bit FLAC stream) at soundfile's ``compression_level=1.0``, libFLAC's
    highest preset (-8).  The paper instead piped the data through pydub/ffmpeg
    at ffmpeg's ``-compression_level 12`` and, since ffmpeg's FLAC encoder has no
    8-bit mode, coded 16-bit frames whose low byte is always zero (FLAC's
    "wasted bits" make that cheap but not free); sizes therefore differ a little
    from the paper's, in either direction (level 12 searches more, 16-bit frames
    cost more).  No ffmpeg subprocess is involved here.
    """
    import soundfile as sf

    samples = np.frombuffer(bytes(data), dtype=np.uint8)
    if samples.size == 0:
        return b""
    # soundfile writes from int16: libsndfile keeps the high byte for PCM_S8, exactly.
    pcm = (samples.astype(np.int16) - 128) << 8  # [N] int16
    with io.BytesIO() as buffer:
        sf.write(buffer, pcm, FLAC_RATE, subtype="PCM_S8", format="FLAC", compression_level=1.0)
        return buffer.getvalue()


def flac_decompress(blob):
    """Decode the FLAC stream back to the unsigned 8-bit bytes (signed sample + 128)."""
    if not blob:
        return b""
    import soundfile as sf

    pcm, _ = sf.read(io.BytesIO(blob), dtype="int16")  # [N] int16, low byte zero
    return ((pcm >> 8) + 128).astype(np.uint8).tobytes()


CLASSICAL = {
    c.name: c
    for c in (
        ClassicalCompressor("gzip", gzip_compress, gzip.decompress, "gzip -9 (paper)"),
        ClassicalCompressor("lzma", lzma_compress, lzma.decompress, "LZMA2 in xz, preset 6 (paper)"),
        ClassicalCompressor("png_paper", png_paper_compress, png_decompress, "PNG, paper's (32, 64) as (w, h)"),
        ClassicalCompressor("png", png_compress, png_decompress, "PNG, true 32x64 patch shape"),
        ClassicalCompressor("flac", flac_compress, flac_decompress, "FLAC 8-bit mono 16 kHz, libFLAC -8"),
        ClassicalCompressor("bzip2", bz2_compress, bz2.decompress, "bzip2 -9"),
        ClassicalCompressor("brotli", brotli_compress, brotli_decompress, "brotli quality 11"),
        ClassicalCompressor("zstd", zstd_compress, zstd_decompress, "zstd -19"),
        ClassicalCompressor("ppmd", ppmd_compress, ppmd_decompress, "PPMd var. I, order 6, 16 MiB"),
    )
}
