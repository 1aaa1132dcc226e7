"""The context-length experiment on a tiny input: well-formed JSON, sensible rates."""

import json

from lmc_ref.cli import main
from lmc_ref.experiments import context


def test_chunks_of_drops_the_tail():
    assert context.chunks_of(b"abcdefg", 3) == [b"abc", b"def"]


def test_run_rates_fall_with_chunk_length(enwik8_head):
    rows = context.run(enwik8_head[:8192], lengths=(64, 512, 4096), names=["gzip", "ngram:order=3,mem=10"],
                       workers=1)
    assert len(rows) == 6 and all(r["verified"] for r in rows)
    for name in ("gzip", "ngram:order=3,mem=10"):
        rates = [r["rate"] for r in rows if r["compressor"] == name]
        assert rates == sorted(rates, reverse=True)  # more context, lower rate, on text


def test_cli_writes_json_markdown_and_figure(tmp_path, enwik8_head, monkeypatch):
    text = tmp_path / "enwik8_head"
    text.write_bytes(enwik8_head[:4096])
    monkeypatch.setattr(context, "CLASSICAL_ROWS", ("gzip",))
    monkeypatch.setattr(context, "PREDICTOR_SPECS", {"ngram": "ngram:order=2,mem=10"})
    out = tmp_path / "out"
    assert main(["experiment", "context", "--quick", "--text", str(text), "--out", str(out), "--workers", "1"]) == 0
    result = json.loads((out / "context.json").read_text())
    assert result["meta"]["lengths"] == [64, 128, 256, 512, 1024, 2048, 4096]
    assert {r["compressor"] for r in result["rows"]} == {"gzip", "ngram:order=2,mem=10"}
    assert "| gzip |" in (out / "context.md").read_text()
    assert (out / "context.png").stat().st_size > 1000
