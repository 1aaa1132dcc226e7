"""One block of a ``.lmc`` file: a predictor plus the arithmetic coder (the paper's predictive loop).

This is the loop of the paper's Section 2 -- predict, quantize, code, update --
run either in readable Python (``path="readable"``, any predictor:
``encode_readable`` / ``decode_readable``) or in the predictor's fused
compiled loop (``path="fused"``, the default where a predictor has one).
Both paths emit identical bytes, which the tests check.

``encode_block`` codes one block of original bytes and ``decode_block``
decodes one; ``encoder_for`` / ``decoder_for`` build the predictor a block
needs, the decoder's from the header's spec and model hash alone.  Before a
decoder allocates anything, ``checked_capacity`` and ``max_decodable_length``
bound what a payload can hold, so a header that claims more than its payload
can code is refused at once; ``as_value_error`` turns whatever a loader or
decoder underneath raises for a bad file into ``ValueError``.

Tables are sized to the input (``Predictor.sized_for``, where a predictor has
it): the next power of two above what the input can fill, never more than the
spec's ``mem``; the header's spec records the size used, so the decoder
allocates the same.

Whole files -- one block in format 7, or many in format 8 -- are
``lmc_ref.streaming``'s; ``lmc_ref.codec`` is the public ``compress`` /
``decompress`` on top of it.
"""

import importlib
import math
import zlib

from . import container
from .constants import BIT_PROB_ONE, CDF_TOTAL, CODER_PRECISION
from .levels import DEFAULT_SPEC
from .predictors import make_predictor, parse_spec, predictor_class
from .progress import close, progress_bar, tick

# NumPy, the coder, quantization and word codes (and with them Numba) are
# imported on first use (``_Lazy``): a stored file decodes, and
# ``max_decodable_length`` answers, without them.


class _Lazy:
    """A module imported on its first attribute use (``np.uint8`` imports NumPy then)."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._name), attr)


np = _Lazy("numpy")
_coder = _Lazy("lmc_ref.coder")
_quantize = _Lazy("lmc_ref.quantize")
word_codes = _Lazy("lmc_ref.word_codes")


def quantize(pdf):
    """``lmc_ref.quantize.quantize``: the one float-to-integer rule."""
    return _quantize.quantize(pdf)


def ArithmeticEncoder():  # noqa: N802 - stands for the class it builds
    """A fresh ``lmc_ref.coder.ArithmeticEncoder``."""
    return _coder.ArithmeticEncoder()


def ArithmeticDecoder(payload):  # noqa: N802
    """An ``lmc_ref.coder.ArithmeticDecoder`` reading ``payload``."""
    return _coder.ArithmeticDecoder(payload)


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
    return -math.log2(share)


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
    streams = container.unpack_chunk_streams(payload, length, chunk, _coder.max_stream_bytes(chunk))
    parts = [decode_readable(predictor, s, n) for s, n in zip(streams, container.chunk_lengths(length, chunk))]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint8)


def _readable_needs_cpu(predictor, path):
    if path == "readable" and predictor.backend != "cpu":
        raise ValueError(f"the readable path runs on the cpu backend only, not on {predictor.backend!r}")



# ------------------------------------------------------------- one block ---

def encoder_for(spec, backend, model_dirs, path, length=None):
    """The predictor that compresses blocks of up to ``length`` bytes, tables sized to them
    (``length=None``: as ``spec`` says, for a spec already sized)."""
    predictor = make_predictor(spec, model_dirs=model_dirs)
    fit = getattr(predictor, "sized_for", None)
    if fit is not None and length is not None:
        predictor = fit(length)
    predictor.use_backend(backend)
    _readable_needs_cpu(predictor, path)
    return predictor


def encode_block(predictor, data, path, progress, store):
    """Code one block from a fresh model: ``(flags, payload)``; with ``store``, the block itself
    (``FLAG_STORED``) when coding would not make it smaller."""
    prefix, coded, flags = b"", data, 0
    codes = word_codes.choose(data) if predictor.word_codes else {}
    if codes:  # frequent words -> unused byte values; a prefix of the payload lists them
        coded = word_codes.encode(data, codes)
        prefix = word_codes.pack(codes, len(coded))
        flags = container.FLAG_WORD_CODES
    if predictor.word_codes:
        predictor.use_word_codes(codes.values())  # none: the model's own letters and classes
    arr = np.frombuffer(coded, dtype=np.uint8)
    payload = None
    if path == "fused":
        payload = predictor.fused_encode(arr, progress)
    elif path != "readable":
        raise ValueError(f"unknown coding path {path!r} (fused or readable)")
    if payload is None:
        payload = _readable_payload(predictor, arr)
    payload = prefix + payload
    if store and len(payload) >= len(data):  # coding does not pay: keep the bytes as they are
        return container.FLAG_STORED, data
    return flags, payload


def checked_capacity(cls, flags, payload, length, spec):
    """``(word codes, coded length, coded payload)`` of a coded block, refused if its payload cannot
    hold ``length`` bytes: checked before the model's tables and the output are allocated."""
    codes, coded_length = {}, length
    if flags & container.FLAG_WORD_CODES:
        if not cls.word_codes:
            raise ValueError(f"the word-codes flag is not valid for {spec!r}")
        codes, coded_length, used = word_codes.unpack(payload, length)
        payload = payload[used:]
    limit = max_decodable_length(len(payload), cls.alphabet_size, min_bits_per_symbol_of(cls))
    if coded_length > limit:
        raise ValueError(
            f"header claims {coded_length} coded bytes but a {len(payload)}-byte payload can hold at most {limit}"
        )
    return codes, coded_length, payload


def decoder_for(spec, model_hash, backend, model_dirs, path):
    """The predictor a file's header names, on its backend, its weights found by hash."""
    predictor = make_predictor(spec, stored=True, model_hash=model_hash, model_dirs=model_dirs)
    if predictor.model_hash != model_hash:
        raise ValueError(
            f"model mismatch: file was made with model hash {model_hash.hex() or '(none)'}, "
            f"this predictor has {predictor.model_hash.hex() or '(none)'}"
        )
    try:
        predictor.use_backend(backend)
    except ValueError as err:
        raise ValueError(f"backend mismatch: the file was coded on {backend!r}: {err}") from None
    _readable_needs_cpu(predictor, path)
    return predictor


def decode_block(predictor, codes, payload, coded_length, length, path, progress):
    """Decode one coded block (its capacity checked by ``checked_capacity``) to its original bytes."""
    if predictor.word_codes:
        predictor.use_word_codes(codes.values())
    out = None
    if path == "fused":
        out = predictor.fused_decode(payload, coded_length, progress)
    elif path != "readable":
        raise ValueError(f"unknown coding path {path!r} (fused or readable)")
    if out is None:
        out = _readable_decode(predictor, payload, coded_length)
    out = out.tobytes()
    if codes:
        if word_codes.decoded_length(out, codes) != length:  # checked before the words are expanded
            raise ValueError("word codes: the decoded text does not expand to the original length (corrupt payload)")
        out = word_codes.decode(out, codes)
    return out


def as_value_error(exc, length):
    """What a loader or decoder raised for a bad file, as the ``ValueError`` the API promises."""
    if isinstance(exc, ValueError):
        return exc
    if isinstance(exc, MemoryError):
        return ValueError(f"out of memory decoding {length} bytes")
    return ValueError(f"cannot decode: {type(exc).__name__}: {exc}")


def check_limits(length, max_output, backend, file_backend):
    """Refuse a file that would decode past ``max_output`` or on another backend than its own."""
    if max_output is not None and length > max_output:
        raise ValueError(f"would decode to {length} bytes, more than the limit of {max_output} (--max-output)")
    if backend is not None and backend != file_backend:
        raise ValueError(f"backend mismatch: the file was coded on {file_backend!r} and decodes only there, "
                         f"not on {backend!r} (the backends round floats differently)")

def decompress_whole(blob, path="fused", progress="auto", model_dirs=None):
    """Decode a whole format-7 file (one payload): ``container.unpack``, then the payload, then the CRC."""
    header, payload = container.unpack(blob)
    if header.stored:  # the payload is the original (its length was checked by unpack)
        out = payload
    else:
        try:
            cls = predictor_class(parse_spec(header.spec)[0])
            codes, coded_length, payload = checked_capacity(cls, header.flags, payload, header.length, header.spec)
            predictor = decoder_for(header.spec, header.model_hash, header.backend, model_dirs, path)
            bar = progress_bar(coded_length, progress, "decompress")
            try:
                out = decode_block(predictor, codes, payload, coded_length, header.length, path, tick(bar))
            finally:
                close(bar)
        except Exception as exc:
            raise as_value_error(exc, header.length) from None
    if zlib.crc32(out) != header.crc32:
        raise ValueError("CRC-32 mismatch: the payload is corrupt (decoded data differs from the original)")
    return out
