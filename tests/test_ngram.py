"""The adaptive n-gram predictor: spec strings, distributions, learning, bounded memory."""

import numpy as np
import pytest

from lmc_ref.codec import compress, decompress
from lmc_ref.predictors import make_predictor, parse_spec
from lmc_ref.predictors import ngram


def test_spec_is_canonical():
    assert make_predictor("ngram").spec == f"ngram:v=1,order={ngram.DEFAULT_ORDER},mem={ngram.DEFAULT_MEM}"
    assert make_predictor("ngram:mem=12,order=3").spec == "ngram:v=1,order=3,mem=12"
    assert make_predictor("ngram:v=1,order=3,mem=12").spec == "ngram:v=1,order=3,mem=12"
    assert parse_spec("ngram:order=3,mem=12") == ("ngram", {"order": "3", "mem": "12"})


@pytest.mark.parametrize(
    "spec",
    ["ngram:order=9", "ngram:order=-1", "ngram:mem=5", "ngram:mem=30", "ngram:order=x",
     "ngram:colour=red", "ngram:order", "ngram:order=3,order=4", "nope", "", "ngram:order=3,"],
)
def test_bad_specs_raise(spec):
    with pytest.raises(ValueError):
        make_predictor(spec)


def test_pdf_is_a_distribution_with_full_support():
    predictor = make_predictor("ngram:order=3,mem=10")
    for byte in b"hello hello hello":
        pdf = predictor.predict()
        assert pdf.shape == (256,)
        assert np.all(pdf > 0)
        assert abs(pdf.sum() - 1.0) < 1e-9
        predictor.update(byte)


def test_learns_a_repeated_pattern():
    predictor = make_predictor("ngram:order=4,mem=10")
    assert predictor.predict()[ord("b")] == pytest.approx(1 / 256)
    for byte in b"abcd" * 50:
        predictor.update(byte)
    assert predictor.predict()[ord("a")] > 0.95


def test_reset_forgets():
    predictor = make_predictor("ngram:order=2,mem=10")
    fresh = predictor.predict()
    for byte in b"xyzxyzxyz":
        predictor.update(byte)
    predictor.reset()
    assert np.array_equal(predictor.predict(), fresh)


def test_memory_is_bounded_by_the_spec():
    small = ngram.memory_bytes(6, 12)
    large = ngram.memory_bytes(6, 20)
    assert small < large
    assert make_predictor("ngram:order=6,mem=12")._pool.nbytes == small
    # Orders >= 3 get 2**mem slots each; 4 bytes per slot word.
    widths = [ngram.HEADER + ngram._entries_per_slot(k) for k in range(3, 7)]
    assert large - small == 4 * sum(widths) * ((1 << 20) - (1 << 12))


def test_hash_collisions_in_tiny_tables_still_round_trip():
    data = np.random.default_rng(5).integers(0, 40, 30000, dtype=np.uint8).tobytes()
    assert decompress(compress(data, "ngram:order=8,mem=10", progress=False), progress=False) == data


def test_count_halving_matches_between_paths(monkeypatch):
    """Force frequent halving (small count limit); both paths must still agree."""
    monkeypatch.setattr(ngram, "COUNT_LIMIT", 20)
    data = (b"aaaaaaaaab" * 40) + bytes(range(50)) * 4
    fused = compress(data, "ngram:order=3,mem=10", path="fused", progress=False)
    assert fused == compress(data, "ngram:order=3,mem=10", path="readable", progress=False)
    assert decompress(fused, progress=False) == data


def test_long_run_triggers_real_halving():
    data = b"z" * (ngram.COUNT_LIMIT + 5000)
    blob = compress(data, "ngram:order=1,mem=10", progress=False)
    assert decompress(blob, progress=False) == data
    assert len(blob) < 200


def test_compresses_text_better_than_order0(enwik8_head):
    data = enwik8_head[:50000]
    sizes = {k: len(compress(data, f"ngram:order={k},mem=16", progress=False)) for k in (0, 2, 4)}
    assert sizes[4] < sizes[2] < sizes[0] < len(data) * 0.7
