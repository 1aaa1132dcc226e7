"""Compressors: a predictor plus the arithmetic coder, wrapped in the ``.lmc`` container.

``compress`` / ``decompress`` are the whole product in two functions.  They run
the loop of the paper's Section 2 -- predict, quantize, code, update -- either
in readable Python (``path="readable"``, any predictor) or in the predictor's
fused compiled loop (``path="fused"``, the default where a predictor has one).
Both paths emit identical bytes, which the tests check.

Below them, the classical baselines of the paper's Table 1 (gzip, LZMA2, PNG,
FLAC) and extra rows (bzip2, brotli, zstd, PPMd) as ``ClassicalCompressor``
adapters, collected in ``CLASSICAL``.
"""

import bz2
import gzip
import io
import lzma
import math
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import container, word_codes
from .coder import ArithmeticDecoder, ArithmeticEncoder, max_stream_bytes
from .constants import CDF_TOTAL, CODER_PRECISION
from .predictors import make_predictor
from .quantize import quantize

DEFAULT_SPEC = "ngram"
#: Inputs larger than this get a progress bar when ``progress="auto"``.
PROGRESS_THRESHOLD = 4 << 20


# --8<-- [start:predictive_loop]
def encode_readable(predictor, data):
    """The paper's loop, one symbol at a time: predict, quantize, encode, update."""
    predictor.reset()
    encoder = ArithmeticEncoder()
    if predictor.bitwise:
        return _encode_bits_readable(predictor, data, encoder)
    for symbol in data:
        cdf = quantize(predictor.predict())  # floats -> integers, identically in the decoder
        encoder.encode(cdf, int(symbol))
        predictor.update(int(symbol))
    return encoder.finish()


def decode_readable(predictor, payload, length):
    """The same loop run backwards: the decoder asks the same predictor the same questions."""
    predictor.reset()
    decoder = ArithmeticDecoder(payload)
    out = np.empty(length, dtype=np.uint8)
    if predictor.bitwise:
        return _decode_bits_readable(predictor, decoder, out)
    for i in range(length):
        cdf = quantize(predictor.predict())
        out[i] = decoder.decode(cdf)
        predictor.update(int(out[i]))
    return out
# --8<-- [end:predictive_loop]


def _encode_bits_readable(predictor, data, encoder):
    """Bitwise predictors: each byte is 8 binary decisions, most significant bit first."""
    for symbol in data:
        for k in range(7, -1, -1):
            bit = (int(symbol) >> k) & 1
            encoder.encode_bit(bit, predictor.predict_bit())
            predictor.update_bit(bit)
    return encoder.finish()


def _decode_bits_readable(predictor, decoder, out):
    for i in range(out.shape[0]):
        byte = 0
        for _ in range(8):
            bit = decoder.decode_bit(predictor.predict_bit())
            predictor.update_bit(bit)
            byte = (byte << 1) | bit
        out[i] = byte
    return out


def _progress_bar(length, progress, desc):
    """A tqdm bar on stderr (or None) following the ``progress`` policy: True, False or "auto"."""
    if progress == "auto":
        progress = length > PROGRESS_THRESHOLD
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=length, unit="B", unit_scale=True, desc=desc, leave=False)


def _tick(bar):
    return None if bar is None else bar.update


def min_bits_per_symbol(alphabet_size):
    """Fewest bits any symbol can cost after quantization: the most probable symbol
    has at most ``2**CDF_BITS - (alphabet_size - 1)`` of ``2**CDF_BITS`` units, and
    the coder's integer rounding can make its interval wider than that share of
    the range R by less than one unit, with R > 2**(CODER_PRECISION - 2)."""
    share = 1.0 - (alphabet_size - 1) / CDF_TOTAL + 2.0 ** -(CODER_PRECISION - 2)
    return -np.log2(share)


def max_decodable_length(payload_len, alphabet_size):
    """Most symbols a payload of ``payload_len`` bytes can hold (bounds decoder allocations)."""
    bits = 8 * payload_len + 64  # the decoder may look 32 bits past the end, reading zeros
    return int(bits / min_bits_per_symbol(alphabet_size)) + 1


def _readable_payload(predictor, arr):
    """``encode_readable``; per chunk for predictors that code each chunk as its own stream."""
    chunk = getattr(predictor, "chunk_streams", None)
    if not chunk:
        return encode_readable(predictor, arr)
    return container.pack_chunk_streams([encode_readable(predictor, arr[i:i + chunk])
                                         for i in range(0, arr.shape[0], chunk)])


def _readable_decode(predictor, payload, length):
    chunk = getattr(predictor, "chunk_streams", None)
    if not chunk:
        return decode_readable(predictor, payload, length)
    streams = container.unpack_chunk_streams(payload, length, chunk, max_stream_bytes(chunk))
    parts = [decode_readable(predictor, s, n) for s, n in zip(streams, container.chunk_lengths(length, chunk))]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint8)


def _readable_needs_cpu(predictor, path):
    if path == "readable" and predictor.backend != "cpu":
        raise ValueError(f"the readable path runs on the cpu backend only, not on {predictor.backend!r}")


def compress(data, spec=DEFAULT_SPEC, path="fused", progress="auto", backend="cpu"):
    """Compress ``data`` (bytes-like) with the predictor named by ``spec``; return ``.lmc`` bytes.

    ``backend`` picks the numeric backend (``cpu``, or ``cuda`` for the
    transformer on a GPU); the file records it and decoding uses the same one.
    """
    predictor = make_predictor(spec)
    predictor.use_backend(backend)
    _readable_needs_cpu(predictor, path)
    data = bytes(data)
    prefix, coded, flags = b"", data, 0
    codes = word_codes.choose(data) if predictor.word_codes else {}
    if codes:  # frequent words -> unused byte values; a prefix of the payload lists them
        coded = word_codes.encode(data, codes)
        prefix = word_codes.pack(codes, len(coded))
        flags = container.FLAG_WORD_CODES
        predictor.use_word_codes(codes.values())
    arr = np.frombuffer(coded, dtype=np.uint8)
    bar = _progress_bar(arr.shape[0], progress, "compress")
    try:
        payload = None
        if path == "fused":
            payload = predictor.fused_encode(arr, _tick(bar))
        elif path != "readable":
            raise ValueError(f"unknown coding path {path!r} (fused or readable)")
        if payload is None:
            payload = _readable_payload(predictor, arr)
    finally:
        if bar is not None:
            bar.close()
    header = container.Header(
        spec=predictor.spec,
        backend=predictor.backend,
        length=len(data),
        crc32=zlib.crc32(data),
        model_hash=predictor.model_hash,
        flags=flags,
    )
    return container.pack(header, prefix + payload)


def decompress(blob, path="fused", progress="auto", backend=None):
    """Decode a ``.lmc`` file's bytes, verify length and CRC-32, and return the original bytes.

    The file's header names the backend to decode on; ``backend``, if given,
    must agree with it (floats on another backend round differently).

    Raises:
        ValueError: the file is not a valid ``.lmc`` file, names a predictor or
            backend this installation cannot rebuild, or fails its checksum.
    """
    header, payload = container.unpack(blob)
    predictor = make_predictor(header.spec)
    if predictor.model_hash != header.model_hash:
        raise ValueError(
            f"model mismatch: file was made with model hash {header.model_hash.hex() or '(none)'}, "
            f"this predictor has {predictor.model_hash.hex() or '(none)'}"
        )
    if backend is not None and backend != header.backend:
        raise ValueError(f"backend mismatch: the file was coded on {header.backend!r} and decodes only there, "
                         f"not on {backend!r} (the backends round floats differently)")
    try:
        predictor.use_backend(header.backend)
    except ValueError as err:
        raise ValueError(f"backend mismatch: the file was coded on {header.backend!r}: {err}") from None
    _readable_needs_cpu(predictor, path)
    codes, length = {}, header.length
    if header.flags & container.FLAG_WORD_CODES:
        if not predictor.word_codes:
            raise ValueError(f"the header's word-codes flag is not valid for {header.spec!r}")
        codes, length, used = word_codes.unpack(payload, header.length)
        payload = payload[used:]
        predictor.use_word_codes(codes.values())
    limit = max_decodable_length(len(payload), predictor.alphabet_size)
    if length > limit:
        raise ValueError(
            f"header claims {length} coded bytes but a {len(payload)}-byte payload can hold at most {limit}"
        )
    bar = _progress_bar(length, progress, "decompress")
    try:
        out = None
        if path == "fused":
            out = predictor.fused_decode(payload, length, _tick(bar))
        elif path != "readable":
            raise ValueError(f"unknown coding path {path!r} (fused or readable)")
        if out is None:
            out = _readable_decode(predictor, payload, length)
    finally:
        if bar is not None:
            bar.close()
    out = out.tobytes()
    if codes:
        if word_codes.decoded_length(out, codes) != header.length:  # checked before the words are expanded
            raise ValueError("word codes: the decoded text does not expand to the original length (corrupt payload)")
        out = word_codes.decode(out, codes)
    if zlib.crc32(out) != header.crc32:
        raise ValueError("CRC-32 mismatch: the payload is corrupt (decoded data differs from the original)")
    return out


# ---------------------------------------------------------------------------
# Classical baselines (Table 1 rows and extra rows).
#
# Each adapter is a pure bytes -> bytes pair that round-trips any input.  Where
# a format cannot hold zero samples/pixels (PNG, FLAC), empty input compresses
# to empty output and back.  The container is not used: these are the paper's
# baselines, measured by their own output size.
# ---------------------------------------------------------------------------


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
