"""Byte-level BPE: lossless on arbitrary bytes, deterministic, and it shortens text."""

import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmc_ref.tokenizer import BPETokenizer


@pytest.fixture(scope="module")
def tok(enwik8_head):
    return BPETokenizer.train(enwik8_head[:100_000], 512)


@given(st.binary(max_size=3000))
def test_round_trip_arbitrary_bytes(tok, data):
    ids = tok.encode(data)
    assert ids.dtype == np.int64 and (ids.size == 0 or ids.max() < tok.vocab_size)
    assert tok.decode(ids) == data


def test_training_is_deterministic_and_shortens_text(enwik8_head, tok):
    again = BPETokenizer.train(enwik8_head[:100_000], 512)
    assert np.array_equal(again.merges, tok.merges) and tok.vocab_size == 512
    text = enwik8_head[200_000:220_000]
    assert len(tok.encode(text)) < 0.6 * len(text)


def test_small_example_by_hand():
    t = BPETokenizer.train(b"aaabdaaabac", 259)
    # Most frequent pair (a, a) first; ties break towards the smaller pair.
    assert t.merges[0].tolist() == [ord("a"), ord("a")]
    assert t.decode(t.encode(b"aaabdaaabac")) == b"aaabdaaabac"


def test_training_on_training_data_equals_encoding_it(enwik8_head):
    data = enwik8_head[:30_000]
    t = BPETokenizer.train(data, 300)
    assert t.decode(t.encode(data)) == data


def test_save_load(tmp_path, tok):
    tok.save(tmp_path / "bpe.npz")
    loaded = BPETokenizer.load(tmp_path / "bpe.npz")
    assert np.array_equal(loaded.merges, tok.merges)


def test_bad_merges_and_tokens_raise():
    with pytest.raises(ValueError):
        BPETokenizer([[300, 1]])
    with pytest.raises(ValueError):
        BPETokenizer([]).decode([256])
    with pytest.raises(ValueError):
        BPETokenizer.train(b"abc", 100)


def test_5k_vocabulary_on_1mb_takes_seconds(enwik8_head):
    t0 = time.perf_counter()
    t = BPETokenizer.train(enwik8_head, 5000)
    seconds = time.perf_counter() - t0
    assert t.vocab_size == 5000
    assert seconds < 60  # the issue asks for seconds; generous for a loaded CI machine
