"""The codec: a predictor plus the arithmetic coder, wrapped in the ``.lmc`` container.

``compress`` / ``decompress`` are the whole product in two functions.  They run
the loop of the paper's Section 2 -- predict, quantize, code, update -- either
in readable Python (``path="readable"``, any predictor) or in the predictor's
fused compiled loop (``path="fused"``, the default where a predictor has one).
Both paths emit identical bytes, which the tests check.

The classical compressors it is measured against live in ``lmc_ref.baselines``.
"""

import zlib

import numpy as np

from . import container, word_codes
from .coder import ArithmeticDecoder, ArithmeticEncoder, max_stream_bytes
from .constants import CDF_TOTAL, CODER_PRECISION
from .predictors import make_predictor
from .progress import close, progress_bar, tick
from .quantize import quantize

DEFAULT_SPEC = "ngram"


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
    chunk = predictor.chunk_streams
    if not chunk:
        return encode_readable(predictor, arr)
    return container.pack_chunk_streams([encode_readable(predictor, arr[i:i + chunk])
                                         for i in range(0, arr.shape[0], chunk)])


def _readable_decode(predictor, payload, length):
    chunk = predictor.chunk_streams
    if not chunk:
        return decode_readable(predictor, payload, length)
    streams = container.unpack_chunk_streams(payload, length, chunk, max_stream_bytes(chunk))
    parts = [decode_readable(predictor, s, n) for s, n in zip(streams, container.chunk_lengths(length, chunk))]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint8)


def _readable_needs_cpu(predictor, path):
    if path == "readable" and predictor.backend != "cpu":
        raise ValueError(f"the readable path runs on the cpu backend only, not on {predictor.backend!r}")


def compress(data, spec=DEFAULT_SPEC, path="fused", progress="auto", backend="cpu", model_dirs=None):
    """Compress ``data`` (bytes-like) with the predictor named by ``spec``; return ``.lmc`` bytes.

    ``backend`` picks the numeric backend (``cpu``, or ``cuda`` for the
    transformer on a GPU); the file records it and decoding uses the same one.
    ``progress`` is the bar policy of ``lmc_ref.progress``: True, False, or
    "auto" (on a terminal, for inputs over 4 MiB); ``decompress`` takes the same.
    ``model_dirs``: folders searched first for a model named by hash
    (``transformer:model=HASH``); the header records the model's hash, not a path.
    """
    predictor = make_predictor(spec, model_dirs=model_dirs)
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
    bar = progress_bar(arr.shape[0], progress, "compress")
    try:
        payload = None
        if path == "fused":
            payload = predictor.fused_encode(arr, tick(bar))
        elif path != "readable":
            raise ValueError(f"unknown coding path {path!r} (fused or readable)")
        if payload is None:
            payload = _readable_payload(predictor, arr)
    finally:
        close(bar)
    header = container.Header(
        spec=predictor.spec,
        backend=predictor.backend,
        length=len(data),
        crc32=zlib.crc32(data),
        model_hash=predictor.model_hash,
        flags=flags,
    )
    return container.pack(header, prefix + payload)


def decompress(blob, path="fused", progress="auto", backend=None, model_dirs=None):
    """Decode a ``.lmc`` file's bytes, verify length and CRC-32, and return the original bytes.

    The file's header names the backend to decode on; ``backend``, if given,
    must agree with it (floats on another backend round differently).
    Trained weights are found by the header's model hash, never by a path:
    in the folders ``model_dirs`` (searched first), ``LMC_REF_MODELS`` and the
    user model store (``lmc_ref.models``).

    Raises:
        ValueError: the file is not a valid ``.lmc`` file, names a predictor or
            backend this installation cannot rebuild, or fails its checksum.
    """
    header, payload = container.unpack(blob)
    predictor = make_predictor(header.spec, stored=True, model_hash=header.model_hash, model_dirs=model_dirs)
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
    bar = progress_bar(length, progress, "decompress")
    try:
        out = None
        if path == "fused":
            out = predictor.fused_decode(payload, length, tick(bar))
        elif path != "readable":
            raise ValueError(f"unknown coding path {path!r} (fused or readable)")
        if out is None:
            out = _readable_decode(predictor, payload, length)
    finally:
        close(bar)
    out = out.tobytes()
    if codes:
        if word_codes.decoded_length(out, codes) != header.length:  # checked before the words are expanded
            raise ValueError("word codes: the decoded text does not expand to the original length (corrupt payload)")
        out = word_codes.decode(out, codes)
    if zlib.crc32(out) != header.crc32:
        raise ValueError("CRC-32 mismatch: the payload is corrupt (decoded data differs from the original)")
    return out
