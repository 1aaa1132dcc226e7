"""The ``.lmc`` container and ``codec.decompress`` on damaged, truncated and foreign input.

Design rule 3: decoding checks every header field before allocating from it and
fails with a ``ValueError`` naming the problem; it never hangs and never
crashes the interpreter.  Every decode below runs on a ~200-byte file, so each
one takes milliseconds; a hang would show up as a stuck test.
"""

import gzip
import math
import random
import string
import struct
import zlib
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmc_ref import container
from lmc_ref.codec import (DEFAULT_SPEC, compress, decompress, max_decodable_length,
                                 min_bits_per_symbol)
from lmc_ref.constants import CDF_TOTAL
from lmc_ref.container import MAX_ORIGINAL_LENGTH, Header, pack, unpack

DATA = (b"Language modeling is compression: a model that predicts the next byte well "
        b"lets an arithmetic coder spend about -log2 p bits on it. " * 3)[:200]


@pytest.fixture(scope="module")
def blob():
    """A real ``.lmc`` file of DATA made with the default predictor."""
    out = compress(DATA, DEFAULT_SPEC)
    assert decompress(out) == DATA
    return out


@pytest.fixture(scope="module")
def header_size(blob):
    header, payload = unpack(blob)
    return len(blob) - len(payload)


def raw_pack(spec=b"ngram", model_hash=b"", backend=b"cpu", length=0, crc=0, payload=b"",
             version=container.VERSION, flags=0, spec_len=None, payload_len=None):
    """Build a container byte by byte, with a *correct* header checksum but no validation.

    This is how a hostile or buggy writer would make a file whose fields are
    wrong yet whose checksum passes, so ``unpack`` must check each field itself.
    """
    head = b"".join([
        container.MAGIC,
        struct.pack("<BBH", version, flags, len(spec) if spec_len is None else spec_len),
        spec,
        struct.pack("<B", len(model_hash)),
        model_hash,
        struct.pack("<B", len(backend)),
        backend,
        struct.pack("<QIQ", length, crc, len(payload) if payload_len is None else payload_len),
    ])
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def assert_rejected_or_equal(corrupted, path="fused"):
    """A damaged file must raise ValueError -- or, if the damage did not change what
    decodes (e.g. padding bits after the last symbol), give back exactly DATA."""
    try:
        out = decompress(corrupted, path=path, progress=False)
    except ValueError:
        return
    assert out == DATA


# ------------------------------------------------------------ pack/unpack ---

printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
backend_chars = st.sampled_from(string.ascii_letters + string.digits + "-_")
headers = st.builds(
    Header,
    spec=st.text(printable, min_size=1, max_size=container.MAX_SPEC_LENGTH),
    backend=st.text(backend_chars, min_size=1, max_size=container.MAX_BACKEND_LENGTH).filter(
        lambda b: any(c.isalnum() for c in b)),
    length=st.integers(0, MAX_ORIGINAL_LENGTH),
    crc32=st.integers(0, 2**32 - 1),
    model_hash=st.one_of(st.just(b""), st.binary(min_size=32, max_size=32)),
    flags=st.sampled_from([0, container.FLAG_WORD_CODES]),
)


@given(header=headers, payload=st.binary(max_size=300))
def test_pack_unpack_round_trip(header, payload):
    blob = pack(header, payload)
    assert unpack(blob) == (header, payload)
    assert unpack(bytearray(blob)) == (header, payload)
    assert unpack(memoryview(blob)) == (header, payload)


def test_real_file_header_fields(blob):
    header, payload = unpack(blob)
    assert header.version == container.VERSION
    assert header.spec.startswith(DEFAULT_SPEC)
    assert header.length == len(DATA) and header.crc32 == zlib.crc32(DATA)
    assert header.model_hash == b"" and header.backend == "cpu"
    assert 0 < len(payload) < len(DATA)


# ------------------------------------------------------------- corruption ---

@pytest.mark.parametrize("flip", [0x01, 0x80, 0xFF])
def test_every_header_byte_change_is_rejected(blob, header_size, flip):
    for pos in range(header_size):
        damaged = bytearray(blob)
        damaged[pos] ^= flip
        with pytest.raises(ValueError):
            decompress(bytes(damaged), progress=False)


def test_every_payload_byte_change_is_caught(blob, header_size):
    rng = random.Random(1234)
    for pos in range(header_size, len(blob)):
        damaged = bytearray(blob)
        damaged[pos] ^= rng.randrange(1, 256)
        assert_rejected_or_equal(bytes(damaged))


def test_payload_damage_mostly_fails_the_crc(blob, header_size):
    """Flipping the *first* payload byte changes the first symbols: always a CRC error."""
    damaged = bytearray(blob)
    damaged[header_size] ^= 0xFF
    with pytest.raises(ValueError, match="CRC-32 mismatch"):
        decompress(bytes(damaged))


@given(data=st.data())
def test_random_multi_byte_damage(blob, data):
    positions = data.draw(st.lists(st.integers(0, len(blob) - 1), min_size=1, max_size=8, unique=True))
    damaged = bytearray(blob)
    for pos in positions:
        damaged[pos] ^= data.draw(st.integers(1, 255))
    assert_rejected_or_equal(bytes(damaged))


def test_payload_damage_readable_path(blob, header_size):
    """The plain-Python decoder is as safe as the fused one."""
    for pos in (header_size, (header_size + len(blob)) // 2, len(blob) - 1):
        damaged = bytearray(blob)
        damaged[pos] ^= 0x5A
        assert_rejected_or_equal(bytes(damaged), path="readable")


def test_every_truncation_is_rejected(blob):
    for n in range(len(blob)):
        with pytest.raises(ValueError):
            decompress(blob[:n])


@pytest.mark.parametrize("tail", [b"\x00", b"junk", bytes(1000)])
def test_trailing_garbage_is_rejected(blob, tail):
    with pytest.raises(ValueError, match="payload length mismatch"):
        decompress(blob + tail)


@pytest.mark.parametrize("foreign", [
    b"",
    b"\x89",
    container.MAGIC,
    gzip.compress(DATA),
    b"\x89PNG\r\n\x1a\n" + bytes(40),
    random.Random(7).randbytes(500),
    DATA,
], ids=["empty", "one-byte", "magic-only", "gzip", "png", "random", "plain-text"])
def test_foreign_files_are_rejected(foreign):
    with pytest.raises(ValueError):
        decompress(foreign)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_after_the_magic(rest):
    with pytest.raises(ValueError):
        decompress(container.MAGIC + rest)


@given(payload=st.binary(max_size=64), length=st.integers(0, 2000), crc=st.integers(0, 2**32 - 1))
def test_garbage_payload_with_valid_header_terminates(blob, payload, length, crc):
    """A well-formed header over a random payload: the decoder runs its bounded loop,
    then the CRC-32 check decides.  No other exception, no hang."""
    header, _ = unpack(blob)
    forged = pack(Header(spec=header.spec, backend=header.backend, length=length, crc32=crc), payload)
    try:
        out = decompress(forged, progress=False)
    except ValueError:
        return
    assert len(out) == length and zlib.crc32(out) == crc


# ------------------------------------------------ lengths and allocations ---

@pytest.mark.parametrize("claim", [MAX_ORIGINAL_LENGTH, 10**12, "limit+1"])
def test_length_beyond_payload_capacity_is_rejected_before_allocating(blob, claim):
    header, payload = unpack(blob)
    if claim == "limit+1":
        claim = max_decodable_length(len(payload), 256) + 1
    forged = pack(Header(spec=header.spec, backend=header.backend, length=claim, crc32=header.crc32), payload)
    with pytest.raises(ValueError, match="can hold at most"):
        decompress(forged)


def test_capacity_bound_covers_coder_rounding():
    """``max_decodable_length`` must never reject a valid file.  The cheapest symbol has
    T - 255 of T = 2**24 units, and integer rounding can widen its interval by up to one
    unit of a range R > 2**30, so a symbol may cost as little as -log2((T-255)/T + 2**-30)."""
    share = Fraction(CDF_TOTAL - 255, CDF_TOTAL) + Fraction(1, 2**30)
    cheapest = -math.log1p(-float(1 - share)) / math.log(2)
    assert min_bits_per_symbol(256) <= cheapest * (1 + 1e-9)
    # A payload of P bytes holds at most 8P bits; the bound may add slack, never subtract.
    for payload_len in (0, 1, 10**3, 10**6, 10**9):
        assert max_decodable_length(payload_len, 256) >= 8 * payload_len / cheapest


def test_length_beyond_format_limit_is_rejected():
    with pytest.raises(ValueError, match="format limit"):
        unpack(raw_pack(length=MAX_ORIGINAL_LENGTH + 1))
    with pytest.raises(ValueError, match="format limit"):
        unpack(raw_pack(length=2**64 - 1))
    with pytest.raises(ValueError):
        pack(Header(spec="ngram", backend="cpu", length=MAX_ORIGINAL_LENGTH + 1, crc32=0), b"")


@pytest.mark.parametrize("payload_len", [0, 3, 5, 2**40, 2**64 - 1])
def test_payload_length_must_match_the_file(payload_len):
    with pytest.raises(ValueError, match="payload length mismatch"):
        unpack(raw_pack(payload=b"abcd", payload_len=payload_len))


def test_raw_pack_matches_pack():
    """The test helper writes exactly what ``pack`` writes, so the cases below are meaningful."""
    header = Header(spec="ngram:order=3", backend="cpu", length=5, crc32=99, model_hash=bytes(range(32)))
    assert raw_pack(b"ngram:order=3", bytes(range(32)), b"cpu", 5, 99, b"xyz") == pack(header, b"xyz")


# ------------------------------------------------------- field validation ---

@pytest.mark.parametrize("kwargs", [
    dict(spec=""),
    dict(spec="x" * (container.MAX_SPEC_LENGTH + 1)),
    dict(spec="ngram\n"),
    dict(spec="ngr\u00e4m"),
    dict(model_hash=b"\x00" * 16),
    dict(model_hash=b"\x00" * 33),
    dict(backend=""),
    dict(backend="c" * (container.MAX_BACKEND_LENGTH + 1)),
    dict(backend="cp u"),
    dict(backend="cpu/gpu"),
    dict(backend="-"),
    dict(backend="gp\u00fc"),
    dict(length=-1),
    dict(crc32=2**32),
    dict(crc32=-1),
    *[dict(version=v) for v in range(1, container.VERSION)],  # every older format
    dict(version=container.VERSION + 1),
], ids=lambda kw: next(iter(kw)))
def test_pack_rejects_bad_fields(kwargs):
    fields = dict(spec="ngram", backend="cpu", length=0, crc32=0)
    fields.update(kwargs)
    with pytest.raises(ValueError):
        pack(Header(**fields), b"")


def test_pack_rejects_oversized_payload():
    class Huge(bytes):
        def __len__(self):
            return container.MAX_PAYLOAD_LENGTH + 1

    with pytest.raises(ValueError, match="payload too large"):
        pack(Header(spec="ngram", backend="cpu", length=0, crc32=0), Huge())


@pytest.mark.parametrize("kwargs, message", [
    (dict(version=0), "version"),
    *[(dict(version=v), "version") for v in range(1, container.VERSION)],
    (dict(version=container.VERSION + 1), "version"),
    (dict(version=container.BLOCKS_VERSION + 1), "version"),
    (dict(flags=4), "flags"),
    (dict(flags=container.FLAG_STORED | container.FLAG_WORD_CODES), "flags"),
    (dict(flags=container.FLAG_STORED, length=5, payload=b"abc"), "stored"),
    (dict(flags=0x81), "flags"),
    (dict(spec=b"", spec_len=0), "spec length"),
    (dict(spec=b"x" * 1025), "spec length"),
    (dict(spec=b"x" * 2000, spec_len=2000), "spec length"),
    (dict(spec=b"ngr\xe4m"), "ASCII"),
    (dict(spec=b"ngram\x00"), "spec"),
    (dict(spec=b"ngram\n"), "spec"),
    (dict(model_hash=b"\x01" * 16), "hash length"),
    (dict(model_hash=b"\x01" * 255), "hash length"),
    (dict(backend=b""), "backend name length"),
    (dict(backend=b"c" * 33), "backend name length"),
    (dict(backend=b"cp u"), "backend"),
    (dict(backend=b"c\xffu"), "ASCII"),
], ids=lambda x: x if isinstance(x, str) else next(iter(x)))
def test_unpack_rejects_bad_fields_despite_valid_checksum(kwargs, message):
    blob = raw_pack(**kwargs)
    with pytest.raises(ValueError, match=message):
        unpack(blob)
    with pytest.raises(ValueError):
        decompress(blob)


@pytest.mark.parametrize("kwargs, message", [
    (dict(spec=b"nosuchmodel"), "unknown predictor"),
    (dict(spec=b"ngram:order"), "malformed"),
    (dict(spec=b"ngram:nosuchparam=1"), "unknown parameter"),
    (dict(model_hash=b"\x01" * 32), "model mismatch"),
    (dict(backend=b"cuda"), "backend mismatch"),
])
def test_decompress_rejects_what_it_cannot_rebuild(kwargs, message):
    with pytest.raises(ValueError, match=message):
        decompress(raw_pack(**kwargs))


def test_empty_original_round_trips():
    blob = compress(b"")
    assert unpack(blob)[0].length == 0
    assert decompress(blob) == b""


@pytest.mark.slow
def test_every_payload_byte_every_value():
    """Exhaustive: all 255 replacement values at every payload position (~40 s).

    Uses small hash tables (mem=10): the default 2**20 slots cost ~30 ms of page
    faults per decode, which is all set-up, not decoding.
    """
    blob = compress(DATA, "ngram:order=6,mem=10")
    header_size = len(blob) - len(unpack(blob)[1])
    for pos in range(header_size, len(blob)):
        for flip in range(1, 256):
            damaged = bytearray(blob)
            damaged[pos] ^= flip
            assert_rejected_or_equal(bytes(damaged))


# ------------------------------------------------------------ stored files ---

@pytest.mark.parametrize("spec", ["ngram:order=6,mem=10", "cm:mem=10"])
def test_random_bytes_are_stored_within_a_header_of_their_size(spec):
    """Coding random bytes costs more than the bytes; ``store=True`` keeps them as they are."""
    data = random.Random(21).randbytes(20_000)
    coded = compress(data, spec, progress=False)
    assert len(coded) > len(data)  # the model really would grow them
    blob = compress(data, spec, progress=False, store=True)
    header, payload = unpack(blob)
    assert header.stored and payload == data and header.flags == container.FLAG_STORED
    assert len(blob) - len(data) < 100  # the header only: <= 100.1 % from 100 kB on
    assert decompress(blob) == data


def test_compressible_data_is_coded_even_with_store():
    assert compress(DATA, progress=False, store=True) == compress(DATA, progress=False)


def test_stored_payload_damage_fails_the_crc():
    blob = bytearray(compress(bytes(range(256)), "ngram:mem=10", progress=False, store=True))
    assert unpack(bytes(blob))[0].stored
    blob[-1] ^= 1
    with pytest.raises(ValueError, match="CRC-32"):
        decompress(bytes(blob))


def test_stored_file_needs_no_model():
    """A stored file names the model tried, but decoding it builds none (an unknown one is fine)."""
    data = b"\x00\xff" * 10
    blob = pack(Header(spec="nosuchmodel", backend="cpu", length=len(data), crc32=zlib.crc32(data),
                       flags=container.FLAG_STORED), data)
    assert decompress(blob) == data


def test_unpack_header_needs_only_the_header(blob, header_size):
    header, start, payload_len = container.unpack_header(blob[:header_size])
    assert (header, start, payload_len) == (unpack(blob)[0], header_size, len(blob) - header_size)
    assert header_size <= container.MAX_HEADER_LENGTH
    longest = pack(Header(spec="x" * container.MAX_SPEC_LENGTH, backend="b" * container.MAX_BACKEND_LENGTH,
                          length=0, crc32=0, model_hash=bytes(32)), b"")
    assert len(longest) == container.MAX_HEADER_LENGTH


# ------------------------------------------------ bombs: refused up front ---

def test_max_output_refuses_before_decoding(blob, monkeypatch):
    import lmc_ref.blocks as blocks_module

    monkeypatch.setattr(blocks_module, "make_predictor", lambda *a, **k: pytest.fail("built a predictor"))
    with pytest.raises(ValueError, match="more than the limit of 199"):
        decompress(blob, max_output=199)
    monkeypatch.undo()
    assert decompress(blob, max_output=len(DATA)) == DATA


def test_capacity_is_checked_before_the_model_is_built(blob, monkeypatch):
    """The bound is applied from the predictor's class, before its tables (up to GBs) exist."""
    import lmc_ref.blocks as blocks_module

    header, payload = unpack(blob)
    forged = pack(Header(spec=header.spec, backend="cpu", length=10**12, crc32=0), payload)
    monkeypatch.setattr(blocks_module, "make_predictor", lambda *a, **k: pytest.fail("built a predictor"))
    with pytest.raises(ValueError, match="can hold at most"):
        decompress(forged)


def test_bitwise_bound_is_eight_times_tighter_and_a_declared_clamp_tighter_still(monkeypatch):
    """The issue's bomb: 1,000 payload bytes claiming 367,772,293 for cm.  Bits cost at least
    -log2(65535/65536) each, so the coder alone allows 8x fewer bytes; cm clamps every bit's
    probability to P_MAX/65536 (``max_bit_probability``), which allows 2.9 M."""
    from lmc_ref.predictors import predictor_class
    from lmc_ref.predictors.cm_apm import P_MAX

    from lmc_ref.blocks import min_bits_per_bitwise_byte, min_bits_per_symbol_of

    cm = predictor_class("cm")
    assert max_decodable_length(1000, 256) == 367_772_293
    assert max_decodable_length(1000, 256, min_bits_per_bitwise_byte()) < 367_772_293 / 7.9
    monkeypatch.setattr(cm, "max_bit_probability", P_MAX, raising=False)
    assert max_decodable_length(1000, 256, min_bits_per_symbol_of(cm)) < 3_000_000
    assert min_bits_per_symbol_of(predictor_class("ngram")) == min_bits_per_symbol(256)


def test_cm_bound_admits_its_most_compressible_input(monkeypatch):
    """All zeros drive every bit to the clamp: the tightest valid file must still decode."""
    from lmc_ref.predictors import predictor_class
    from lmc_ref.predictors.cm_apm import P_MAX

    from lmc_ref.blocks import min_bits_per_symbol_of

    monkeypatch.setattr(predictor_class("cm"), "max_bit_probability", P_MAX, raising=False)
    data = bytes(300_000)
    blob = compress(data, "cm:mem=10", progress=False)
    payload = unpack(blob)[1]
    assert len(data) > 0.9 * max_decodable_length(len(payload), 256, min_bits_per_symbol_of(predictor_class("cm")))
    assert decompress(blob) == data
    forged = pack(dataclasses_replace(unpack(blob)[0], length=int(1.2 * len(data))), payload)
    with pytest.raises(ValueError, match="can hold at most"):
        decompress(forged)


def dataclasses_replace(header, **fields):
    import dataclasses

    return dataclasses.replace(header, **fields)


def test_decoder_errors_become_value_errors(blob, monkeypatch):
    """Whatever a model loader or decoder raises on a bad file reaches the caller as ValueError."""
    import lmc_ref.blocks as blocks_module

    def broken(*args, **kwargs):
        raise IndexError("index 7 is out of bounds")

    monkeypatch.setattr(blocks_module, "make_predictor", broken)
    with pytest.raises(ValueError, match="IndexError: index 7"):
        decompress(blob)
