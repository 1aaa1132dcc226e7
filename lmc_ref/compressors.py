"""Compressors: a predictor plus the arithmetic coder, wrapped in the ``.lmc`` container.

``compress`` / ``decompress`` are the whole product in two functions.  They run
the loop of the paper's Section 2 -- predict, quantize, code, update -- either
in readable Python (``path="readable"``, any predictor) or in the predictor's
fused compiled loop (``path="fused"``, the default where a predictor has one).
Both paths emit identical bytes, which the tests check.
"""

import zlib

import numpy as np

from . import container
from .coder import ArithmeticDecoder, ArithmeticEncoder
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


def compress(data, spec=DEFAULT_SPEC, path="fused", progress="auto"):
    """Compress ``data`` (bytes-like) with the predictor named by ``spec``; return ``.lmc`` bytes."""
    predictor = make_predictor(spec)
    arr = np.frombuffer(bytes(data), dtype=np.uint8)
    bar = _progress_bar(arr.shape[0], progress, "compress")
    try:
        payload = None
        if path == "fused":
            payload = predictor.fused_encode(arr, _tick(bar))
        elif path != "readable":
            raise ValueError(f"unknown coding path {path!r} (fused or readable)")
        if payload is None:
            payload = encode_readable(predictor, arr)
    finally:
        if bar is not None:
            bar.close()
    header = container.Header(
        spec=predictor.spec,
        backend=predictor.backend,
        length=arr.shape[0],
        crc32=zlib.crc32(arr),
        model_hash=predictor.model_hash,
    )
    return container.pack(header, payload)


def decompress(blob, path="fused", progress="auto"):
    """Decode a ``.lmc`` file's bytes, verify length and CRC-32, and return the original bytes.

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
    if predictor.backend != header.backend:
        raise ValueError(f"backend mismatch: file needs {header.backend!r}, predictor runs on {predictor.backend!r}")
    limit = max_decodable_length(len(payload), predictor.alphabet_size)
    if header.length > limit:
        raise ValueError(
            f"header claims {header.length} bytes but a {len(payload)}-byte payload can hold at most {limit}"
        )
    bar = _progress_bar(header.length, progress, "decompress")
    try:
        out = None
        if path == "fused":
            out = predictor.fused_decode(payload, header.length, _tick(bar))
        elif path != "readable":
            raise ValueError(f"unknown coding path {path!r} (fused or readable)")
        if out is None:
            out = decode_readable(predictor, payload, header.length)
    finally:
        if bar is not None:
            bar.close()
    if zlib.crc32(out) != header.crc32:
        raise ValueError("CRC-32 mismatch: the payload is corrupt (decoded data differs from the original)")
    return out.tobytes()
