"""Hugging Face checkpoint folders (``lmc_ref.transformer.safetensors_file``).

What a user relies on: a Llama checkpoint saved by Hugging Face and the same
model converted to GGUF load to identical tensors and configs (Q/K rows
permuted as llama.cpp's converter does, which is what makes Hugging Face's
half-split RoPE and GGUF's adjacent-pair RoPE the same attention); F16 and
BF16 widen exactly; sharded and single-file checkpoints agree; the hash
changes with any file that changes predictions; and a malformed folder is a
one-line ``ValueError``.
"""

import hashlib
import json
import os
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file
from test_gguf_file import MERGES, TINY, TOKENS, TYPES, write_gguf

from lmc_ref.transformer import llama
from lmc_ref.transformer.gguf_file import read_gguf
from lmc_ref.transformer.safetensors_file import hf_names, permute_qk, read_safetensors

HF_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32,
             "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "vocab_size": 40, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 128,
             "tie_word_embeddings": False, "hidden_act": "silu", "rope_scaling": None, "attention_bias": False,
             "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}
SMOLLM_PRE = {"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}


def tokenizer_json(tokens=TOKENS, merges=MERGES, pre=SMOLLM_PRE, added=None):
    added = added if added is not None else [{"id": i, "content": tokens[i], "special": True} for i in range(3)]
    return {"version": "1.0", "added_tokens": added, "pre_tokenizer": pre,
            "model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(tokens)}, "merges": list(merges)}}


def hf_tensors(config=TINY, seed=3):
    """Random weights under Hugging Face's names, Q/K rows in Hugging Face's (half-split) order."""
    gg = llama.random_tensors(config, seed=seed)
    return {hf: gg[g] for hf, g in hf_names(config).items()}


def naive_permute(w, heads):
    """llama.cpp's permutation spelled out: in each head, row ``i`` goes to ``2i``, row ``i + hd/2`` to ``2i + 1``."""
    hd = w.shape[0] // heads
    out = np.empty_like(w)
    for h in range(heads):
        for i in range(hd // 2):
            out[h * hd + 2 * i] = w[h * hd + i]
            out[h * hd + 2 * i + 1] = w[h * hd + hd // 2 + i]
    return out


def as_gguf(hf, config=TINY):
    """The tensors llama.cpp's converter would write for ``hf``."""
    out = {}
    for name, g in hf_names(config).items():
        w = hf[name]
        if g.endswith("attn_q.weight"):
            w = naive_permute(w, config["n_heads"])
        elif g.endswith("attn_k.weight"):
            w = naive_permute(w, config["n_kv_heads"])
        out[g] = w
    return out


def write_folder(folder, tensors=None, config=None, tokenizer=None, dtype=np.float32):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(HF_CONFIG if config is None else config))
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json() if tokenizer is None else tokenizer))
    tensors = hf_tensors() if tensors is None else tensors
    save_file({k: v.astype(dtype) for k, v in tensors.items()}, str(folder / "model.safetensors"))
    return folder


def raw_safetensors(path, tensors, header_extra=None):
    """A safetensors file written by hand: ``tensors`` is ``{name: (dtype, shape, bytes)}``."""
    header, blobs, at = {}, [], 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [at, at + len(data)]}
        blobs.append(data)
        at += len(data)
    header.update(header_extra or {})
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def one_line_error(folder, match):
    with pytest.raises(ValueError, match=match) as info:
        read_safetensors(folder)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


# ------------------------------------------------------ the same model ---
def test_safetensors_and_gguf_of_one_model_load_identically(tmp_path):
    hf = hf_tensors()
    st = read_safetensors(write_folder(tmp_path / "hf", hf))
    write_gguf(tmp_path / "m.gguf", tensors=as_gguf(hf))
    gg = read_gguf(tmp_path / "m.gguf")
    assert st.config == gg.config
    assert set(st.tensors) == set(gg.tensors)
    for name, w in gg.tensors.items():
        assert st.tensors[name].dtype == np.float32 and st.tensors[name].flags.c_contiguous
        np.testing.assert_array_equal(st.tensors[name], w)
    for key in ("model", "pre", "tokens", "merges", "bos", "eos"):
        assert st.tokenizer[key] == gg.tokenizer[key], key
    np.testing.assert_array_equal(st.tokenizer["token_types"], gg.tokenizer["token_types"])
    assert st.tokenizer["token_types"].tolist() == TYPES
    assert st.tensor_types == {"F32": len(hf)}


def test_permute_qk_is_llama_cpps_permutation():
    w = np.arange(6 * 8 * 3, dtype=np.float32).reshape(6 * 8, 3)
    for heads in (1, 2, 6):
        np.testing.assert_array_equal(permute_qk(w, heads), naive_permute(w, heads))


def rope_half_split(x, cos, sin):
    """Hugging Face's RoPE (``rotate_half``): channel ``i`` rotates with ``i + hd/2``; ``x`` ``[T, heads, hd]``."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


def test_permuted_rows_make_adjacent_pair_rope_equal_hugging_faces(tmp_path):
    """The point of the permutation: the attention scores of both layouts are the same numbers."""
    config = TINY
    hf = hf_tensors()
    st = read_safetensors(write_folder(tmp_path / "hf", hf))
    T, H, KV, hd = 5, config["n_heads"], config["n_kv_heads"], config["d_model"] // config["n_heads"]
    cos, sin = llama.rope_angles(config, T)
    h = np.random.default_rng(0).standard_normal((T, config["d_model"])).astype(np.float32)
    q_hf = rope_half_split((h @ hf["model.layers.0.self_attn.q_proj.weight"].T).reshape(T, H, hd), cos, sin)
    k_hf = rope_half_split((h @ hf["model.layers.0.self_attn.k_proj.weight"].T).reshape(T, KV, hd), cos, sin)
    q = llama.rotate((h @ st.tensors["blk.0.attn_q.weight"].T).reshape(T, H, hd), cos, sin)
    k = llama.rotate((h @ st.tensors["blk.0.attn_k.weight"].T).reshape(T, KV, hd), cos, sin)
    # channel 2i of GGUF's layout is channel i of Hugging Face's, 2i+1 is i + hd/2
    order = np.array([i // 2 + (hd // 2 if i % 2 else 0) for i in range(hd)])
    np.testing.assert_allclose(q, q_hf[..., order], rtol=1e-6, atol=1e-6)
    for hh in range(H):
        ours = q[:, hh] @ k[:, hh // (H // KV)].T
        theirs = q_hf[:, hh] @ k_hf[:, hh // (H // KV)].T
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_f16_and_bf16_widen_exactly(tmp_path):
    hf = hf_tensors()
    st16 = read_safetensors(write_folder(tmp_path / "f16", hf, dtype=np.float16))
    want = as_gguf({k: v.astype(np.float16).astype(np.float32) for k, v in hf.items()})
    for name, w in want.items():
        np.testing.assert_array_equal(st16.tensors[name], w)
    assert st16.tensor_types == {"F16": len(hf)}
    folder = write_folder(tmp_path / "bf16", hf)
    top = {k: (v.view(np.uint32) >> 16).astype("<u2") for k, v in hf.items()}  # bfloat16 by truncation
    raw_safetensors(folder / "model.safetensors", {k: ("BF16", v.shape, v.tobytes()) for k, v in top.items()})
    stbf = read_safetensors(folder)
    want = as_gguf({k: (v.astype(np.uint32) << 16).view(np.float32) for k, v in top.items()})
    for name, w in want.items():
        np.testing.assert_array_equal(stbf.tensors[name], w)
    assert stbf.tensor_types == {"BF16": len(hf)}


def test_sharded_checkpoints_read_like_single_files_and_hash_every_file(tmp_path):
    hf = hf_tensors()
    single = read_safetensors(write_folder(tmp_path / "one", hf))
    folder = write_folder(tmp_path / "two", hf)
    os.unlink(folder / "model.safetensors")
    names = sorted(hf)
    shards = {"model-00001-of-00002.safetensors": names[:7], "model-00002-of-00002.safetensors": names[7:]}
    for shard, keys in shards.items():
        save_file({k: hf[k] for k in keys}, str(folder / shard))
    index = {"metadata": {"total_size": 0}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    sharded = read_safetensors(folder)
    for name, w in single.tensors.items():
        np.testing.assert_array_equal(sharded.tensors[name], w)
    manifest = hashlib.sha256()
    for fname in ("config.json", "tokenizer.json", "model.safetensors.index.json", *sorted(shards)):
        manifest.update(fname.encode() + b"\0" + hashlib.sha256((folder / fname).read_bytes()).digest())
    assert sharded.sha256 == manifest.digest()
    assert sharded.file_bytes == sum(p.stat().st_size for p in folder.iterdir())
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {**index["weight_map"],
                                                                                     names[0]: sorted(shards)[1]}}))
    one_line_error(folder, "not where model.safetensors.index.json says")


def test_the_hash_covers_config_tokenizer_and_weights(tmp_path):
    folder = write_folder(tmp_path / "hf")
    base = read_safetensors(folder).sha256
    single = hashlib.sha256()
    for fname in ("config.json", "tokenizer.json", "model.safetensors"):
        single.update(fname.encode() + b"\0" + hashlib.sha256((folder / fname).read_bytes()).digest())
    assert base == single.digest()
    (folder / "config.json").write_text(json.dumps(HF_CONFIG | {"rope_theta": 20000.0}))
    assert read_safetensors(folder).sha256 != base
    (folder / "config.json").write_text(json.dumps(HF_CONFIG))
    assert read_safetensors(folder).sha256 == base
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json(merges=MERGES[:2])))
    assert read_safetensors(folder).sha256 != base


def test_tied_checkpoints_and_ignored_buffers(tmp_path):
    config = TINY | {"tied": True}
    tensors = hf_tensors(config)
    tensors["model.layers.1.self_attn.rotary_emb.inv_freq"] = np.ones(4, np.float32)  # old HF saves: ignored
    w = read_safetensors(write_folder(tmp_path / "tied", tensors, HF_CONFIG | {"tie_word_embeddings": True}))
    assert w.config["tied"] is True and "output.weight" not in w.tensors
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()  # a tied copy kept: the same tensor
    same = read_safetensors(write_folder(tmp_path / "tied", tensors, HF_CONFIG | {"tie_word_embeddings": True}))
    assert set(same.tensors) == set(w.tensors) and same.config["tied"] is True
    tensors["lm_head.weight"][0, 0] += 1
    write_folder(tmp_path / "tied", tensors, HF_CONFIG | {"tie_word_embeddings": True})
    one_line_error(tmp_path / "tied", "yet lm_head.weight differs from model.embed_tokens.weight")


def test_tokenizer_conversion(tmp_path):
    tokens = TOKENS[:30]  # ids 30..39 have no token: [PAD30].. as UNUSED, as llama.cpp's converter does
    added = [{"id": 0, "content": TOKENS[0], "special": True}, {"id": 35, "content": "<tool>", "special": False}]
    tj = tokenizer_json(tokens, [m.split(" ") for m in MERGES], {"type": "ByteLevel", "add_prefix_space": False},
                        added)
    w = read_safetensors(write_folder(tmp_path / "hf", tokenizer=tj))
    tok = w.tokenizer
    assert tok["tokens"][:30] == tokens and tok["tokens"][35] == "<tool>" and tok["tokens"][30] == "[PAD30]"
    assert tok["token_types"][[0, 1, 29, 30, 35]].tolist() == [3, 1, 1, 5, 4]
    assert tok["merges"] == MERGES and tok["pre"] == "gpt2" and tok["model"] == "gpt2"
    tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [{"type": "Split"}, {"type": "ByteLevel"}]}
    assert read_safetensors(write_folder(tmp_path / "hf", tokenizer=tj)).tokenizer["pre"] is None


# ------------------------------------------------------ malformed folders ---
def edit_config(**changes):
    return lambda folder: (folder / "config.json").write_text(json.dumps({**HF_CONFIG, **changes}))


def edit_tokenizer(fn):
    def apply(folder):
        tj = tokenizer_json()
        fn(tj)
        (folder / "tokenizer.json").write_text(json.dumps(tj))
    return apply


def edit_tensors(fn, dtype=np.float32):
    def apply(folder):
        tensors = hf_tensors()
        fn(tensors)
        save_file({k: v.astype(dtype) for k, v in tensors.items()}, str(folder / "model.safetensors"))
    return apply


def edit_file(name, data):
    return lambda folder: (folder / name).write_bytes(data)


def header_only(folder, header, body=b""):
    text = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + body)


CASES = {
    "not llama": (edit_config(model_type="mistral"), "model_type 'mistral', not 'llama'"),
    "rope scaling": (edit_config(rope_scaling={"rope_type": "llama3", "factor": 8.0}), "rope_scaling .* not supported"),
    "biases": (edit_config(attention_bias=True), "attention_bias = True is not supported"),
    "head_dim": (edit_config(head_dim=16), "head_dim 16 differs"),
    "gqa": (edit_config(num_key_value_heads=3), "not a multiple of n_kv_heads 3"),
    "no size": (edit_config(hidden_size=None), "d_model must be an integer"),
    "bool size": (edit_config(num_hidden_layers=True), "n_layers must be an integer"),
    "eos type": (edit_config(eos_token_id="2"), "eos_token_id must be an integer"),
    "bos range": (edit_config(bos_token_id=40), "bos id 40 outside"),
    "config not json": (edit_file("config.json", b"{'a': 1}"), "config.json is not valid JSON"),
    "config a list": (edit_file("config.json", b"[1, 2]"), "config.json is not a JSON object"),
    "duplicate keys": (edit_file("config.json", b'{"model_type": "llama", "model_type": "llama"}'), "appears twice"),
    "deep json": (edit_file("config.json", b"[" * 100_000 + b"]" * 100_000), "nested too deeply|not valid JSON"),
    "huge config": (edit_file("config.json", b" " * (2 << 20)), "more than"),
    "wordpiece": (edit_tokenizer(lambda tj: tj["model"].update(type="WordPiece")), "not a BPE tokenizer"),
    "no byte level": (edit_tokenizer(lambda tj: tj.update(pre_tokenizer={"type": "Whitespace"})), "not a byte-level"),
    "id range": (edit_tokenizer(lambda tj: tj["model"]["vocab"].update({"zz": 40})), "token id 40 outside"),
    "id twice": (edit_tokenizer(lambda tj: tj["model"]["vocab"].update({"zz": 5})), "gives id 5 to two tokens"),
    "bad merge": (edit_tokenizer(lambda tj: tj["model"]["merges"].append("nospace")), "not two tokens"),
    "missing tensor": (edit_tensors(lambda t: t.pop("model.layers.1.mlp.up_proj.weight")),
                       "lacks model.layers.1.mlp.up_proj.weight"),
    "extra tensor": (edit_tensors(lambda t: t.update({"model.layers.0.self_attn.q_proj.bias": np.zeros(32)})),
                     "does not have: model.layers.0.self_attn.q_proj.bias"),
    "wrong shape": (edit_tensors(lambda t: t.update({"model.norm.weight": np.zeros(33, np.float32)})),
                    r"model.norm.weight has shape \[33\], not \[32\]"),
    "f64": (edit_tensors(lambda t: None, np.float64), "stored as F64"),
    "header too long": (lambda f: (f / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + b"{}"),
                        "declares a 1,099,511,627,776-byte header"),
    "header not json": (lambda f: header_only(f, {}) or (f / "model.safetensors").write_bytes(
        struct.pack("<Q", 2) + b"{x"), "header is not valid JSON"),
    "too short": (edit_file("model.safetensors", b"abc"), "too short"),
    "past the end": (lambda f: header_only(f, {"model.norm.weight": {"dtype": "F32", "shape": [32],
                                                                      "data_offsets": [0, 128]}}, b"\0" * 64),
                     "past the end"),
    "size vs shape": (lambda f: header_only(f, {"model.norm.weight": {"dtype": "F32", "shape": [32],
                                                                       "data_offsets": [0, 64]}}, b"\0" * 64),
                      "64 bytes for F32 of shape"),
    "malformed entry": (lambda f: header_only(f, {"model.norm.weight": {"dtype": "F32", "shape": [32]}}),
                        "malformed header entry"),
    "negative shape": (lambda f: header_only(f, {"model.norm.weight": {"dtype": "F32", "shape": [-1],
                                                                        "data_offsets": [0, 0]}}),
                       "malformed shape"),
    "nan": (edit_tensors(lambda t: t["model.norm.weight"].__setitem__(0, np.inf)), "holds non-finite"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_checkpoints(tmp_path, case):
    folder = write_folder(tmp_path / "hf")
    edit, match = CASES[case]
    edit(folder)
    one_line_error(folder, match)


def test_missing_files_and_hostile_shard_names(tmp_path):
    one_line_error(tmp_path / "nowhere", "not a checkpoint folder")
    folder = write_folder(tmp_path / "hf")
    os.unlink(folder / "model.safetensors")
    one_line_error(folder, "neither model.safetensors nor model.safetensors.index.json")
    os.mkfifo(folder / "model.safetensors")
    one_line_error(folder, "not a regular file")
    os.unlink(folder / "model.safetensors")
    for shard, match in (("../evil.safetensors", "not a plain .safetensors file name"),
                         ("/etc/passwd", "not a plain"), ("model-1.safetensors", "shard model-1.safetensors is missing")):
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"model.norm.weight": shard}}))
        one_line_error(folder, match)
    os.unlink(folder / "config.json")
    one_line_error(folder, "no config.json")
