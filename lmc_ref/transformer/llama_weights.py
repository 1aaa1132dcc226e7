"""Pretrained Llama-family weights as both loaders return them, and the checks they share.

``gguf_file.read_gguf`` and ``safetensors_file.read_safetensors`` read very
different files into one ``LlamaWeights``: a validated config, float32 tensors
under GGUF's names and shapes (see ``llama``), the BPE vocabulary, and the
SHA-256 that names the model in the store (``lmc_ref.models``).  What makes a
config or a tokenizer acceptable is decided here, once, so the two loaders
cannot drift apart:

* every size is a positive integer below a generous bound, the attention
  shapes divide (``d_model % n_heads``, ``n_heads % n_kv_heads``), RoPE covers
  an even number of channels of each head, and the whole model holds at most
  ``MAX_PARAMS`` parameters -- all checked before any tensor is allocated;
* ``llama.tensor_shapes(config)`` is the one list of tensors a model must have,
  each with the exact shape its config implies (the loaders check against it);
* the tokenizer has exactly ``vocab`` tokens, known token types, merges of the
  form ``"a b"``, and special ids inside the vocabulary.
"""

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .llama import param_count

#: Bounds on the config: far above any published Llama-family model, far below what overflows.
MAX_LAYERS = 1 << 10
MAX_D_MODEL = 1 << 16
MAX_HEADS = 1 << 10
MAX_D_FF = 1 << 18
MAX_VOCAB = 1 << 21
MAX_CONTEXT = 1 << 24
#: Largest model read, in parameters (16 GiB of float32 weights).
MAX_PARAMS = 1 << 32

#: GGUF's token types (llama.cpp ``llama_token_type``); 0 is "undefined".
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6
TOKEN_TYPES = range(7)

_INT_LIMITS = {"n_layers": MAX_LAYERS, "d_model": MAX_D_MODEL, "n_heads": MAX_HEADS,
               "n_kv_heads": MAX_HEADS, "d_ff": MAX_D_FF, "vocab": MAX_VOCAB,
               "rope_dim": MAX_D_MODEL, "context_length": MAX_CONTEXT}


@dataclass
class LlamaWeights:
    """A pretrained Llama-family model, read and checked.

    Attributes:
        config: ``n_layers, d_model, n_heads, n_kv_heads, d_ff, vocab, rope_base`` (float),
            ``rope_dim`` (int), ``rms_eps`` (float), ``context_length``, ``tied`` (bool:
            the output layer is ``token_embd.weight``; there is no ``output.weight``).
        tensors: GGUF name -> float32 C-contiguous array of NumPy shape ``(out, in)``;
            ``attn_q``/``attn_k`` rows in GGUF's adjacent-pair RoPE order (see ``llama``).
            Empty when the file was read for its metadata only.
        tokenizer: ``model`` (``"gpt2"`` for byte-level BPE), ``pre`` (the pre-tokenizer's
            name, e.g. ``"smollm"``, or None when unknown), ``tokens`` (list of str, one per
            id), ``merges`` (list of ``"a b"`` str, in rank order), ``token_types``
            (int32 array, ``TOKEN_*``), ``bos``, ``eos`` (ids or None).
        sha256: the 32-byte digest that names the model (see each loader for what it covers).
        file_bytes: bytes of the file(s) read.
        tensor_types: how many tensors of each storage type (``"Q4_1"``, ``"F32"``, ``"BF16"``...).
    """

    config: dict
    tensors: dict = field(repr=False)
    tokenizer: dict = field(repr=False)
    sha256: bytes
    file_bytes: int
    tensor_types: Counter

    @property
    def parameters(self):
        """Number of parameters (a tied output layer counted once)."""
        return param_count(self.config)

    def describe(self):
        """One line for ``lmc-ref models list``: sizes and storage types."""
        c = self.config
        types = " ".join(f"{t}x{n}" for t, n in sorted(self.tensor_types.items()))
        return (f"llama, {c['n_layers']} layers, d_model {c['d_model']}, heads {c['n_heads']}/{c['n_kv_heads']}, "
                f"d_ff {c['d_ff']}, vocab {c['vocab']}{', tied' if c['tied'] else ''}, {types}")


def check_config(raw, name):
    """The config ``raw`` (the keys of ``LlamaWeights.config``) validated and normalised.

    Raises:
        ValueError: a key missing, of the wrong type, out of bounds, or inconsistent.
    """
    missing = [k for k in (*_INT_LIMITS, "rope_base", "rms_eps", "tied") if k not in raw]
    if missing:
        raise ValueError(f"{name}: model config lacks {', '.join(missing)}")
    config = {}
    for key, limit in _INT_LIMITS.items():
        value = raw[key]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 1 <= value <= limit:
            raise ValueError(f"{name}: {key} must be an integer in [1, {limit}], not {repr(value)[:40]}")
        config[key] = int(value)
    for key, low, high in (("rope_base", 1.0, 1e12), ("rms_eps", 0.0, 1.0)):
        value = raw[key]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name}: {key} must be a number, not {repr(value)[:40]}")
        value = float(value)
        if not (math.isfinite(value) and low < value <= high):
            raise ValueError(f"{name}: {key} must be in ({low:g}, {high:g}], not {value!r}")
        config[key] = value
    if not isinstance(raw["tied"], (bool, np.bool_)):
        raise ValueError(f"{name}: tied must be a bool")
    config["tied"] = bool(raw["tied"])
    d, h, kv = config["d_model"], config["n_heads"], config["n_kv_heads"]
    if d % h:
        raise ValueError(f"{name}: d_model {d} is not a multiple of n_heads {h}")
    if h % kv:
        raise ValueError(f"{name}: n_heads {h} is not a multiple of n_kv_heads {kv}")
    head = d // h
    if config["rope_dim"] % 2 or config["rope_dim"] > head:
        raise ValueError(f"{name}: rope_dim {config['rope_dim']} must be even and at most the head size {head}")
    if param_count(config) > MAX_PARAMS:
        raise ValueError(f"{name}: {param_count(config):,} parameters, more than {MAX_PARAMS:,}")
    return {k: config[k] for k in ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_ff", "vocab",
                                   "rope_base", "rope_dim", "rms_eps", "context_length", "tied")}


def check_finite(tensor, key, name):
    """Raise ``ValueError`` if the weight ``key`` holds a NaN or an infinity (it would poison every pdf)."""
    if not np.isfinite(tensor).all():
        raise ValueError(f"{name}: tensor {key} holds non-finite values")


def check_tokenizer(tok, vocab, name):
    """The tokenizer dict ``tok`` (see ``LlamaWeights.tokenizer``) checked against ``vocab`` tokens.

    Raises:
        ValueError: counts that differ from ``vocab``, unknown token types, a malformed
            merge, or a special id outside the vocabulary.
    """
    for key in ("model", "pre"):
        if tok[key] is not None and not isinstance(tok[key], str):
            raise ValueError(f"{name}: tokenizer {key} must be a string")
    if tok["model"] is None:
        raise ValueError(f"{name}: no tokenizer model")
    tokens, types, merges = tok["tokens"], tok["token_types"], tok["merges"]
    if len(tokens) != vocab:
        raise ValueError(f"{name}: {len(tokens):,} tokens for a vocabulary of {vocab:,}")
    if not all(isinstance(t, str) for t in tokens):
        raise ValueError(f"{name}: a token is not a string")
    if types.dtype != np.int32 or types.shape != (vocab,):
        raise ValueError(f"{name}: {types.size:,} token types for a vocabulary of {vocab:,}")
    if vocab and not (TOKEN_TYPES.start <= types.min() and types.max() < TOKEN_TYPES.stop):
        raise ValueError(f"{name}: unknown token type {int(types.max() if types.max() >= TOKEN_TYPES.stop else types.min())}")
    for m in merges:
        if not isinstance(m, str) or " " not in m[1:]:
            raise ValueError(f"{name}: merge {str(m)[:40]!r} is not two tokens separated by a space")
    for key in ("bos", "eos"):
        value = tok[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab):
            raise ValueError(f"{name}: {key} id {str(value)[:20]} outside the vocabulary of {vocab:,}")
    return tok


def sha256_view(view, step=1 << 20):
    """SHA-256 of a buffer (an mmap of the weights file), fed in ``step``-byte pieces."""
    h = hashlib.sha256()
    mv = memoryview(view)
    try:
        for start in range(0, len(mv), step):
            h.update(mv[start:start + step])
    finally:
        mv.release()
    return h.digest()


def close_map(mm):
    """Close the mmap ``mm``; if an exception's traceback still holds a view of it, leave it to the GC.

    (``mmap.close`` raises ``BufferError`` while a NumPy view exists, which would
    hide the ``ValueError`` being raised.)
    """
    try:
        mm.close()
    except BufferError:
        pass
