"""Llama-family models from Hugging Face checkpoint folders (safetensors), under GGUF's names.

A Hugging Face Llama checkpoint is a folder holding ``config.json`` (the
sizes), ``tokenizer.json`` (the BPE vocabulary and merges) and the weights,
either one ``model.safetensors`` or shards listed by
``model.safetensors.index.json``.  A safetensors file is an 8-byte
little-endian header length, a JSON header ``{name: {dtype, shape,
data_offsets}}`` and the raw little-endian tensors.  ``read_safetensors``
turns the folder into the same ``LlamaWeights`` as ``gguf_file.read_gguf``:

* names are mapped to GGUF's (``model.layers.{i}.self_attn.q_proj.weight`` ->
  ``blk.{i}.attn_q.weight``, ``model.embed_tokens.weight`` ->
  ``token_embd.weight``, ``lm_head.weight`` -> ``output.weight``, ...; see
  ``hf_names``), shapes are already NumPy ``(out, in)``;
* ``q_proj`` and ``k_proj`` rows are **permuted** within each head exactly as
  llama.cpp's ``convert_hf_to_gguf.py`` (``LlamaModel.permute``) does:
  ``w.reshape(heads, 2, head_dim // 2, d).swapaxes(1, 2).reshape(w.shape)``.
  Hugging Face's RoPE rotates channel ``i`` with ``i + head_dim/2``; after the
  permutation those two sit side by side at ``2i, 2i+1``, the pairs GGUF's
  (and ``llama.forward``'s) RoPE rotates, so one forward serves both formats;
* F32, F16 and BF16 tensors are widened to float32 exactly; any other dtype
  is refused with its name;
* the vocabulary becomes GGUF's ``tokens``/``token_types``/``merges`` as the
  converter builds them (added special tokens are CONTROL, other added tokens
  USER_DEFINED, ids no token has are ``[PAD{id}]`` UNUSED).

The parser is our own, written to the safetensors format (the ``safetensors``
package writes the tests' checkpoints): every file is opened with
``open_regular`` and memory-mapped, each JSON file has a size bound, the
header's offsets must lie in the file and match the shapes, every tensor the
config implies must be present with its exact shape, and shard names from the
index must be plain file names in the folder.  Anything else is a one-line
``ValueError``.

**The model's hash** covers everything that decides its predictions:
SHA-256 over, for each file in the order ``config.json``, ``tokenizer.json``,
then ``model.safetensors`` (or ``model.safetensors.index.json`` and its shards
sorted by name), the file name, a zero byte and the file's own SHA-256.  The
weights file alone would not do: ``rope_theta`` in ``config.json`` or a
changed vocabulary in ``tokenizer.json`` changes every probability.
"""

import hashlib
import json
import math
import mmap
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

from .checkpoint import open_regular
from .llama import tensor_shapes
from .llama_weights import (
    TOKEN_CONTROL,
    TOKEN_NORMAL,
    TOKEN_UNUSED,
    TOKEN_USER_DEFINED,
    LlamaWeights,
    check_config,
    check_finite,
    check_tokenizer,
    close_map,
    sha256_view,
)

CONFIG, TOKENIZER = "config.json", "tokenizer.json"
SINGLE, INDEX = "model.safetensors", "model.safetensors.index.json"
#: Bounds on what is read: each JSON file, a safetensors header, a shard, the number of shards.
MAX_CONFIG_BYTES = 1 << 20
MAX_TOKENIZER_BYTES = 64 << 20
MAX_INDEX_BYTES = 16 << 20
MAX_HEADER_BYTES = 100 << 20
MAX_SHARD_BYTES = 64 << 30
MAX_SHARDS = 4096
#: Storage dtypes decoded: name -> bytes per weight.
DTYPES = {"F32": 4, "F16": 2, "BF16": 2}
#: Buffers Hugging Face recomputes from the config and ignores on load; so do we.
IGNORED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")
_SHARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}\.safetensors")

_LAYER_NAMES = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                "mlp.down_proj": "ffn_down"}


def hf_names(config):
    """``{Hugging Face tensor name: GGUF name}`` for a model of ``config``."""
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    if not config["tied"]:
        names["lm_head.weight"] = "output.weight"
    for i in range(config["n_layers"]):
        for hf, gg in _LAYER_NAMES.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    return names


def permute_qk(w, heads):
    """``w`` ``[heads * head_dim, d]`` with each head's rows reordered from Hugging Face's
    half-split RoPE layout to GGUF's adjacent pairs (llama.cpp's ``LlamaModel.permute``)."""
    rows = w.shape[0]
    return np.ascontiguousarray(w.reshape(heads, 2, rows // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


# ------------------------------------------------------------- JSON files ---
def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k[:40]!r} appears twice")
        out[k] = v
    return out


def _read_json(path, limit, name):
    """The JSON object in ``path`` (a regular file of at most ``limit`` bytes)."""
    try:
        with open_regular(path, limit, f"{path.name} ({limit:,} bytes at most)") as f:
            raw = f.read(limit + 1)
    except FileNotFoundError:
        raise ValueError(f"{name}: no {path.name} in the checkpoint folder") from None
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise ValueError(f"{name}: {path.name} is nested too deeply") from None
    except ValueError as err:  # UnicodeDecodeError, JSONDecodeError and duplicate keys are ValueErrors
        raise ValueError(f"{name}: {path.name} is not valid JSON ({' '.join(str(err).split())[:100]})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{name}: {path.name} is not a JSON object")
    return obj, raw


def _config(hf, name):
    """``LlamaWeights.config`` from a Hugging Face ``config.json``; variants ``llama.forward`` lacks refused."""
    if hf.get("model_type") != "llama":
        raise ValueError(f"{name}: config.json model_type {str(hf.get('model_type'))[:40]!r}, not 'llama'")
    arch = hf.get("architectures", ["LlamaForCausalLM"])
    if not isinstance(arch, list) or "LlamaForCausalLM" not in arch:
        raise ValueError(f"{name}: config.json architectures {str(arch)[:60]} lack LlamaForCausalLM")
    for key, allowed in (("hidden_act", ("silu",)), ("rope_scaling", (None,)), ("attention_bias", (False,)),
                         ("mlp_bias", (False,)), ("partial_rotary_factor", (1, 1.0))):
        if key in hf and not any(hf[key] is a or (type(hf[key]) is type(a) and hf[key] == a) for a in allowed):
            raise ValueError(f"{name}: config.json {key} = {str(hf[key])[:40]} is not supported")
    missing = [k for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                           "vocab_size", "rms_norm_eps") if k not in hf]
    if missing:
        raise ValueError(f"{name}: config.json lacks {', '.join(missing)}")
    heads, d = hf["num_attention_heads"], hf["hidden_size"]
    tied = hf.get("tie_word_embeddings", False)  # LlamaConfig's default
    raw = {"n_layers": hf["num_hidden_layers"], "d_model": d, "n_heads": heads,
           "n_kv_heads": hf.get("num_key_value_heads", heads), "d_ff": hf["intermediate_size"],
           "vocab": hf["vocab_size"], "rope_base": hf.get("rope_theta", 10000.0),
           "rope_dim": d // heads if type(d) is int and type(heads) is int and heads > 0 else None,
           "rms_eps": hf["rms_norm_eps"], "context_length": hf.get("max_position_embeddings", 2048), "tied": tied}
    config = check_config(raw, name)
    # Rounded to float32 as llama.cpp's converter stores them (and as Hugging Face's float32
    # RMSNorm adds eps): the same model reads to the same config from either format.
    config = check_config({**config, **{k: float(np.float32(config[k])) for k in ("rope_base", "rms_eps")}}, name)
    head = config["d_model"] // config["n_heads"]
    if hf.get("head_dim", head) != head:
        raise ValueError(f"{name}: config.json head_dim {str(hf['head_dim'])[:20]} differs from "
                         f"hidden_size / num_attention_heads = {head} (not supported)")
    if head % 2:
        raise ValueError(f"{name}: head size {head} is odd (RoPE rotates pairs)")
    return config


def _special_id(hf, key, name):
    value = hf.get(key)
    if isinstance(value, list):  # several end tokens (Llama 3 instruct): the first is the main one
        value = value[0] if value else None
    if value is not None and (type(value) is not int):
        raise ValueError(f"{name}: config.json {key} must be an integer")
    return value


def _pre_name(pre):
    """llama.cpp's name of a ``tokenizer.json`` pre-tokenizer we recognise, else None."""
    def byte_level(p):
        return (isinstance(p, dict) and p.get("type") == "ByteLevel" and p.get("use_regex", True) is True
                and p.get("add_prefix_space", False) is False)
    if byte_level(pre):
        return "gpt2"
    if isinstance(pre, dict) and pre.get("type") == "Sequence":
        parts = pre.get("pretokenizers")
        if (isinstance(parts, list) and len(parts) == 2 and isinstance(parts[0], dict)
                and parts[0].get("type") == "Digits" and parts[0].get("individual_digits") is True
                and byte_level(parts[1])):
            return "smollm"
    return None


def _has_byte_level(pre):
    if isinstance(pre, dict):
        if pre.get("type") == "ByteLevel":
            return True
        parts = pre.get("pretokenizers")
        return isinstance(parts, list) and any(isinstance(p, dict) and p.get("type") == "ByteLevel" for p in parts)
    return False


def _tokenizer(tj, hf, vocab, name):
    """GGUF-style tokenizer fields from ``tokenizer.json`` (byte-level BPE only) and ``config.json``."""
    model = tj.get("model")
    if not isinstance(model, dict) or model.get("type") != "BPE":
        raise ValueError(f"{name}: tokenizer.json is not a BPE tokenizer")
    if not _has_byte_level(tj.get("pre_tokenizer")):
        raise ValueError(f"{name}: tokenizer.json is not a byte-level BPE (no ByteLevel pre-tokenizer)")
    table, merges, added = model.get("vocab"), model.get("merges", []), tj.get("added_tokens", [])
    if not isinstance(table, dict) or not isinstance(merges, list) or not isinstance(added, list):
        raise ValueError(f"{name}: tokenizer.json model.vocab, model.merges or added_tokens malformed")
    tokens, types = [None] * vocab, np.full(vocab, TOKEN_UNUSED, np.int32)

    def place(token, i, kind):
        if type(i) is not int or not 0 <= i < vocab:
            raise ValueError(f"{name}: tokenizer.json token id {str(i)[:20]} outside the vocabulary of {vocab:,}")
        if not isinstance(token, str):
            raise ValueError(f"{name}: tokenizer.json token {i} is not a string")
        if tokens[i] is not None and tokens[i] != token:
            raise ValueError(f"{name}: tokenizer.json gives id {i} to two tokens")
        tokens[i], types[i] = token, kind

    for token, i in table.items():
        place(token, i, TOKEN_NORMAL)
    for entry in added:
        if not isinstance(entry, dict):
            raise ValueError(f"{name}: tokenizer.json added_tokens entry is not an object")
        place(entry.get("content"), entry.get("id"), TOKEN_CONTROL if entry.get("special") is True else TOKEN_USER_DEFINED)
    tokens = [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)]
    pairs = []
    for m in merges:  # "a b" (tokenizers < 0.20) or ["a", "b"]
        if isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m):
            m = f"{m[0]} {m[1]}"
        pairs.append(m)
    tok = {"model": "gpt2", "pre": _pre_name(tj.get("pre_tokenizer")), "tokens": tokens, "merges": pairs,
           "token_types": types, "bos": _special_id(hf, "bos_token_id", name),
           "eos": _special_id(hf, "eos_token_id", name), "add_bos": None}
    return check_tokenizer(tok, vocab, name)


# ------------------------------------------------------- safetensors files ---
def _header(mm, size, shard, name):
    """``{tensor name: (dtype, shape, first byte, byte count)}`` of one safetensors file, all checked."""
    if size < 8:
        raise ValueError(f"{name}: {shard} is too short for a safetensors file")
    n = int.from_bytes(mm[:8], "little")
    if n > min(MAX_HEADER_BYTES, size - 8):
        raise ValueError(f"{name}: {shard} declares a {n:,}-byte header in a {size:,}-byte file")
    try:
        header = json.loads(mm[8:8 + n].decode("utf-8"), object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise ValueError(f"{name}: {shard} header is nested too deeply") from None
    except ValueError as err:
        raise ValueError(f"{name}: {shard} header is not valid JSON ({' '.join(str(err).split())[:100]})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{name}: {shard} header is not a JSON object")
    header.pop("__metadata__", None)
    data_start, data_bytes = 8 + n, size - 8 - n
    out = {}
    for key, info in header.items():
        where = f"{name}: {shard} tensor {key[:60]}"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"{where}: malformed header entry")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if (not isinstance(shape, list) or len(shape) > 8 or not all(type(s) is int and s >= 0 for s in shape)
                or not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1] <= data_bytes):
            raise ValueError(f"{where}: malformed shape or data offsets (or past the end of the file)")
        if not isinstance(dtype, str):
            raise ValueError(f"{where}: malformed dtype")
        if dtype in DTYPES and offsets[1] - offsets[0] != math.prod(shape) * DTYPES[dtype]:
            raise ValueError(f"{where}: {offsets[1] - offsets[0]:,} bytes for {dtype} of shape {shape}")
        out[key] = (dtype, tuple(shape), data_start + offsets[0], offsets[1] - offsets[0])
    return out


def _decode(mm, dtype, shape, start, n_bytes):
    """Float32 copy of the tensor at ``mm[start:start + n_bytes]``."""
    raw = np.frombuffer(mm, np.uint8, n_bytes, start)
    if dtype == "F32":
        w = raw.view("<f4").astype(np.float32)
    elif dtype == "F16":
        w = raw.view("<f2").astype(np.float32)
    else:  # BF16: the top half of a float32
        w = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    del raw
    return w.reshape(shape)


def _shards(folder, name):
    """``[(file name, path)]`` of the weights, and the index (``(raw bytes, weight_map)`` or None)."""
    if (folder / INDEX).exists():
        index, raw = _read_json(folder / INDEX, MAX_INDEX_BYTES, name)
        wmap = index.get("weight_map")
        if not isinstance(wmap, dict) or not all(isinstance(v, str) for v in wmap.values()):
            raise ValueError(f"{name}: {INDEX} has no weight_map of tensor -> file")
        files = sorted(set(wmap.values()))
        if len(files) > MAX_SHARDS:
            raise ValueError(f"{name}: {INDEX} names {len(files):,} shards (at most {MAX_SHARDS})")
        for f in files:
            if not _SHARD_NAME.fullmatch(f):
                raise ValueError(f"{name}: {INDEX} names shard {f[:60]!r}, not a plain .safetensors file name")
        return [(f, folder / f) for f in files], (raw, wmap)
    if not (folder / SINGLE).exists():
        raise ValueError(f"{name}: neither {SINGLE} nor {INDEX} in the checkpoint folder")
    return [(SINGLE, folder / SINGLE)], None


def read_safetensors(directory):
    """The Llama-family model in the Hugging Face checkpoint folder ``directory``.

    Returns:
        ``LlamaWeights`` with GGUF names, Q/K rows permuted to GGUF's order, and
        ``sha256`` over the folder's files as the module docstring says.

    Raises:
        ValueError: a file missing or malformed, a config ``llama.forward`` does not run,
            a tensor missing, misshapen or of an unsupported dtype (see the module docstring).
        OSError: a file cannot be opened or read.
    """
    folder, name = Path(directory), str(directory)
    if not folder.is_dir():
        raise ValueError(f"{name}: not a checkpoint folder")
    hf, config_raw = _read_json(folder / CONFIG, MAX_CONFIG_BYTES, name)
    config = _config(hf, name)
    tj, tok_raw = _read_json(folder / TOKENIZER, MAX_TOKENIZER_BYTES, name)
    tokenizer = _tokenizer(tj, hf, config["vocab"], name)
    shards, index = _shards(folder, name)
    digests = [(CONFIG, hashlib.sha256(config_raw).digest()), (TOKENIZER, hashlib.sha256(tok_raw).digest())]
    if index is not None:
        digests.append((INDEX, hashlib.sha256(index[0]).digest()))
    names, shapes = hf_names(config), tensor_shapes(config)
    files, maps, entries, total = [], [], {}, len(config_raw) + len(tok_raw) + (len(index[0]) if index else 0)
    try:
        for shard, path in shards:
            try:
                f = open_regular(path, MAX_SHARD_BYTES, "a safetensors file")
            except FileNotFoundError:
                raise ValueError(f"{name}: shard {shard} is missing") from None
            files.append(f)
            size = os.fstat(f.fileno()).st_size
            total += size
            if size < 8:
                raise ValueError(f"{name}: {shard} is too short for a safetensors file")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            maps.append(mm)
            for key, entry in _header(mm, size, shard, name).items():
                if key in entries:
                    raise ValueError(f"{name}: tensor {key[:60]} is in two shards")
                if index is not None and index[1].get(key) != shard:
                    raise ValueError(f"{name}: tensor {key[:60]} is in {shard}, not where {INDEX} says")
                entries[key] = (mm, *entry)
            digests.append((shard, sha256_view(mm)))
        return _assemble(config, tokenizer, entries, names, shapes, index, digests, total, name)
    finally:
        for mm in maps:
            close_map(mm)
        for f in files:
            f.close()


def _assemble(config, tokenizer, entries, names, shapes, index, digests, total, name):
    if config["tied"] and "lm_head.weight" in entries:  # some savers keep the tied copy: it must be the same
        head, embed = entries.pop("lm_head.weight"), entries.get("model.embed_tokens.weight")
        if head[1] not in DTYPES:
            raise ValueError(f"{name}: lm_head.weight is stored as {head[1][:20]} (supported: {', '.join(DTYPES)})")
        if embed is None or head[1:3] != embed[1:3] or not np.array_equal(_decode(*head), _decode(*embed)):
            raise ValueError(f"{name}: config.json ties the output layer to the embedding, "
                             "yet lm_head.weight differs from model.embed_tokens.weight")
        if index is not None:
            index[1].pop("lm_head.weight", None)
    extra = [k for k in entries if k not in names and not IGNORED.fullmatch(k)]
    if extra:
        raise ValueError(f"{name}: tensors a Llama model does not have: {', '.join(k[:60] for k in extra[:3])}"
                         + (f" and {len(extra) - 3} more" if len(extra) > 3 else ""))
    missing = [k for k in names if k not in entries]
    if missing or (index is not None and set(index[1]) != set(entries)):
        what = ", ".join(missing[:3]) if missing else f"tensors {INDEX} lists"
        raise ValueError(f"{name}: checkpoint lacks {what}")
    for hf, gg in names.items():
        dtype, shape = entries[hf][1], entries[hf][2]
        if shape != shapes[gg]:
            raise ValueError(f"{name}: {hf} has shape {list(shape)}, not {list(shapes[gg])} as config.json implies")
        if dtype not in DTYPES:
            raise ValueError(f"{name}: {hf} is stored as {dtype[:20]} (supported: {', '.join(DTYPES)})")
    tensors, kinds = {}, Counter()
    for hf, gg in names.items():
        mm, dtype, shape, start, n_bytes = entries[hf]
        w = _decode(mm, dtype, shape, start, n_bytes)
        if gg.endswith("attn_q.weight"):
            w = permute_qk(w, config["n_heads"])
        elif gg.endswith("attn_k.weight"):
            w = permute_qk(w, config["n_kv_heads"])
        check_finite(w, hf, name)
        tensors[gg] = w
        kinds[dtype] += 1
    entries.clear()  # drop the references to the maps before they are closed
    manifest = hashlib.sha256()
    for fname, digest in digests:
        manifest.update(fname.encode() + b"\0" + digest)
    return LlamaWeights(config=config, tensors=tensors, tokenizer=tokenizer, sha256=manifest.digest(),
                        file_bytes=total, tensor_types=kinds)
