"""lmc_ref.word_codes: the word-replacing transform in front of ``cm`` is lossless and validates its prefix."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmc_ref import word_codes as W
from lmc_ref.codec import compress, decompress
from lmc_ref.container import unpack

SMALL = "cm:mem=10"
WORDS = [b"the", b"of", b"and", b"mixing", b"zz"]


def _text(n=300):
    """Text in which "the" occurs 3n times, "of" and "and" 2n, "end", "day", "rest", "night" n, "context" 10."""
    body = b"The end of the day, and the rest of the night and " * n
    return body + b"context " * 10 + b"The." + bytes([13, 10])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([*WORDS, b"The", b"theme", b" ", b", ", b"\n", b"x", bytes([0xE2, 0x80, 0x94])]),
                max_size=60),
       st.lists(st.sampled_from(WORDS), unique=True))
def test_decode_inverts_encode(parts, coded_words):
    data = b"".join(parts)
    free = [b for b in W.CODE_BYTES if b not in data]
    codes = dict(zip(coded_words, free))
    text = W.encode(data, codes)
    assert W.decoded_length(text, codes) == len(data)
    assert W.decode(text, codes) == data
    assert len(text) <= len(data)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([b"the", b"of", b"The", b"a", b" ", b"\n", b"x", b"\xff"]), max_size=80))
def test_blocks_never_cut_a_word(parts):
    data = b"".join(parts)
    codes = {b"the": 2, b"of": 3}
    whole = W.encode(data, codes)
    block = W.BLOCK
    try:
        W.BLOCK = 5
        pieces = list(W.blocks(data))
        small = W.encode(data, codes)
    finally:
        W.BLOCK = block
    assert b"".join(pieces) == data and all(pieces)
    for a, b in zip(pieces, pieces[1:]):
        assert not (a[-1:].isalpha() and b[:1].isalpha())
    assert small == whole


@given(st.binary(max_size=3000))
def test_arbitrary_bytes_round_trip_through_choose(data):
    codes = W.choose(data)
    assert W.decode(W.encode(data, codes), codes) == data


def test_choose_takes_frequent_lowercase_words_and_unused_code_bytes():
    data = _text() + bytes([0, 1])  # bytes 0 and 1 are used, so they cannot be codes
    codes = W.choose(data)
    # by count ("The" is not counted), ties by the word
    assert list(codes) == [b"the", b"and", b"of", b"day", b"end", b"night", b"rest"]
    assert list(codes.values()) == [2, 3, 4, 5, 6, 7, 8]
    text = W.encode(data, codes)
    assert text.startswith(b"The \x06 \x04 \x02 \x05, ") and b"context" in text  # capitalized, rare words stay


def test_choose_on_enwik8(enwik8_head):
    codes = W.choose(enwik8_head)
    assert list(codes)[:3] == [b"the", b"of", b"and"]
    assert all(c in W.CODE_BYTES and c not in enwik8_head for c in codes.values())
    assert len(W.encode(enwik8_head, codes)) < 0.95 * len(enwik8_head)


def test_pack_unpack_round_trip():
    codes = {b"the": 5, b"of": 127, b"and": 0xFF}
    buf = W.pack(codes, 1234) + b"payload"
    assert W.unpack(buf, 2000) == (codes, 1234, len(buf) - len(b"payload"))
    with pytest.raises(ValueError, match="words"):
        W.pack({}, 99)


@pytest.mark.parametrize("buf,message", [
    (b"", "empty"),
    (b"\x00" + bytes(8), "0 words"),
    (bytes([len(W.CODE_BYTES) + 1]) + bytes(8), "words, not"),
    (b"\x01" + (10).to_bytes(8, "little"), "truncated"),
    (b"\x01" + (5000).to_bytes(8, "little") + b"\x05\x03the", "exceeds"),
    (b"\x01" + (10).to_bytes(8, "little") + b"\x41\x03the", "not a code byte"),
    (b"\x01" + (10).to_bytes(8, "little") + b"\x05\x03The", "invalid word"),
    (b"\x01" + (10).to_bytes(8, "little") + b"\x05\x01a", "invalid word"),
    (b"\x01" + (10).to_bytes(8, "little") + b"\x05\x05th", "invalid word"),
    (b"\x02" + (10).to_bytes(8, "little") + b"\x05\x03the\x06\x03the", "repeated"),
    (b"\x02" + (10).to_bytes(8, "little") + b"\x05\x03the\x05\x02of", "repeated"),
])
def test_unpack_rejects_bad_prefixes(buf, message):
    with pytest.raises(ValueError, match=message):
        W.unpack(buf, 1000)


@pytest.mark.parametrize("path", ["fused", "readable"])
def test_cm_codes_words_and_round_trips(path):
    data = _text()
    blob = compress(data, SMALL, path=path, progress=False)
    _, payload = unpack(blob)
    codes, coded_length, _ = W.unpack(payload, len(data))
    assert list(codes)[:3] == [b"the", b"and", b"of"] and coded_length == len(W.encode(data, codes))
    assert decompress(blob, path=path, progress=False) == data
    assert blob == compress(data, SMALL, path="fused" if path == "readable" else "readable", progress=False)


def test_a_damaged_word_list_is_detected():
    data = _text()
    blob = bytearray(compress(data, SMALL, progress=False))
    header_len = len(blob) - len(unpack(bytes(blob))[1])
    at = bytes(blob).index(b"\x03the", header_len)
    blob[at + 2] = ord("x")  # "the" -> "xhe": the same length, a different text
    with pytest.raises(ValueError):
        decompress(bytes(blob), progress=False)


def test_without_frequent_words_the_file_has_no_word_list():
    data = b"context mixing " * 40
    header, payload = unpack(compress(data, SMALL, progress=False))
    assert header.flags == 0
    assert len(payload) < 60  # only the model's payload


def test_word_codes_flag_on_another_model_is_refused():
    from lmc_ref import container

    header, payload = unpack(compress(b"abc" * 100, "ngram:order=2,mem=12", progress=False))
    forged = container.pack(container.Header(spec=header.spec, backend=header.backend, length=header.length,
                                             crc32=header.crc32, flags=container.FLAG_WORD_CODES), payload)
    with pytest.raises(ValueError, match="word-codes flag"):
        decompress(forged, progress=False)


def test_word_models_treat_the_files_code_bytes_as_letters():
    from lmc_ref.predictors import make_predictor

    predictor = make_predictor(SMALL)
    assert predictor.letters.sum() == 52 and not predictor.letters[2]  # plain input: ASCII letters only
    predictor.use_word_codes([2, 0xFF])
    predictor.reset()  # the letters belong to the input, not to the model's state
    assert predictor.letters.sum() == 54 and predictor.letters[2] and predictor.letters[0xFF]
    for byte in b"x \x02":
        predictor.update(byte)
    assert predictor.word != 0  # the code byte is a word
