"""The in-context experiment: per-byte costs of a token model, attribution, buckets, report files.

A tiny random Llama model (a GGUF written with ``gguf.GGUFWriter`` as
``test_gguf_file`` does) with a small vocabulary of single letters, a few
merges, the two halves of the UTF-8 character ``é`` as separate tokens, and no
token for most other bytes (so they are escaped) stands in for SmolLM2.
"""

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_gguf_file import TINY, write_gguf

from lmc_ref.cli import main
from lmc_ref.experiments import in_context as ic
from lmc_ref.transformer import gguf_file, llama, llama_cpu
from lmc_ref.transformer.gguf_file import read_gguf

#: Single-character tokens: 'a'..'z', space ('Ġ'), '.', and 'Ã' '©' (the UTF-8 bytes of 'é', which
#: latin1 makes of the data byte 0xE9 and which never merge); every other byte is escaped.
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["Ġ", ".", "Ã", "©"]
MERGES = ["t h", "th e", "Ġ a", "a b", "ab c"]
TOKENS = ["<|endoftext|>", "<s>", "</s>"] + LETTERS + [m.replace(" ", "") for m in MERGES]
TEXT = b"the abc. thex abcabc the\x04 caf\xe9 \xe9t\xe9 XYZ the end. " * 3


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.gguf"
    tokenizer = {"tokens": TOKENS, "merges": MERGES, "types": [3, 3, 3] + [1] * (len(TOKENS) - 3),
                 "bos": 1, "eos": 2}
    write_gguf(path, config={**TINY, "vocab": len(TOKENS)}, tokenizer=tokenizer)
    return path


@pytest.fixture(scope="module")
def tiny_llm(tiny_gguf):
    return ic.LlmCosts(tiny_gguf)


def test_tiny_vocabulary_makes_escapes_merges_and_split_characters(tiny_llm):
    tok = tiny_llm.tokenizer
    symbols = tok.encode(TEXT).tolist()
    assert any(s >= tok.vocab_size for s in symbols)  # 'X', 'Y', 'Z', 0x04 are escaped
    assert TOKENS.index("the") in symbols and TOKENS.index("abc") in symbols
    assert TOKENS.index("Ã") in symbols and TOKENS.index("©") in symbols  # 0xE9: two tokens, one data byte


def test_llm_costs_are_the_models_code_length(tiny_llm, tiny_gguf):
    """Per-token costs equal -log2 p from a forward over each prefix alone (+ 8 bits per escape), the
    per-byte costs sum to them, and the coder's kernel (``llama_cpu``) gives the same total."""
    w = read_gguf(tiny_gguf)
    tok, vocab = tiny_llm.tokenizer, w.config["vocab"]
    symbols, bits = tiny_llm.symbol_bits(TEXT, rows=7)  # several row blocks of the log-softmax
    inputs = [1] + [tok.escape_token if s >= vocab else s for s in symbols.tolist()]
    independent = []
    for t, s in enumerate(symbols.tolist()):
        logp = llama.log_softmax(llama.forward(w.tensors, w.config, inputs[:t + 1])[-1])
        independent.append(-logp[tok.escape_token if s >= vocab else s] / math.log(2) + 8 * (s >= vocab))
    np.testing.assert_allclose(bits, independent, rtol=1e-5, atol=1e-6)
    costs = tiny_llm.byte_costs(TEXT)
    assert costs.shape == (len(TEXT),) and np.all(costs > 0)
    assert math.isclose(costs.sum(), sum(independent), rel_tol=1e-9)
    packed = llama_cpu.pack_weights(dict(w.tensors), w.config)
    _, coder_bits = llama_cpu.encode_group(packed, w.config, [symbols], 1, tok.escape_token)
    assert math.isclose(costs.sum(), coder_bits, rel_tol=1e-3)


def _coverage(tiny_llm, data, how):
    """``[tokens, bytes]``: the share of each token's cost that each data byte receives."""
    tok = tiny_llm.tokenizer
    symbols = tok.encode(data)
    lengths = [len(tok.symbol_bytes(s)) for s in symbols.tolist()]
    owners = ic.stream_owners(data, "latin1", tok.pre)
    return lengths, np.stack([ic.attribute(np.eye(len(symbols))[k], lengths, owners, len(data), how)
                              for k in range(len(symbols))])


def test_attribution_covers_every_byte_exactly_once(tiny_llm):
    ascii_text = TEXT.replace(b"\xe9", b"e")
    lengths, share = _coverage(tiny_llm, ascii_text, "spread")
    assert np.array_equal((share > 0).sum(axis=0), np.ones(len(ascii_text)))  # one token per byte
    assert np.array_equal((share > 0).sum(axis=1), lengths)  # a token covers the bytes it spells
    np.testing.assert_allclose(share.sum(axis=1), 1.0)  # and shares out all of its cost
    covered = np.flatnonzero(share.any(axis=0))
    assert covered.tolist() == list(range(len(ascii_text)))
    _, last = _coverage(tiny_llm, ascii_text, "last")
    assert np.array_equal((last > 0).sum(axis=1), np.ones(len(lengths)))  # all of a token on one byte
    ends = np.cumsum(lengths) - 1
    assert np.array_equal(last.argmax(axis=1), ends)  # ... its last byte


def test_a_split_character_gets_the_shares_of_both_of_its_tokens(tiny_llm):
    data = b"caf\xe9"
    lengths, share = _coverage(tiny_llm, data, "spread")
    assert lengths[-2:] == [1, 1]  # 'Ã' and '©' spell the two stream bytes of the data byte 0xE9
    assert share[-2:, 3].tolist() == [1.0, 1.0] and np.allclose(share.sum(axis=1), 1.0)


@given(st.binary(min_size=1, max_size=300), st.sampled_from(list(ic.ATTRIBUTIONS)))
def test_attribution_keeps_the_total(tiny_llm, data, how):
    tok = tiny_llm.tokenizer
    symbols = tok.encode(data)
    lengths = [len(tok.symbol_bytes(s)) for s in symbols.tolist()]
    owners = ic.stream_owners(data, "latin1", tok.pre)
    bits = np.random.default_rng(len(data)).uniform(0, 20, len(symbols))
    costs = ic.attribute(bits, lengths, owners, len(data), how)
    assert costs.shape == (len(data),) and math.isclose(costs.sum(), bits.sum(), rel_tol=1e-9)
    if how == "spread":  # one bit per stream byte: a data byte costs its width (2 for >= 0x80 under latin1)
        widths = ic.attribute(np.array(lengths, float), lengths, owners, len(data), how)
        assert widths.tolist() == [1.0 + (b >= 0x80) for b in data]


def test_attribution_rejects_inconsistent_lengths():
    with pytest.raises(ValueError, match="add up"):
        ic.attribute([1.0, 2.0], [1, 1], np.arange(3), 3)
    with pytest.raises(ValueError, match="unknown attribution"):
        ic.attribute([1.0], [1], np.arange(1), 1, how="first")


def test_buckets_and_prefixes_average_correctly():
    rng = np.random.default_rng(0)
    costs = rng.uniform(0, 8, (3, 2048))
    rates = ic.bucket_rates(costs)
    assert len(rates) == 16
    for i, r in enumerate(rates):
        block = costs[:, i * 128:(i + 1) * 128]
        assert math.isclose(r, 100 * block.sum() / (8 * block.size))
    cumulative = ic.cumulative_rates(costs)
    assert len(cumulative) == len(ic.PREFIXES)
    for p, r in zip(ic.PREFIXES, cumulative):
        assert math.isclose(r, np.mean([100 * c[:p].sum() / (8 * p) for c in costs]))
    assert math.isclose(cumulative[-1], np.mean(rates))  # the whole chunk: the mean of its buckets
    assert ic.bucket_rates(np.full((2, 256), 4.0)) == [50.0, 50.0]
    with pytest.raises(ValueError):
        ic.bucket_rates(np.zeros((2, 100)))


def test_pick_spreads_evenly():
    assert ic.pick(list(range(10)), 4) == [0, 3, 6, 9]
    assert ic.pick([1, 2], 4) == [1, 2]


def _tiny_checkpoint(path, train_bytes):
    from lmc_ref.transformer import model as tf
    from lmc_ref.transformer import train as tr

    config = {"d_model": 16, "num_heads": 2, "num_layers": 1}
    params = tf.init_params(config, seed=0)
    zeros = {k: np.zeros_like(w) for k, w in params.items()}
    meta = {"config": config, "hparams": tr.HPARAMS, "data_sha256": "", "train_bytes": train_bytes, "history": []}
    tr.save_checkpoint(path, {"step": 0, "meta": meta, "param": params, "adam_m": zeros, "adam_v": zeros})
    return tf.param_count(config)


def test_cm_and_transformer_costs_sum_to_their_ideal_code_length(tmp_path):
    from lmc_ref.predictors import make_predictor

    chunk = (TEXT * 20)[:2048]
    cm = ic.CmCosts()
    assert math.isclose(cm.byte_costs(chunk).sum(), make_predictor("cm:mem=16").ideal_bits(
        np.frombuffer(chunk, np.uint8)), rel_tol=1e-9)
    _tiny_checkpoint(tmp_path / "t.npz", 0)
    model = ic.TransformerCosts(tmp_path / "t.npz")
    costs = model.byte_costs(chunk)
    reference = make_predictor(f"transformer:ckpt={tmp_path / 't.npz'}").ideal_bits(np.frombuffer(chunk, np.uint8))
    assert costs.shape == (2048,) and math.isclose(costs.sum(), reference, rel_tol=1e-4)


def test_experiment_writes_the_report(tmp_path, tiny_gguf, monkeypatch):
    """Through the CLI: text and image chunks, cm, the (tiny) LLM in place of SmolLM2, a trained model."""
    from PIL import Image

    from lmc_ref.predictors import make_predictor

    monkeypatch.setenv("LMC_REF_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "data" / "images").mkdir(parents=True)
    pixels = np.random.default_rng(1).integers(97, 123, (64, 128, 3), dtype=np.uint8)  # gray: letters
    Image.fromarray(pixels).save(tmp_path / "data" / "images" / "a.png")  # 4 patches of 32 x 64
    (tmp_path / "data" / "enwik8_head").write_bytes((TEXT * 7000)[:443 * 2048])  # chunks 0..442
    monkeypatch.setattr(gguf_file, "smollm2_path", lambda: tiny_gguf)
    n_params = _tiny_checkpoint(tmp_path / "t.npz", 441 * 2048)  # trained on chunks 0..440
    monkeypatch.setattr(ic, "QUICK_CHUNKS", 1)
    out = tmp_path / "out"
    assert main(["experiment", "in_context", "--quick", "--out", str(out), "--no-progress",
                 "--transformer", str(tmp_path / "t.npz")]) == 0
    result = json.loads((out / "in_context.json").read_text())
    rows = result["rows"]
    models = (make_predictor("cm:mem=16").spec, "tiny", f"Transformer {n_params}")
    expected = sorted((m, x) for m in ("text", "image") for x in models)
    assert sorted((r["modality"], r["model"]) for r in rows) == expected
    assert all(r["chunks"] == 1 and len(r["bucket_rates"]) == 16 for r in rows)
    for r in rows:  # the whole-chunk rate is the mean of the buckets and the last prefix
        assert math.isclose(r["rate"], np.mean(r["bucket_rates"]), abs_tol=2e-3)
        assert math.isclose(r["rate"], r["cumulative_rates"][-1], abs_tol=2e-3)
    assert result["meta"]["data"]["text"].startswith("1 of the 2 chunks after byte 903,168 ")
    md = (out / "in_context.md").read_text()
    assert "| text | tiny |" in md and "| image | tiny |" in md and "p = 2048" in md
    assert "spread evenly over the bytes it spells" in md
    [llm_text] = [r for r in rows if r["model"] == "tiny" and r["modality"] == "text"]
    assert llm_text["tokens_per_chunk"] > 2048 / 3 and f"tiny on text: {llm_text['tokens_per_chunk']:.0f}" in md
    with Image.open(out / "in_context.png") as png:
        assert png.format == "PNG"


def test_transformer_option_is_refused_by_other_experiments(tmp_path, capsys):
    assert main(["experiment", "context", "--transformer", str(tmp_path / "t.npz"), "--out", str(tmp_path)]) == 1
    assert "--transformer applies to reproduce and experiment in_context or generate, not context" in \
        capsys.readouterr().err


# --------------------------------------------------------------- the real model
@pytest.mark.slow
def test_smollm2_costs_on_text(enwik8_head, smollm2_gguf):
    path = smollm2_gguf
    model = ic.LlmCosts(path)
    chunk = enwik8_head[901_120:901_120 + 512]
    symbols, bits = model.symbol_bits(chunk)
    costs = model.byte_costs(chunk)
    assert math.isclose(costs.sum(), bits.sum(), rel_tol=1e-9)
    assert 100 * costs.sum() / 8 / len(chunk) < 40  # English wiki text: far below 8 bits per byte
