"""The context-length experiment on a tiny input: well-formed JSON, sensible rates."""

import json

from lmc_ref.cli import main
from lmc_ref.experiments import context
from lmc_ref.predictors import make_predictor


def test_chunks_of_drops_the_tail():
    assert context.chunks_of(b"abcdefg", 3) == [b"abc", b"def"]


def test_run_rates_fall_with_chunk_length(enwik8_head):
    rows = context.run(enwik8_head[:8192], lengths=(64, 512, 4096), names=["gzip", "ngram:order=3,mem=10"],
                       workers=1)
    assert len(rows) == 6 and all(r["verified"] for r in rows)
    for name in ("gzip", make_predictor("ngram:order=3,mem=10").spec):  # rows carry the canonical spec
        rates = [r["rate"] for r in rows if r["compressor"] == name]
        assert len(rates) == 3 and rates == sorted(rates, reverse=True)  # more context, lower rate, on text


def test_cli_writes_json_markdown_and_figure(tmp_path, enwik8_head, monkeypatch):
    text = tmp_path / "enwik8_head"
    text.write_bytes(enwik8_head[:4096])
    monkeypatch.setattr(context, "CLASSICAL_ROWS", ("gzip",))
    monkeypatch.setattr(context, "PREDICTOR_SPECS", {"ngram": "ngram:order=2,mem=10"})
    out = tmp_path / "out"
    assert main(["experiment", "context", "--quick", "--text", str(text), "--out", str(out), "--workers", "1"]) == 0
    result = json.loads((out / "context.json").read_text())
    assert result["meta"]["lengths"] == [64, 128, 256, 512, 1024, 2048, 4096]
    assert {r["compressor"] for r in result["rows"]} == {"gzip", make_predictor("ngram:order=2,mem=10").spec}
    assert "| gzip |" in (out / "context.md").read_text()
    from PIL import Image

    with Image.open(out / "context.png") as png:  # 7 x 4.2 inches at 120 dpi
        assert png.format == "PNG" and png.size == (840, 504)
