"""Compressors as generative models: the samplers, on tiny inputs."""

import json

import numpy as np

from lmc_ref.cli import main
from lmc_ref.experiments import generate


def test_code_length_pdf_prefers_the_continuation_that_compresses():
    context = b"abcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcab"
    for name in ("gzip", "lzma"):
        pdf = generate.code_length_pdf(name, context)
        assert pdf.shape == (256,) and abs(pdf.sum() - 1) < 1e-12
        assert pdf[ord("c")] >= pdf.max() - 1e-12 or pdf[ord("c")] > 1 / 256


def test_gzip_state_copy_matches_recompression():
    context = b"the quick brown fox jumps over the lazy dog " * 5
    bits = generate.candidate_bits("gzip", context)
    import zlib

    direct = np.array([len(zlib.compress(context + bytes([b]), 9)) for b in range(256)]) * 8
    # Same lengths up to a constant (zlib's 2-byte header + 4-byte trailer).
    assert np.all(direct - bits == direct[0] - bits[0])


def test_sampling_is_seeded_and_sized():
    context = b"hello hello hello hello "
    for name in ("gzip", "ngram:order=3,mem=10"):
        a = generate.sample(name, context, 12, np.random.default_rng(1))
        b = generate.sample(name, context, 12, np.random.default_rng(1))
        assert a == b and len(a) == 12


def test_image_completion_keeps_first_halves():
    gray = (np.arange(40 * 60).reshape(40, 60) % 251).astype(np.uint8)
    crop, out = generate.image_completion(gray, "ngram:order=2,mem=10", np.random.default_rng(0), shape=(4, 8))
    assert crop.shape == out.shape == (4, 8)
    assert np.array_equal(crop[:, :4], out[:, :4])


def test_cli_text_only(tmp_path, enwik8_head, monkeypatch):
    text = tmp_path / "enwik8_head"
    text.write_bytes(enwik8_head[:4096])
    monkeypatch.delenv("LMC_REF_DATA", raising=False)
    monkeypatch.setattr(generate, "TEXT_BYTES", 5)
    monkeypatch.setattr(generate, "TEXT_CONTEXT", 64)
    monkeypatch.setattr(generate, "CLASSICAL_TEXT", ("gzip",))
    monkeypatch.setattr(generate, "PREDICTOR_SPECS", {"ngram": "ngram:order=2,mem=10"})
    out = tmp_path / "out"
    assert main(["experiment", "generate", "--text", str(text), "--out", str(out)]) == 0
    result = json.loads((out / "generate.json").read_text())
    assert set(result["text"]["samples"]) == {"gzip", "ngram:order=2,mem=10"}
    assert all(len(v) == 5 for v in result["text"]["samples"].values())
    assert "**gzip:**" in (out / "generate.md").read_text()
