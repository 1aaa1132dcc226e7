"""The codec: a predictor plus the arithmetic coder, wrapped in the ``.lmc`` container.

``compress`` / ``decompress`` are the whole product in two functions.  They run
the loop of the paper's Section 2 -- predict, quantize, code, update -- either
in readable Python (``path="readable"``, any predictor) or in the predictor's
fused compiled loop (``path="fused"``, the default where a predictor has one).
Both paths emit identical bytes, which the tests check.

Two guards make it a compressor to trust with any input:

* ``compress(..., store=True)`` writes a *stored* file (``container.FLAG_STORED``:
  the original bytes, uncoded) when coding would not make the data smaller,
  so incompressible input grows by the header only (as gzip, xz and zstd
  store incompressible blocks).  The default, ``store=False``, always codes:
  evaluation measures what the model's code costs, which a stored file would hide.
* ``decompress`` refuses, before building the model or allocating the output,
  a header that claims more bytes than ``max_output`` or than its payload can
  code (``max_decodable_length``), and raises ``ValueError`` for every kind of
  bad input, whatever a loader or decoder underneath raised.

The classical compressors it is measured against live in ``lmc_ref.baselines``.
"""

import math
import zlib

import numpy as np

from . import container, word_codes
from .coder import ArithmeticDecoder, ArithmeticEncoder, max_stream_bytes
from .constants import BIT_PROB_ONE, CDF_TOTAL, CODER_PRECISION
from .levels import DEFAULT_SPEC
from .predictors import make_predictor, parse_spec, predictor_class
from .progress import close, progress_bar, tick
from .quantize import quantize


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


def min_bits_per_bitwise_byte(max_bit_probability=BIT_PROB_ONE - 1):
    """Fewest bits a byte can cost under a bitwise predictor: 8 binary decisions, each
    at most ``max_bit_probability`` of ``2**16`` units likely (the coder takes 1 .. 2**16 - 1;
    a predictor may clamp tighter and declare it as ``max_bit_probability``), plus the
    same rounding slack as ``min_bits_per_symbol``."""
    share = max_bit_probability / BIT_PROB_ONE + 2.0 ** -(CODER_PRECISION - 2)
    return -8 * math.log2(share)


def min_bits_per_symbol_of(cls):
    """The cheapest a coded symbol can be under predictor class ``cls`` (from its declared capabilities)."""
    if cls.bitwise:
        return min_bits_per_bitwise_byte(getattr(cls, "max_bit_probability", BIT_PROB_ONE - 1))
    return min_bits_per_symbol(cls.alphabet_size)


def max_decodable_length(payload_len, alphabet_size, symbol_bits=None):
    """Most symbols a payload of ``payload_len`` bytes can hold (bounds decoder allocations).

    ``symbol_bits`` is the least a symbol can cost (default: ``min_bits_per_symbol(alphabet_size)``,
    what the quantized CDF allows; ``min_bits_per_symbol_of`` gives a predictor's own).
    """
    bits = 8 * payload_len + 64  # the decoder may look 32 bits past the end, reading zeros
    return int(bits / (symbol_bits or min_bits_per_symbol(alphabet_size))) + 1


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


def compress(data, spec=DEFAULT_SPEC, path="fused", progress="auto", backend="cpu", model_dirs=None,
             store=False):
    """Compress ``data`` (bytes-like) with the predictor named by ``spec``; return ``.lmc`` bytes.

    ``store=True``: if the coded payload would not be smaller than ``data``,
    write a stored file instead (the original bytes; the header still names
    the predictor that was tried).  ``lmc-ref`` always asks for it.

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
    payload = prefix + payload
    if store and len(payload) >= len(data):  # coding does not pay: keep the bytes as they are
        payload, flags = data, container.FLAG_STORED
    header = container.Header(
        spec=predictor.spec,
        backend=predictor.backend,
        length=len(data),
        crc32=zlib.crc32(data),
        model_hash=predictor.model_hash,
        flags=flags,
    )
    return container.pack(header, payload)


def decompress(blob, path="fused", progress="auto", backend=None, model_dirs=None, max_output=None):
    """Decode a ``.lmc`` file's bytes, verify length and CRC-32, and return the original bytes.

    The file's header names the backend to decode on; ``backend``, if given,
    must agree with it (floats on another backend round differently).
    Trained weights are found by the header's model hash, never by a path:
    in the folders ``model_dirs`` (searched first), ``LMC_REF_MODELS`` and the
    user model store (``lmc_ref.models``).  ``max_output``: refuse, before
    decoding, a file that would decode to more than this many bytes.

    Raises:
        ValueError: for every bad input -- the file is not a valid ``.lmc``
            file, claims more output than ``max_output`` or than its payload
            can code, names a predictor or backend this installation cannot
            rebuild, or fails its checksum.  Whatever a model loader or decoder
            underneath raises for a bad file is re-raised as ``ValueError``.
    """
    header, payload = container.unpack(blob)
    if max_output is not None and header.length > max_output:
        raise ValueError(f"would decode to {header.length} bytes, more than the limit of {max_output} "
                         "(--max-output)")
    if backend is not None and backend != header.backend:
        raise ValueError(f"backend mismatch: the file was coded on {header.backend!r} and decodes only there, "
                         f"not on {backend!r} (the backends round floats differently)")
    if header.stored:  # the payload is the original (its length was checked by unpack)
        out = payload
    else:
        try:
            out = _decode(header, payload, path, progress, model_dirs)
        except ValueError:
            raise
        except MemoryError:
            raise ValueError(f"out of memory decoding {header.length} bytes") from None
        except Exception as exc:  # a loader's or decoder's own error on a bad file: still bad input
            raise ValueError(f"cannot decode: {type(exc).__name__}: {exc}") from exc
    if zlib.crc32(out) != header.crc32:
        raise ValueError("CRC-32 mismatch: the payload is corrupt (decoded data differs from the original)")
    return out


def _decode(header, payload, path, progress, model_dirs):
    """Decode a coded (not stored) payload; checked for length before the predictor is built."""
    cls = predictor_class(parse_spec(header.spec)[0])
    codes, length = {}, header.length
    if header.flags & container.FLAG_WORD_CODES:
        if not cls.word_codes:
            raise ValueError(f"the header's word-codes flag is not valid for {header.spec!r}")
        codes, length, used = word_codes.unpack(payload, header.length)
        payload = payload[used:]
    limit = max_decodable_length(len(payload), cls.alphabet_size, min_bits_per_symbol_of(cls))
    if length > limit:  # before the model's tables and the output are allocated
        raise ValueError(
            f"header claims {length} coded bytes but a {len(payload)}-byte payload can hold at most {limit}"
        )
    predictor = make_predictor(header.spec, stored=True, model_hash=header.model_hash, model_dirs=model_dirs)
    if predictor.model_hash != header.model_hash:
        raise ValueError(
            f"model mismatch: file was made with model hash {header.model_hash.hex() or '(none)'}, "
            f"this predictor has {predictor.model_hash.hex() or '(none)'}"
        )
    try:
        predictor.use_backend(header.backend)
    except ValueError as err:
        raise ValueError(f"backend mismatch: the file was coded on {header.backend!r}: {err}") from None
    _readable_needs_cpu(predictor, path)
    if codes:
        predictor.use_word_codes(codes.values())
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
    return out
