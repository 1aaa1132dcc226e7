"""GGUF files (``lmc_ref.transformer.gguf_file``) and GGML dequantization (``ggml_quants``).

What a user relies on: every storage type decodes to the weights llama.cpp's
reference defines (checked by hand on chosen blocks, and bit for bit against
the ``gguf`` package's own ``quants.dequantize`` on random blocks); a model
written with ``gguf.GGUFWriter`` reads back with its config, tensors and
vocabulary; the real SmolLM2-135M file loads in seconds; a crafted file is a
one-line ``ValueError``, quickly and without a large allocation; and the model
store finds a GGUF model by the SHA-256 of its file.
"""

import hashlib
import os
import struct
import tempfile
import time
import tracemalloc
from collections import Counter

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from gguf import quants
from hypothesis import given
from hypothesis import strategies as st

from lmc_ref import models
from lmc_ref.cli import main
from lmc_ref.transformer import ggml_quants, gguf_file, llama
from lmc_ref.transformer.gguf_file import read_gguf
from lmc_ref.transformer.llama import tensor_shapes

#: A tiny model: 2 layers, grouped-query attention (4 query heads over 2 kv heads), untied output.
TINY = {"n_layers": 2, "d_model": 32, "n_heads": 4, "n_kv_heads": 2, "d_ff": 64, "vocab": 40,
        "rope_base": 10000.0, "rope_dim": 8, "rms_eps": 1e-5, "context_length": 128, "tied": False}
TOKENS = ["<|endoftext|>", "<s>", "</s>"] + [f"t{i}" for i in range(37)]
MERGES = ["t 1", "t1 2", "t 3"]
TYPES = [3, 3, 3] + [1] * 37


def tiny_tokenizer():
    return {"tokens": TOKENS, "merges": MERGES, "types": TYPES, "bos": 1, "eos": 2}


def write_gguf(path, config=TINY, tensors=None, qtype=None, arch="llama", tokenizer=None, skip=(), extra=None,
               kv=None):
    """Write ``tensors`` (default ``llama.random_tensors(config)``) as a GGUF model with ``gguf.GGUFWriter``.

    ``qtype``: store every 2-D tensor in that GGML type (quantized by ``gguf.quants``);
    ``skip``: names left out; ``extra``: more ``{name: array}``; ``kv``: ``{key: (adder, value)}``
    overriding metadata (``adder`` a GGUFWriter method name, None to leave the key out).
    Returns ``{name: (stored array, GGML type)}``.
    """
    tensors = llama.random_tensors(config, seed=1) if tensors is None else tensors
    tok = tokenizer or tiny_tokenizer()
    w = gguf.GGUFWriter(str(path), arch)
    meta = {"block_count": ("add_block_count", config["n_layers"]),
            "context_length": ("add_context_length", config["context_length"]),
            "embedding_length": ("add_embedding_length", config["d_model"]),
            "feed_forward_length": ("add_feed_forward_length", config["d_ff"]),
            "head_count": ("add_head_count", config["n_heads"]),
            "head_count_kv": ("add_head_count_kv", config["n_kv_heads"]),
            "rope_freq_base": ("add_rope_freq_base", config["rope_base"]),
            "rms_eps": ("add_layer_norm_rms_eps", config["rms_eps"]),
            "rope_dim": ("add_rope_dimension_count", config["rope_dim"]),
            "vocab_size": ("add_vocab_size", config["vocab"]),
            "tok_model": ("add_tokenizer_model", "gpt2"), "tok_pre": ("add_tokenizer_pre", "smollm"),
            "tokens": ("add_token_list", tok["tokens"]), "types": ("add_token_types", tok["types"]),
            "merges": ("add_token_merges", tok["merges"]), "bos": ("add_bos_token_id", tok["bos"]),
            "eos": ("add_eos_token_id", tok["eos"])}
    meta.update(kv or {})
    for adder, value in meta.values():
        if adder is not None:
            getattr(w, adder)(value)
    stored = {}
    for name, t in {**tensors, **(extra or {})}.items():
        if name in skip:
            continue
        if qtype is not None and t.ndim == 2:
            raw = quants.quantize(t, qtype)
            w.add_tensor(name, raw, raw_dtype=qtype)
            stored[name] = (raw, qtype)
        else:
            w.add_tensor(name, t)
            stored[name] = (t, QT.F32 if t.dtype == np.float32 else QT.F16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return stored


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.gguf"
    write_gguf(path)
    return path


# ------------------------------------------------------- dequantization ---
def f16(x):
    return np.float16(x).tobytes()


def blocks_of(*parts):
    return np.frombuffer(b"".join(parts), np.uint8)


def test_q8_0_by_hand():
    q = np.arange(-16, 16, dtype=np.int8)
    raw = blocks_of(f16(0.5), q.tobytes())
    assert ggml_quants.dequantize(raw, 8, 32).tolist() == (0.5 * q).tolist()


def test_q4_0_by_hand_low_nibbles_first():
    packed = bytes((lo | (hi << 4)) for lo, hi in zip(range(16), range(15, -1, -1)))  # weight j: lo j, j+16: 15-j
    out = ggml_quants.dequantize(blocks_of(f16(2.0), packed), 2, 32)
    assert out[:16].tolist() == [2.0 * (j - 8) for j in range(16)]
    assert out[16:].tolist() == [2.0 * (15 - j - 8) for j in range(16)]


def test_q4_1_by_hand():
    packed = bytes((j | ((j ^ 5) << 4)) for j in range(16))
    out = ggml_quants.dequantize(blocks_of(f16(0.25), f16(-1.0), packed), 3, 32)
    assert out[:16].tolist() == [0.25 * j - 1.0 for j in range(16)]
    assert out[16:].tolist() == [0.25 * (j ^ 5) - 1.0 for j in range(16)]


def test_q5_0_and_q5_1_by_hand_fifth_bit_per_weight():
    qh = 0b1010_0000_0000_0001_0000_0000_0000_0011  # weights 0, 1, 16, 29, 31 get the 5th bit
    packed = bytes([0x21] * 16)  # low nibble 1 (weights 0-15), high nibble 2 (weights 16-31)
    five = [(1 if j < 16 else 2) + (16 if qh >> j & 1 else 0) for j in range(32)]
    out0 = ggml_quants.dequantize(blocks_of(f16(0.5), struct.pack("<I", qh), packed), 6, 32)
    assert out0.tolist() == [0.5 * (q - 16) for q in five]
    out1 = ggml_quants.dequantize(blocks_of(f16(0.5), f16(3.0), struct.pack("<I", qh), packed), 7, 32)
    assert out1.tolist() == [0.5 * q + 3.0 for q in five]


def test_q6_k_by_hand():
    ql = np.zeros(128, np.uint8)
    ql[0] = 0x0F | (0x03 << 4)  # weight 0: low nibble 15; weight 64: high nibble 3
    qh = np.zeros(64, np.uint8)
    qh[0] = 0b11_00_00_01  # weight 0 high bits 1, weight 96 high bits 3
    scales = np.arange(1, 17, dtype=np.int8)  # scale j covers weights 16j .. 16j+15
    raw = blocks_of(ql.tobytes(), qh.tobytes(), scales.tobytes(), f16(0.5))
    out = ggml_quants.dequantize(raw, 14, 256)
    want = np.array([0.5 * scales[j // 16] * -32 for j in range(256)], np.float32)
    want[0] = 0.5 * 1 * ((15 | 1 << 4) - 32)
    want[64] = 0.5 * scales[4] * (3 - 32)
    want[96] = 0.5 * scales[6] * ((3 << 4) - 32)
    assert out.tolist() == want.tolist()


def test_q4_k_by_hand_six_bit_scales():
    scales = bytearray(12)
    scales[0], scales[4] = 5, 7  # sub-block 0: scale 5, min 7
    scales[8] = 0x93  # sub-block 4: scale low bits 3, min low bits 9 ...
    scales[0] |= 0b01 << 6  # ... scale high bits 1 (from byte 0)
    scales[4] |= 0b10 << 6  # ... min high bits 2 (from byte 4)
    qs = bytes([0x21] * 128)  # low nibble 1, high nibble 2
    raw = blocks_of(f16(1.0), f16(0.5), bytes(scales), qs)
    out = ggml_quants.dequantize(raw, 12, 256)
    assert out[:32].tolist() == [5 * 1 - 0.5 * 7] * 32
    assert out[128:160].tolist() == [(3 | 1 << 4) * 1 - 0.5 * (9 | 2 << 4)] * 32  # sub-block 4: group 2, low
    assert out[32:64].tolist() == [0.0] * 32  # sub-block 1: scale 0, min 0


def test_float_types_by_hand():
    x = np.array([1.5, -2.25, 65504.0, 2.0 ** -24], np.float32)
    assert ggml_quants.dequantize(np.frombuffer(x.astype("<f2").tobytes(), np.uint8), 1, 4).tolist() == x.tolist()
    bf = np.array([0x3FC0, 0xC010, 0x0001], "<u2")  # 1.5, -2.25, the smallest bf16 subnormal
    assert ggml_quants.dequantize(np.frombuffer(bf.tobytes(), np.uint8), 30, 3).tolist() == [1.5, -2.25, 2.0 ** -133]
    assert ggml_quants.dequantize(np.frombuffer(x.tobytes(), np.uint8), 0, 4).tolist() == x.tolist()


def random_blocks(type_id, n, seed):
    """``n`` random blocks of ``type_id`` with every float16 field set to a finite random value."""
    size = ggml_quants.TYPES[type_id][2]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (n, size), dtype=np.uint8)
    halves = {8: [0], 2: [0], 3: [0, 2], 6: [0], 7: [0, 2], 12: [0, 2], 13: [0, 2], 14: [208], 1: [0], 30: []}
    for at in halves.get(type_id, []):
        raw[:, at:at + 2] = rng.uniform(-2, 2, (n, 1)).astype("<f2").view(np.uint8)
    if type_id == 0:
        raw = rng.standard_normal((n, 1)).astype("<f4").view(np.uint8)
    if type_id == 30:
        raw[:, 1] &= 0x7F  # keep exponents small: finite values
        raw[:, 1] |= 0x30
    return raw.reshape(-1)


@pytest.mark.parametrize("type_id", sorted(ggml_quants.TYPES))
def test_dequantize_matches_the_gguf_package_bit_for_bit(type_id):
    block = ggml_quants.TYPES[type_id][1]
    n_blocks = 300
    raw = random_blocks(type_id, n_blocks, seed=type_id)
    ours = ggml_quants.dequantize(raw, type_id, n_blocks * block)
    oracle = quants.dequantize(raw.reshape(1, -1), QT(type_id)).reshape(-1).astype(np.float32)
    assert ours.dtype == np.float32 and ours.shape == oracle.shape
    np.testing.assert_array_equal(ours.view(np.uint32), oracle.view(np.uint32))


def test_dequantize_in_chunks_equals_one_piece(monkeypatch):
    raw = random_blocks(3, 100, seed=5)
    whole = ggml_quants.dequantize(raw, 3, 3200)
    monkeypatch.setattr(ggml_quants, "CHUNK_WEIGHTS", 96)  # 3 blocks per step, the last step partial
    np.testing.assert_array_equal(ggml_quants.dequantize(raw, 3, 3200), whole)


def test_dequantize_refuses_other_types_and_sizes():
    with pytest.raises(ValueError, match="Q2_K is not supported"):
        ggml_quants.dequantize(np.zeros(84, np.uint8), 10, 256)
    with pytest.raises(ValueError, match="do not fill"):
        ggml_quants.dequantize(np.zeros(20, np.uint8), 3, 64)


# ------------------------------------------------------------ GGUF files ---
def test_a_written_model_reads_back(tiny):
    want = llama.random_tensors(TINY, seed=1)
    w = read_gguf(tiny)
    assert w.config == TINY | {"rms_eps": float(np.float32(1e-5))}
    assert set(w.tensors) == set(want)
    for name, t in want.items():
        got = w.tensors[name]
        assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == t.shape
        np.testing.assert_array_equal(got, t)
    assert w.tokenizer["tokens"] == TOKENS and w.tokenizer["merges"] == MERGES
    assert w.tokenizer["token_types"].tolist() == TYPES and w.tokenizer["token_types"].dtype == np.int32
    assert (w.tokenizer["model"], w.tokenizer["pre"], w.tokenizer["bos"], w.tokenizer["eos"]) == ("gpt2", "smollm", 1, 2)
    assert w.sha256 == hashlib.sha256(tiny.read_bytes()).digest()
    assert w.file_bytes == tiny.stat().st_size and w.tensor_types == Counter({"F32": len(want)})
    assert w.parameters == llama.param_count(TINY)


def test_metadata_only_decodes_nothing(tiny):
    w = read_gguf(tiny, metadata_only=True)
    assert w.tensors == {} and w.sha256 is None and w.config["d_model"] == 32
    assert w.tensor_types == Counter({"F32": len(tensor_shapes(TINY))})


def test_an_open_file_reads_like_its_path(tiny):
    with open(tiny, "rb") as f:
        assert read_gguf(f).sha256 == read_gguf(tiny).sha256


@pytest.mark.parametrize("qtype", [QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.BF16])
def test_quantized_models_read_back_as_the_gguf_package_decodes_them(tmp_path, qtype):
    path = tmp_path / "q.gguf"
    stored = write_gguf(path, qtype=qtype)
    w = read_gguf(path)
    assert w.tensor_types[qtype.name] == sum(1 for _, t in stored.values() if t == qtype)
    for name, (raw, t) in stored.items():
        want = quants.dequantize(raw, t).astype(np.float32)
        np.testing.assert_array_equal(w.tensors[name].view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("qtype", [QT.Q4_K, QT.Q5_K, QT.Q6_K])
def test_k_quant_models_read_back(tmp_path, qtype):
    """K types (256-weight blocks): a model 256 wide, its matrices random valid blocks."""
    config = TINY | {"n_layers": 1, "d_model": 256, "d_ff": 256, "rope_dim": 64}
    tensors = llama.random_tensors(config, seed=2)
    path = tmp_path / "k.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    for adder, value in (("add_block_count", 1), ("add_context_length", 128), ("add_embedding_length", 256),
                         ("add_feed_forward_length", 256), ("add_head_count", 4), ("add_head_count_kv", 2),
                         ("add_layer_norm_rms_eps", 1e-5), ("add_rope_dimension_count", 64),
                         ("add_tokenizer_model", "gpt2"), ("add_token_list", TOKENS)):
        getattr(w, adder)(value)
    raws = {}
    for i, (name, t) in enumerate(tensors.items()):
        if t.ndim == 2:
            raws[name] = random_blocks(int(qtype), t.size // 256, seed=i).reshape(t.shape[0], -1)
            w.add_tensor(name, raws[name], raw_dtype=qtype)
        else:
            w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    got = read_gguf(path)
    assert got.config["rope_base"] == 10000.0 and got.tokenizer["token_types"].tolist() == [1] * 40
    for name, raw in raws.items():
        want = quants.dequantize(raw, qtype).astype(np.float32)
        np.testing.assert_array_equal(got.tensors[name].view(np.uint32), want.view(np.uint32))


def test_tied_models_have_no_output_tensor(tmp_path):
    config = TINY | {"tied": True}
    path = tmp_path / "tied.gguf"
    write_gguf(path, config)
    w = read_gguf(path)
    assert w.config["tied"] is True and "output.weight" not in w.tensors


def test_rope_freqs_of_ones_is_ignored_and_any_other_refused(tmp_path):
    ones = tmp_path / "ones.gguf"
    write_gguf(ones, extra={"rope_freqs.weight": np.ones(4, np.float32)})
    assert "rope_freqs.weight" not in read_gguf(ones).tensors
    scaled = tmp_path / "scaled.gguf"
    write_gguf(scaled, extra={"rope_freqs.weight": np.array([1, 1, 2, 4], np.float32)})
    with pytest.raises(ValueError, match="rescales the RoPE frequencies"):
        read_gguf(scaled)


def test_smollm2_path_without_the_package(monkeypatch):
    monkeypatch.setattr(gguf_file.importlib.util, "find_spec", lambda name: None)
    assert gguf_file.smollm2_path() is None


# -------------------------------------------------------- the real file ---
def test_the_real_smollm2_file(smollm2_gguf):
    path = smollm2_gguf
    t0 = time.perf_counter()
    w = read_gguf(path)
    seconds = time.perf_counter() - t0
    assert seconds < 30, f"reading the 98 MB file took {seconds:.1f} s"
    assert w.config == {"n_layers": 30, "d_model": 576, "n_heads": 9, "n_kv_heads": 3, "d_ff": 1536,
                        "vocab": 49152, "rope_base": 100000.0, "rope_dim": 64, "rms_eps": float(np.float32(1e-5)),
                        "context_length": 8192, "tied": True}
    assert w.tensor_types == Counter({"Q4_1": 210, "F32": 61, "Q8_0": 1})
    assert len(w.tensors) == 272 and w.parameters == 134_515_008
    tok = w.tokenizer
    assert (tok["model"], tok["pre"], tok["bos"], tok["eos"]) == ("gpt2", "smollm", 1, 2)
    assert len(tok["tokens"]) == 49152 and len(tok["merges"]) == 48900 and tok["merges"][0] == "Ġ t"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    assert w.sha256 == h.digest()
    reader = gguf.GGUFReader(path)  # the oracle: the gguf package's reader and dequantizer
    some = {"token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight", "blk.3.attn_norm.weight"}
    for t in reader.tensors:
        if t.name in some:
            want = quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(w.tensors[t.name].shape)
            np.testing.assert_array_equal(w.tensors[t.name].view(np.uint32), want.view(np.uint32))
            some.discard(t.name)
    assert not some
    # End to end through the readable forward: Q/K rows, dequantization and config all have to be right.
    ids = {t: i for i, t in enumerate(tok["tokens"])}
    prompt = [ids[t] for t in ("The", "Ġcapital", "Ġof", "ĠFrance", "Ġis")]
    p = np.exp(llama.log_softmax(llama.forward(w.tensors, w.config, prompt))[-1])
    assert int(np.argmax(p)) == ids["ĠParis"] and p[ids["ĠParis"]] > 0.5


# ------------------------------------------------------- crafted files ---
def read_bytes(data):
    """``read_gguf`` on ``data`` written to a temporary regular file."""
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        f.seek(0)
        return read_gguf(f, "crafted.gguf")


def one_line_error(data, match):
    with pytest.raises(ValueError, match=match) as info:
        read_bytes(data)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
    return str(info.value)


def tensor_record_at(data, name):
    """Offset just after the name of tensor ``name``'s record in a GGUF file's bytes."""
    key = struct.pack("<Q", len(name)) + name.encode()
    at = data.rindex(key)  # tensor records follow the metadata
    return at + len(key)


def test_bad_magic_version_and_endianness(tiny):
    data = tiny.read_bytes()
    one_line_error(b"GGUG" + data[4:], "not a GGUF file")
    one_line_error(data[:4] + struct.pack("<I", 1) + data[8:], "GGUF version 1")
    one_line_error(data[:4] + struct.pack(">I", 3) + data[8:], "big-endian")
    one_line_error(b"", "too short")


def test_truncated_files(tiny):
    data = tiny.read_bytes()
    end = max(t.data_offset + t.n_bytes for t in gguf.GGUFReader(tiny).tensors)  # past it only padding
    cuts = list(range(0, 300, 7)) + list(range(300, end, max(1, end // 60))) + [end - 1]
    for cut in cuts:
        one_line_error(data[:cut], "truncated|too short|declares|past the end|no tensor data")


def test_absurd_counts_are_refused_before_allocating(tiny):
    data = tiny.read_bytes()
    tracemalloc.start()
    try:
        for n_tensors, n_kv in ((1 << 63, 3), (3, 1 << 63), (100_000, 100_000)):
            one_line_error(data[:8] + struct.pack("<QQ", n_tensors, n_kv) + data[24:], "declares")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_a_huge_metadata_array_is_refused_at_once():
    """37 bytes declaring an array of 2**40 bytes: the gguf package's reader loops on it for good."""
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"a" + struct.pack("<IIQ", 9, 0, 1 << 40)
    t0 = time.perf_counter()
    one_line_error(data, "truncated")
    for itype in (8, 9):  # strings, arrays: bounded by the bytes they need at least
        one_line_error(data[:-12] + struct.pack("<IQ", itype, 1 << 40), "truncated|items")
    assert time.perf_counter() - t0 < 1.0


def test_a_tensor_past_the_end_or_misaligned(tiny):
    data = bytearray(tiny.read_bytes())
    at = tensor_record_at(data, "blk.1.ffn_down.weight") + 4 + 2 * 8 + 4  # n_dims, 2 dims, type: the offset
    offset = struct.unpack_from("<Q", data, at)[0]
    for bad in (offset + (1 << 30), (1 << 64) - 32, offset + 1):
        crafted = bytearray(data)
        struct.pack_into("<Q", crafted, at, bad)
        one_line_error(bytes(crafted), "misaligned or past the end")


def test_shapes_that_disagree_with_the_metadata(tmp_path):
    tensors = llama.random_tensors(TINY, seed=1)
    tensors["blk.1.attn_k.weight"] = np.zeros((32, 32), np.float32)  # [d, d] where the config says [kv_dim, d]
    path = tmp_path / "shape.gguf"
    write_gguf(path, tensors=tensors)
    one_line_error(path.read_bytes(), r"blk.1.attn_k.weight has shape \[32, 32\], not \[16, 32\]")
    path2 = tmp_path / "layers.gguf"
    write_gguf(path2, kv={"block_count": ("add_block_count", 3)})
    one_line_error(path2.read_bytes(), "lacks tensor blk.2.attn_norm.weight")


def test_other_architectures_missing_and_extra_tensors(tmp_path):
    p = tmp_path / "x.gguf"
    write_gguf(p, arch="gpt2")
    one_line_error(p.read_bytes(), "architecture 'gpt2', not 'llama'")
    write_gguf(p, skip={"blk.0.ffn_up.weight"})
    one_line_error(p.read_bytes(), "lacks tensor blk.0.ffn_up.weight")
    write_gguf(p, extra={"blk.0.attn_q.bias": np.zeros(32, np.float32)})
    one_line_error(p.read_bytes(), "tensors a Llama model does not: blk.0.attn_q.bias")


def test_unsupported_storage_types_are_named(tmp_path):
    tensors = llama.random_tensors(TINY, seed=1)
    p = tmp_path / "q2k.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    for adder, value in (("add_block_count", 2), ("add_context_length", 128), ("add_embedding_length", 32),
                         ("add_feed_forward_length", 64), ("add_head_count", 4), ("add_head_count_kv", 2),
                         ("add_layer_norm_rms_eps", 1e-5), ("add_rope_dimension_count", 8),
                         ("add_tokenizer_model", "gpt2"), ("add_token_list", TOKENS)):
        getattr(w, adder)(value)
    for name, t in tensors.items():
        if name == "blk.1.ffn_up.weight":  # as I8: a type GGUF has and we do not decode
            w.add_tensor(name, np.zeros(t.shape, np.int8))
        else:
            w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    one_line_error(p.read_bytes(), "blk.1.ffn_up.weight is stored as I8, which lmc_ref does not decode")
    data = bytearray(p.read_bytes())
    at = tensor_record_at(data, "blk.1.ffn_up.weight") + 4 + 2 * 8
    struct.pack_into("<I", data, at, 99)
    one_line_error(bytes(data), "stored as type 99")


def test_metadata_of_the_wrong_type_or_value(tmp_path):
    p = tmp_path / "m.gguf"
    cases = [({"head_count_kv": ("add_head_count_kv", 3)}, "not a multiple of n_kv_heads"),
             ({"rope_dim": ("add_rope_dimension_count", 9)}, "rope_dim 9 must be even"),
             ({"rope_dim": ("add_rope_dimension_count", 16)}, "at most the head size 8"),
             ({"bos": ("add_bos_token_id", 40)}, "bos id 40 outside the vocabulary"),
             ({"vocab_size": ("add_vocab_size", 41)}, "40 tokens for a vocabulary of 41"),
             ({"merges": ("add_token_merges", ["nospace"])}, "not two tokens"),
             ({"rms_eps": (None, None)}, "lacks llama.attention.layer_norm_rms_epsilon"),
             ({"tok_model": (None, None)}, "lacks tokenizer.ggml.model"),
             ({"types": ("add_token_types", [9] * 40)}, "unknown token type 9")]
    for kv, match in cases:
        write_gguf(p, kv=kv)
        one_line_error(p.read_bytes(), match)
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_head_count(4)
    w.add_embedding_length(32)
    w.add_vocab_size(40)
    w.add_string("llama.block_count", "two")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    one_line_error(p.read_bytes(), "llama.block_count must be an integer, not str")


def test_non_finite_weights_are_refused(tmp_path):
    tensors = llama.random_tensors(TINY, seed=1)
    tensors["blk.0.ffn_norm.weight"][3] = np.nan
    p = tmp_path / "nan.gguf"
    write_gguf(p, tensors=tensors)
    one_line_error(p.read_bytes(), "blk.0.ffn_norm.weight holds non-finite values")


def test_duplicate_names(tmp_path):
    tensors = llama.random_tensors(TINY, seed=1)
    p = tmp_path / "dup.gguf"
    write_gguf(p, extra={"blk.0.ffn_uq.weight": tensors["blk.0.ffn_up.weight"]})
    data = p.read_bytes().replace(b"blk.0.ffn_uq.weight", b"blk.0.ffn_up.weight")
    one_line_error(data, "tensor 'blk.0.ffn_up.weight' appears twice")
    data = p.read_bytes().replace(b"tokenizer.ggml.eos_token_id", b"tokenizer.ggml.bos_token_id")
    one_line_error(data, "metadata key 'tokenizer.ggml.bos_token_id' appears twice")


def test_only_regular_files_are_opened(tmp_path):
    fifo = tmp_path / "fifo.gguf"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        read_gguf(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        read_gguf(tmp_path)
    with pytest.raises(ValueError, match="not a path or an open file"):
        read_gguf(12.5)


@given(st.data())
def test_mutated_files_raise_only_value_errors(tiny_bytes, data):
    """Random byte changes anywhere in a valid file: it reads, or raises a one-line ValueError."""
    raw = bytearray(tiny_bytes)
    for _ in range(data.draw(st.integers(1, 4))):
        region = data.draw(st.sampled_from([64, 1500, len(raw)]))  # the header, the metadata, anywhere
        raw[data.draw(st.integers(0, region - 1))] = data.draw(st.integers(0, 255))
    try:
        read_bytes(bytes(raw))
    except ValueError as err:
        assert "\n" not in str(err)


@pytest.fixture(scope="module")
def tiny_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_gguf(path)
    return path.read_bytes()


# ----------------------------------------------------------- the store ---
def test_the_store_adds_lists_and_finds_a_gguf_model(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("LMC_REF_MODELS", raising=False)
    monkeypatch.setattr(models, "_remembered", {})
    monkeypatch.setattr(models, "_seen", {})
    digest = hashlib.sha256(tiny.read_bytes()).digest()
    entry, added = models.add(tiny)
    assert added and entry.kind == "gguf" and entry.hash == digest
    assert entry.path == models.store_dir() / f"{digest.hex()}.gguf"
    assert entry.parameters == llama.param_count(TINY) and "d_model 32" in entry.description
    assert models.add(tiny)[1] is False
    model = models.find(digest)
    assert model.entry.kind == "gguf" and model.payload.sha256 == digest
    np.testing.assert_array_equal(model.payload.tensors["blk.1.attn_q.weight"],
                                  llama.random_tensors(TINY, seed=1)["blk.1.attn_q.weight"])
    found, problems = models.entries()
    assert [(e.hash, e.kind) for e in found] == [(digest, "gguf")] and problems == []
    assert models.find_prefix(digest.hex()[:10]).hash == digest
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert digest.hex() in out and "gguf" in out
    other = tmp_path / "other.gguf"
    write_gguf(other, config=TINY | {"tied": True})
    assert main(["models", "add", str(other)]) == 0
    assert "(gguf, " in capsys.readouterr().out
