"""The evaluation protocol: header-once arithmetic, adjusted rate, verified rates."""

import numpy as np
import pytest

from lmc_ref import data
from lmc_ref.baselines import CLASSICAL
from lmc_ref.evaluate import Rate, classical_rate, header_once, ideal_code_length, predictive_rate
from lmc_ref.predictors import Predictor, make_predictor


def test_header_once_arithmetic():
    assert header_once([30, 40, 50], 20) == 120 - 2 * 20
    assert header_once([30], 20) == 30
    assert header_once([], 20) == 0


def test_rates_and_adjusted_rate():
    r = Rate("m", True, 4, raw_bytes=8192, compressed_bytes=2048, model_bytes=1024, ideal_bits=8 * 2000.0)
    assert r.rate == pytest.approx(25.0)
    assert r.adjusted_rate == pytest.approx(37.5)
    assert r.ideal_rate == pytest.approx(100 * 2000 / 8192)
    # A 200K-parameter model at 2 bytes per parameter dwarfs a small data set.
    big = Rate("t", True, 1, raw_bytes=100_000, compressed_bytes=30_000, model_bytes=2 * 200_000)
    assert big.adjusted_rate > 400


def test_classical_chunked_matches_manual_arithmetic():
    chunks = [bytes(range(256)) * 8, b"a" * 2048, b"xyz" * 600]
    r = classical_rate("gzip", chunks)
    comp = CLASSICAL["gzip"]
    expected = sum(len(comp.compress(c)) for c in chunks) - 2 * len(comp.compress(b"\x00"))
    assert (r.compressed_bytes, r.n_chunks, r.raw_bytes, r.verified) == (expected, 3, sum(map(len, chunks)), True)
    whole = classical_rate("gzip", chunks, chunked=False)
    assert whole.compressed_bytes == len(comp.compress(b"".join(chunks)))


@pytest.mark.parametrize("name, expected", [("gzip", 47.76), ("lzma", 49.90)])
def test_paper_protocol_on_enwik8_head(enwik8_head, name, expected):
    """The issue's check: these are the paper's functions on this file."""
    chunks = list(data.text_chunks(enwik8_head))
    assert len(chunks) == 522
    assert classical_rate(name, chunks).rate == pytest.approx(expected, abs=0.05)


def test_predictive_rate_is_verified_and_close_to_ideal(enwik8_head):
    from lmc_ref.codec import compress
    from lmc_ref.container import unpack

    chunks = list(data.text_chunks(enwik8_head[: 3 * 2048]))
    r = predictive_rate("ngram:order=4,mem=14", chunks)
    assert r.verified and r.n_chunks == 3 and r.model_bytes == 0
    payloads = [len(unpack(compress(c, "ngram:order=4,mem=14", progress=False))[1]) for c in chunks]
    header = r.compressed_bytes - sum(payloads)
    assert 0 < header < 100  # one .lmc header for the whole set
    # Each payload is within 9 bits of termination and padding of the quantized model,
    # whose cost is within 0.01 % of the float model's ideal length.
    assert r.ideal_bits / 8 <= sum(payloads) <= r.ideal_bits / 8 * 1.0001 + 3 * 2
    assert r.adjusted_rate == r.rate  # adaptive: nothing to add


def test_fast_ideal_length_equals_readable_loop(enwik8_head):
    text = enwik8_head[:1500]
    predictor = make_predictor("ngram:order=3,mem=12")
    fast = ideal_code_length(predictor, text)
    slow = Predictor.ideal_bits(predictor, np.frombuffer(text, np.uint8))  # the readable predict/update loop
    assert fast == pytest.approx(slow, rel=1e-12)


def test_round_trip_failure_is_reported(monkeypatch):
    from lmc_ref import evaluate

    broken = evaluate.CLASSICAL["gzip"].__class__("gzip", lambda b: b, lambda b: b[:-1])
    monkeypatch.setitem(evaluate.CLASSICAL, "gzip", broken)
    with pytest.raises(AssertionError):
        classical_rate("gzip", [b"abc"])
    np.testing.assert_equal(classical_rate("gzip", [b"abc"], verify=False).verified, False)


def test_progress_bar_policy(enwik8_head, capsys):
    """``progress=True`` draws a bar of chunks on stderr; False, and "auto" off a terminal, none."""
    from lmc_ref.evaluate import evaluate

    chunks = [enwik8_head[i:i + 256] for i in range(0, 1024, 256)]
    for policy in (False, "auto"):
        evaluate("gzip", chunks, progress=policy)
        assert capsys.readouterr().err == ""
    evaluate("gzip", chunks, progress=True)
    err = capsys.readouterr().err
    assert "gzip:" in err and "chunk" in err
