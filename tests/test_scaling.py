"""The scaling experiment's logic on a tiny text (seconds): training, verified evaluation, adjusted rates."""

import json

import pytest

from lmc_ref.experiments import scaling

TINY = {"datasets": (4096, 16384), "models": ("20K", "40K"), "steps": 3, "batch": 2, "seq_len": 32,
        "eval_chunks": 1, "ngram_mem": (10,), "cm_mem": (10,)}


def test_adjusted_rate_charges_two_bytes_per_parameter():
    assert scaling.adjusted(25.0, 1_000_000, 2 * 200_000) == pytest.approx(65.0)


def test_run_trains_every_pair_and_verifies(enwik8_head):
    raw = enwik8_head[:30_000]
    rows, info = scaling.run(raw, TINY, log=lambda *_: None)
    tf_rows = [r for r in rows if r["kind"] == "transformer"]
    assert {(r["model"], r["dataset_bytes"]) for r in tf_rows} == {(m, d) for m in ("20K", "40K")
                                                                  for d in (4096, 16384)}
    assert info["held_out_start"] == 27_000 and info["eval_chunks"] == 1  # evaluated text is never trained on
    for r in tf_rows:
        assert r["verified"] and r["ideal_rate"] <= r["rate"] + 0.5
        assert r["adjusted_rate"] == pytest.approx(r["rate"] + 100 * r["model_bytes"] / r["dataset_bytes"], abs=1e-2)
    counts = [r for r in rows if r["kind"] in ("ngram", "cm")]
    assert {r["model"] for r in counts} == {"ngram:mem=10", "cm:mem=10"}
    assert all(r["adjusted_rate"] == r["rate"] and r["table_bytes"] > 0 for r in counts)
    best = scaling.best_per_dataset(rows)
    assert set(best) == {4096, 16384}


def test_experiment_writes_json_markdown_and_figure(enwik8_head, tmp_path, monkeypatch):
    text = tmp_path / "enwik8_head"
    text.write_bytes(enwik8_head[:30_000])
    monkeypatch.setitem(scaling.SETTINGS, "quick", TINY)
    returned = scaling.experiment(tmp_path / "out", text=str(text), quick=True, log=lambda *_: None)
    result = json.loads((tmp_path / "out" / "scaling.json").read_text())
    assert returned == result
    assert result["meta"]["quick"] and len(result["rows"]) == 6
    assert "(best)" in (tmp_path / "out" / "scaling.md").read_text()
    from PIL import Image

    with Image.open(tmp_path / "out" / "scaling.png") as png:  # 7.5 x 4.6 inches at 120 dpi
        assert png.format == "PNG" and png.size == (900, 552)
