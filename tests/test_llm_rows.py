"""Table 1's pretrained-model rows (``experiments.llm_rows``) with a tiny random Llama model."""

import numpy as np
import pytest
from test_llm_predictor import write_tiny

from lmc_ref.constants import CHUNK_SIZE
from lmc_ref.experiments import llm_rows, table1


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("llm_rows") / "tiny.gguf"
    write_tiny(path)
    return f"llm:gguf={path}"


def modalities():
    rng = np.random.default_rng(0)
    text = [(b"the heath, the theatre; " * 100)[:CHUNK_SIZE] for _ in range(3)]
    image = [rng.integers(100, 140, CHUNK_SIZE, dtype=np.uint8).tobytes() for _ in range(2)]
    return {"text": (text, "3 text chunks"), "image": (image + [b"short"], "2 patches and a short tail"),
            "random": ([rng.bytes(CHUNK_SIZE)], "1 random chunk")}


def test_lossy_view_is_the_papers_protocol():
    data = bytes(range(256))
    assert llm_rows.lossy_view("text", data) == bytes(b & 0x7F for b in data)
    assert llm_rows.lossy_view("audio", data) == bytes(b >> 1 for b in data)


def test_spec_names():
    assert llm_rows.llm_spec("smollm2") == "llm:model=smollm2-135m"
    assert llm_rows.llm_spec("llm:gguf=x.gguf") == "llm:gguf=x.gguf"
    with pytest.raises(ValueError, match="--llm 'gpt'"):
        llm_rows.llm_spec("gpt")


def test_rows_code_whole_chunks_and_the_lossy_protocol(tiny_spec):
    rows = llm_rows.llm_rows(tiny_spec, modalities(), held_out_from=CHUNK_SIZE, log=lambda line: None)
    lossless = {r["modality"]: r for r in rows if r.get("protocol") == "lossless"}
    lossy = {r["modality"]: r for r in rows if r.get("protocol") == "lossy"}
    assert set(lossless) == {"text", "image", "random"} and set(lossy) == {"text", "image"}
    assert lossless["text"]["chunks"] == 2  # text after the held-out boundary only
    assert lossless["image"]["chunks"] == 2  # the short tail is not a chunk of its own context
    for r in lossless.values():
        assert r["verified"] and r["raw_bytes"] == r["chunks"] * CHUNK_SIZE
        assert r["rate"] == round(100 * r["compressed_bytes"] / r["raw_bytes"], 3)
        assert r["adjusted_rate"] > r["rate"] and r["adjusted_rate_file"] > r["rate"]
        assert 64 < r["header_bytes"] < r["compressed_bytes"]  # spec, SHA-256, lengths, CRCs
    for m, r in lossy.items():
        assert r["rate"] == round(100 * r["compressed_bytes"] * 8 / 7 / r["raw_bytes"], 3)
        assert not r["verified"]
    beside = [r for r in rows if r.get("beside")]
    assert {r["compressor"] for r in beside} >= {"gzip", "lzma", "png", "flac"}
    assert all(r["subset"] == lossless[r["modality"]]["subset"] for r in beside)
    text = "\n".join(llm_rows.markdown(rows, table1.PAPER))
    assert "paper's lossy protocol (not lossless)" in text and "Chinchilla 70B" in text
    assert "gzip, same chunks" in text


def test_table1_keeps_the_model_rows_apart(tiny_spec):
    rows = llm_rows.llm_rows(tiny_spec, {"random": modalities()["random"]}, log=lambda line: None)
    meta = {"version": "x", "quick": True, "date": "d", "seconds": 1, "workers": 1}
    text = table1.markdown(rows, {"random": ([], "r")}, meta)
    assert "Pretrained language model rows" in text
    assert "Adjusted rate of the trained models" not in text  # not mistaken for transformer rows


def test_quick_subset_spreads_over_the_modality(monkeypatch):
    monkeypatch.setattr(llm_rows, "QUICK_CHUNKS", 4)
    chunks = [bytes([i]) * CHUNK_SIZE for i in range(40)] + [b"tail"]
    picked, where = llm_rows.subset("image", chunks, True, held_out_from=0)
    assert [c[0] for c in picked] == [5, 15, 25, 35] and "evenly spaced in 0..40" in where
    picked, where = llm_rows.subset("text", chunks, True, held_out_from=30 * CHUNK_SIZE)
    assert [c[0] for c in picked] == [31, 33, 36, 38] and "after byte 61,440" in where
    assert len(llm_rows.subset("image", chunks, False, held_out_from=0)[0]) == 40  # the short tail is not coded
