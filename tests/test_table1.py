"""``lmc-ref reproduce`` end to end on a tiny data folder (text and random only)."""

import json

import pytest

from lmc_ref.cli import main
from lmc_ref.experiments import table1
from lmc_ref.predictors import make_predictor

NGRAM = "ngram:order=2,mem=10"
NGRAM_ROW = make_predictor(NGRAM).spec  # rows name a predictor by its canonical spec (with v=)


@pytest.fixture
def tiny_data(tmp_path, enwik8_head, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "enwik8_head").write_bytes(enwik8_head[: 3 * 2048 + 100])
    monkeypatch.setenv("LMC_REF_DATA", str(folder))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no cached checkpoints
    monkeypatch.setattr(table1, "CLASSICAL_ROWS", ("gzip", "png_paper"))
    monkeypatch.setattr(table1, "PREDICTOR_SPECS", {"ngram": NGRAM})
    return folder


def test_reproduce_writes_json_markdown_and_chart(tiny_data, tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["reproduce", "--quick", "--out", str(out), "--workers", "1"]) == 0
    result = json.loads((out / "table1.json").read_text())
    rows = result["rows"]
    assert {r["modality"] for r in rows} == {"text", "random"}  # no image/audio folders here
    assert {(r["compressor"], r["chunked"]) for r in rows} == {
        ("gzip", True), ("gzip", False), ("png_paper", True), ("png_paper", False),
        (NGRAM_ROW, True)}
    assert all(r["verified"] for r in rows)
    text_gzip = next(r for r in rows if (r["compressor"], r["chunked"], r["modality"]) == ("gzip", True, "text"))
    assert text_gzip["chunks"] == 3 and text_gzip["raw_bytes"] == 3 * 2048
    ngram = next(r for r in rows if r["compressor"].startswith("ngram") and r["modality"] == "text")
    assert ngram["ideal_rate"] <= ngram["rate"] < 100
    assert "a prefix" in result["meta"]["data"]["text"]
    md = (out / "table1.md").read_text()
    assert "| gzip | 2048 B |" in md and "Chinchilla 70B" in md
    from PIL import Image

    with Image.open(out / "table1.png") as png:  # 10 x 4.5 inches at 120 dpi
        assert png.format == "PNG" and png.size == (1200, 540)
    assert md in capsys.readouterr().out


def test_transformer_rows_use_held_out_text(tiny_data, tmp_path):
    import numpy as np

    from lmc_ref.transformer import train as tr
    from lmc_ref.transformer import model as tf

    config = {"d_model": 16, "num_heads": 2, "num_layers": 1}
    params = tf.init_params(config, seed=0)
    zeros = {k: np.zeros_like(w) for k, w in params.items()}
    meta = {"config": config, "hparams": tr.HPARAMS, "data_sha256": "", "train_bytes": 2 * 2048,
            "history": []}
    ckpt = tmp_path / "tiny.npz"
    tr.save_checkpoint(ckpt, {"step": 0, "meta": meta, "param": params, "adam_m": zeros, "adam_v": zeros})
    out = tmp_path / "results"
    assert main(["reproduce", "--quick", "--out", str(out), "--workers", "1", "--transformer", str(ckpt)]) == 0
    rows = json.loads((out / "table1.json").read_text())["rows"]
    model = [r for r in rows if r.get("label") == f"Transformer {tf.param_count(config)}"]
    assert {r["modality"] for r in model} == {"text", "random"} and all(r["verified"] for r in model)
    text = next(r for r in model if r["modality"] == "text")
    assert text["chunks"] == 1 and text["subset"] == "chunks 2..2 (held out from training)"  # 0, 1 trained on
    assert {r["compressor"] for r in rows if r.get("subset") and "label" not in r} == {"gzip", "lzma", NGRAM_ROW}
    assert text["model_bytes"] == 2 * tf.param_count(config)
    assert text["adjusted_rate"] > text["rate"]
    md = (out / "table1.md").read_text()
    assert "Adjusted rate of the trained models" in md
    # a chunk limit (--quick) codes a prefix of each modality, with the other compressors beside it
    random_chunks = [bytes([i]) * 2048 for i in range(3)]
    limited = table1.transformer_rows([ckpt], {"random": (random_chunks, "")}, progress=False, max_chunks=2)
    assert {(r.get("label"), r["chunks"], r["subset"]) for r in limited} >= {
        (f"Transformer {tf.param_count(config)}", 2, "chunks 0..1"), (None, 2, "chunks 0..1")}


def test_reproduce_without_text_is_a_clean_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LMC_REF_DATA", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["reproduce", "--quick", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lmc-ref: reproduce:") and "Traceback" not in err


def test_parallel_evaluation_equals_serial(enwik8_head):
    from lmc_ref.evaluate import evaluate

    chunks = [enwik8_head[i : i + 2048] for i in range(0, 8 * 2048, 2048)]
    for name in ("gzip", "ngram:order=3,mem=10"):
        assert evaluate(name, chunks, workers=2) == evaluate(name, chunks, workers=1)
