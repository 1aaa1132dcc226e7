"""The Llama family of pretrained language models: configuration and readable NumPy forward.

The paper's headline rows come from foundation models (Chinchilla, Llama 2);
lmc_ref codes with Llama-family models such as SmolLM2-135M, loaded from GGUF
(``gguf_file``) or Hugging Face safetensors (``safetensors_file``).  Compared
with the paper's byte transformer (``model``) the architecture changes in five
places:

* **pre-RMSNorm**: each block normalises its *input* (``x / rms(x) * w``, no
  mean, no offset) and adds its output to the residual stream unchanged; one
  more RMSNorm precedes the output layer;
* **rotary positions** (RoPE) instead of added sinusoids: the query and key of
  each head are rotated by an angle proportional to the position, so their dot
  product depends on the distance between positions only.  Pairs of adjacent
  channels ``(2i, 2i+1)`` rotate at frequency ``base ** (-2i / rope_dim)``:
  GGUF stores ``attn_q``/``attn_k`` rows in that order (llama.cpp's converter
  permutes Hugging Face's half-split layout into it, and ``safetensors_file``
  does the same), so one forward serves both sources;
* **grouped-query attention**: ``n_heads`` query heads share ``n_kv_heads``
  key/value heads (query head ``h`` reads kv head ``h // (n_heads // n_kv_heads)``);
* **SwiGLU feed-forward**: ``down(silu(gate(x)) * up(x))``, no biases anywhere;
* a **token vocabulary** (49,152 BPE tokens for SmolLM2) instead of 256 bytes,
  and an output layer that may be the token embedding itself (*tied*).

Tensors use GGUF's names and NumPy shapes ``(out, in)``: ``token_embd.weight``
``[V, d]``, ``blk.{i}.attn_q.weight`` ``[d, d]``, ``attn_k``/``attn_v``
``[kv_dim, d]``, ``attn_output`` ``[d, d]``, ``ffn_gate``/``ffn_up``
``[d_ff, d]``, ``ffn_down`` ``[d, d_ff]``, the norms ``attn_norm``,
``ffn_norm`` and ``output_norm.weight`` ``[d]``, and ``output.weight``
``[V, d]`` unless tied.

``forward`` is the reference: plain NumPy, float32 weights, any BLAS.  The
coding path runs ``llama_cpu``'s Numba kernels (no BLAS, no fast-math, one
fixed order of every sum) and is tested against this function.  This module is
a leaf: it imports nothing of lmc_ref.
"""

import math

import numpy as np

#: The config keys every Llama-family model has (``gguf_file``/``safetensors_file`` fill them).
CONFIG_KEYS = ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_ff", "vocab",
               "rope_base", "rope_dim", "rms_eps", "tied")


def head_dim(config):
    """Channels per attention head."""
    return config["d_model"] // config["n_heads"]


def param_count(config):
    """Number of parameters (the tied output layer counted once, as model cards do)."""
    d, f, v, L = config["d_model"], config["d_ff"], config["vocab"], config["n_layers"]
    kv = config["n_kv_heads"] * head_dim(config)
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * f + 2 * d
    return v * d * (1 if config["tied"] else 2) + L * per_layer + d


def rope_angles(config, n_positions):
    """``(cos, sin)`` tables ``[T, rope_dim // 2]`` (float32) of the rotary angles.

    Angle ``pos * base ** (-2i / rope_dim)`` is computed in float64 with Python's
    ``math`` functions (correctly rounded on every glibc machine) and rounded
    to float32 once, so every process that builds the table gets the same bits.
    """
    half = config["rope_dim"] // 2
    base = float(config["rope_base"])
    freqs = [base ** (-2.0 * i / config["rope_dim"]) for i in range(half)]
    cos = np.empty((n_positions, half), np.float32)  # [T, rope_dim/2]
    sin = np.empty((n_positions, half), np.float32)  # [T, rope_dim/2]
    for t in range(n_positions):
        for i, f in enumerate(freqs):
            cos[t, i] = math.cos(t * f)
            sin[t, i] = math.sin(t * f)
    return cos, sin


def rms_norm(x, w, eps):
    """``x / sqrt(mean(x**2) + eps) * w`` over the last axis (statistics in float64)."""
    ms = np.mean(np.square(x.astype(np.float64)), axis=-1, keepdims=True)
    return (x / np.sqrt(ms + eps)).astype(np.float32) * w


def rotate(x, cos, sin):
    """RoPE on ``x`` ``[T, heads, hd]``: channel pairs ``(2i, 2i+1)`` for ``2i < rope_dim`` rotate."""
    half = cos.shape[1]
    out = x.copy()
    x0, x1 = x[..., 0:2 * half:2], x[..., 1:2 * half:2]  # [T, heads, rope_dim/2]
    c, s = cos[:, None, :], sin[:, None, :]
    out[..., 0:2 * half:2] = x0 * c - x1 * s
    out[..., 1:2 * half:2] = x0 * s + x1 * c
    return out


def silu(x):
    """``x * sigmoid(x)``, the gate of SwiGLU."""
    return x / (np.float32(1.0) + np.exp(-x))


# --8<-- [start:llama_forward]
def forward(tensors, config, tokens):
    """Logits ``[T, V]`` (float32) at every position of ``tokens`` (int ids), causally.

    Position ``t`` sees ``tokens[:t + 1]`` and predicts ``tokens[t + 1]``: to code
    a chunk, feed the beginning-of-sequence token followed by all but the last
    token of the chunk.
    """
    tokens = np.asarray(tokens, np.int64)
    T = tokens.shape[0]
    H, KV, hd = config["n_heads"], config["n_kv_heads"], head_dim(config)
    eps = config["rms_eps"]
    cos, sin = rope_angles(config, T)
    causal = np.triu(np.full((T, T), -np.inf, np.float32), 1)  # [T, T]
    x = tensors["token_embd.weight"][tokens].astype(np.float32)  # [T, d]
    for i in range(config["n_layers"]):
        w = lambda name: tensors[f"blk.{i}.{name}.weight"]  # noqa: E731
        h = rms_norm(x, w("attn_norm"), eps)
        q = rotate((h @ w("attn_q").T).reshape(T, H, hd), cos, sin)  # [T, H, hd]
        k = rotate((h @ w("attn_k").T).reshape(T, KV, hd), cos, sin)  # [T, KV, hd]
        v = (h @ w("attn_v").T).reshape(T, KV, hd)  # [T, KV, hd]
        group = H // KV
        heads = []
        for hh in range(H):
            scores = q[:, hh] @ k[:, hh // group].T / np.float32(math.sqrt(hd)) + causal  # [T, T]
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            heads.append((scores / scores.sum(axis=1, keepdims=True)) @ v[:, hh // group])  # [T, hd]
        x = x + np.concatenate(heads, axis=1) @ w("attn_output").T
        h = rms_norm(x, w("ffn_norm"), eps)
        x = x + (silu(h @ w("ffn_gate").T) * (h @ w("ffn_up").T)) @ w("ffn_down").T
    x = rms_norm(x, tensors["output_norm.weight"], eps)
    out = tensors["token_embd.weight"] if config["tied"] else tensors["output.weight"]
    return (x @ out.T).astype(np.float32)  # [T, V]
# --8<-- [end:llama_forward]


def log_softmax(logits):
    """Log-probabilities from logits over the last axis (float64)."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def tensor_shapes(config):
    """``{GGUF name: NumPy shape (out, in)}`` of every tensor a model of ``config`` has."""
    d, f, v = config["d_model"], config["d_ff"], config["vocab"]
    kv = config["n_kv_heads"] * head_dim(config)
    shapes = {"token_embd.weight": (v, d), "output_norm.weight": (d,)}
    if not config["tied"]:
        shapes["output.weight"] = (v, d)
    for i in range(config["n_layers"]):
        shapes.update({f"blk.{i}.attn_norm.weight": (d,), f"blk.{i}.attn_q.weight": (d, d),
                       f"blk.{i}.attn_k.weight": (kv, d), f"blk.{i}.attn_v.weight": (kv, d),
                       f"blk.{i}.attn_output.weight": (d, d), f"blk.{i}.ffn_norm.weight": (d,),
                       f"blk.{i}.ffn_gate.weight": (f, d), f"blk.{i}.ffn_up.weight": (f, d),
                       f"blk.{i}.ffn_down.weight": (d, f)})
    return shapes


def random_tensors(config, seed=0, scale=0.05):
    """Random float32 weights for ``config`` (tests and benchmarks of the kernels)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in tensor_shapes(config).items():
        if len(shape) == 1:
            out[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[name] = (scale * rng.standard_normal(shape)).astype(np.float32)
    return out
