"""The tokenization experiment on a tiny text (seconds), and the token coding path it uses."""

import json

import numpy as np
import pytest

from lmc_ref.experiments import tokenization
from lmc_ref.transformer import infer_cpu as tk
from lmc_ref.transformer.model import get_config, init_params, param_count, param_shapes
from lmc_ref.tokenizer import BPETokenizer

TINY_MODEL = {"d_model": 8, "num_heads": 2, "num_layers": 1}
TINY = {"vocabs": (256, 300), "config": TINY_MODEL, "steps": 3, "batch": 2, "seq_len": 32, "eval_bytes": 600}


def test_vocab_sizes_the_embedding_and_output_only():
    cfg = get_config({**TINY_MODEL, "vocab": 300})
    shapes = param_shapes(cfg)
    assert shapes["embed"] == (300, 8) and shapes["out.w"] == (8, 300) and shapes["out.b"] == (300,)
    assert param_count(cfg) - param_count(TINY_MODEL) == 44 * (8 + 8 + 1)
    assert get_config({**TINY_MODEL, "vocab": 256}) == get_config(TINY_MODEL)  # byte configs unchanged
    with pytest.raises(ValueError, match="vocab"):
        get_config({**TINY_MODEL, "vocab": 100})


@pytest.mark.parametrize("lengths", [[1], [17, 32, 5], [0, 3]])
def test_token_chunks_round_trip(lengths):
    cfg = get_config({**TINY_MODEL, "vocab": 700})
    weights = tk.pack_weights(init_params(cfg, seed=3), cfg, 32)
    rng = np.random.default_rng(len(lengths))
    chunks = [rng.integers(0, 700, size=n) for n in lengths]
    streams, bits = tk.encode_chunks(weights, cfg["num_heads"], chunks, tokens=True)
    decoded = tk.decode_chunks(weights, cfg["num_heads"], streams, lengths, tokens=True)
    assert decoded.tolist() == np.concatenate(chunks).tolist()
    # random weights: about log2(700) = 9.45 bits per token, and the stream is that plus a little
    total = sum(lengths)
    assert sum(len(s) for s in streams) * 8 <= sum(bits) + 2 + 9 * len(chunks) + 0.001 * total


def test_token_ids_outside_the_vocabulary_are_refused():
    cfg = get_config({**TINY_MODEL, "vocab": 300})
    weights = tk.pack_weights(init_params(cfg), cfg, 32)
    with pytest.raises(ValueError, match="token ids"):
        tk.encode_chunks(weights, cfg["num_heads"], [np.array([5, 300])], tokens=True)


def test_run_trains_codes_and_verifies(enwik8_head):
    raw = np.frombuffer(enwik8_head[:20_000], np.uint8)
    rows = tokenization.run(raw, TINY, log=lambda *_: None)
    assert [r["vocab"] for r in rows] == [256, 300]
    byte_row, bpe_row = rows
    assert byte_row["bytes_per_symbol"] == 1.0 and bpe_row["bytes_per_symbol"] > 1.0  # BPE shortens the text
    for r in rows:
        assert r["verified"] and r["held_out_bytes"] == 600
        assert r["compressed_bytes"] * 8 >= r["ideal_rate"] / 100 * 8 * 600 - 1
        assert r["rate"] == pytest.approx(100 * r["compressed_bytes"] / 600, abs=1e-3)
    assert bpe_row["tokenizer_bytes"] == 44 * 2 * 2


def test_code_held_out_detects_a_wrong_tokenizer(enwik8_head):
    """Decoding is compared with the original: a tokenizer that loses bytes cannot pass."""
    text = bytes(enwik8_head[:300])
    tok = BPETokenizer.train(text, 260)

    class Lossy(BPETokenizer):
        def decode(self, tokens):
            return super().decode(tokens)[:-1]

    cfg = get_config({**TINY_MODEL, "vocab": 260})
    with pytest.raises(AssertionError, match="differs"):
        tokenization.code_held_out(init_params(cfg), cfg, Lossy(tok.merges), text, 32)


def test_train_tokens_takes_the_byte_models_steps(enwik8_head):
    """On bytes, ``train_tokens`` and ``train.train`` are the same optimiser: same seed, same weights."""
    from lmc_ref.transformer import train as tr

    raw = enwik8_head[:4000]
    train_split, _ = tr.split_data(raw)
    mine, _ = tokenization.train_tokens(TINY_MODEL, train_split.astype(np.int64), 4, 32, 2, seed=3, log=None)
    theirs, _ = tr.train(TINY_MODEL, raw, steps=4, seq_len=32, batch=2, seed=3, progress=False,
                         val_chunks=1, val_every=10 ** 9)
    assert tr.model_hash(mine) == tr.model_hash(theirs)


def test_experiment_writes_json_markdown_and_figure(enwik8_head, tmp_path, monkeypatch):
    from PIL import Image

    text = tmp_path / "enwik8_head"
    text.write_bytes(enwik8_head[:20_000])
    monkeypatch.setitem(tokenization.SETTINGS, "quick", TINY)
    returned = tokenization.experiment(tmp_path / "out", text=str(text), quick=True, log=lambda *_: None)
    result = json.loads((tmp_path / "out" / "tokenization.json").read_text())
    assert returned == result
    assert result["meta"]["quick"] and result["meta"]["held_out_bytes"] == 600
    assert [r["vocab"] for r in result["rows"]] == [256, 300] and all(r["verified"] for r in result["rows"])
    md = (tmp_path / "out" / "tokenization.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in md if line.startswith("| ") and line[2].isdigit()] == ["| 256", "| 300"]
    with Image.open(tmp_path / "out" / "tokenization.png") as png:  # the figure decodes, at 7 x 4.2 in, 120 dpi
        assert png.format == "PNG" and png.size == (840, 504) and png.mode == "RGBA"
        assert len(png.convert("L").getcolors(maxcolors=1 << 16)) > 10  # drawn on, not a blank canvas
