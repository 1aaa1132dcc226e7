"""The paper's byte-level decoder-only transformer: configuration, weights, NumPy forward.

The architecture is the one released with the paper (``transformer.py`` of the
authors' code, written with Haiku):

* byte vocabulary of 256; the model reads the *targets shifted right by one*
  with a 0 token in front, so position t predicts byte t from bytes < t;
* token embedding multiplied by ``sqrt(d)``, plus sinusoidal positions
  (``sin`` of all frequencies, then ``cos`` of all frequencies, concatenated);
* ``L`` blocks, each *post*-LayerNorm:

  - multi-head causal self-attention (q, k, v and output projections without
    biases) -> residual -> LayerNorm;
  - feed-forward ``d -> 4d`` (GELU) ``-> d`` with biases -> residual -> LayerNorm;

* a final linear layer with bias to 256 logits, then log-softmax.

Choices pinned down here (each is part of what a checkpoint means):

* GELU is the **tanh approximation**, ``0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))``,
  which is ``jax.nn.gelu``'s default and so what the released code computes.
* LayerNorm has a scale and an offset per channel and ``eps = 1e-5`` (Haiku's defaults).
* Biases: the feed-forward layers and the output layer have biases (Haiku's
  ``hk.Linear`` default), the attention projections do not.  This is the only
  combination that reproduces the released default's parameter count:
  ``d=64, 8 heads, 4 layers -> 231,936`` (checked in ``tests/test_backprop.py``).

``forward`` here is the readable batched NumPy model.  Training
(``lmc_ref.transformer.train``) runs the same operations with caches for the
backward pass (``lmc_ref.transformer.backprop``); coding runs the per-position
Numba kernel with a KV cache (``lmc_ref.transformer.infer_cpu``, or
``infer_cuda`` on a GPU) through ``lmc_ref.predictors.transformer``.  Tests
check that all of them agree.  This module is a leaf: it imports nothing of
lmc_ref, so every other part of the transformer can build on it.
"""

import math

import numpy as np


VOCAB = 256
MAX_VOCAB = 1 << 16  # token models: ids fit 16 bits
WIDENING = 4
LN_EPS = 1e-5

# --8<-- [start:configs]
#: Named configurations: d_model, heads, layers.  200K / 800K / 3.2M are the
#: authors' paper runs; ``default`` is the released code's default model.
CONFIGS = {
    "200K": {"d_model": 64, "num_heads": 4, "num_layers": 4},
    "800K": {"d_model": 128, "num_heads": 4, "num_layers": 4},
    "3.2M": {"d_model": 256, "num_heads": 8, "num_layers": 4},
    "default": {"d_model": 64, "num_heads": 8, "num_layers": 4},
}
# --8<-- [end:configs]


def get_config(config):
    """A full config dict from a name in ``CONFIGS`` or a dict with d_model/num_heads/num_layers.

    An optional ``vocab`` (default 256, the bytes) sizes the embedding and the
    output layer for token models (the tokenization experiment); it appears in
    the returned dict only when it is not 256.
    """
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ValueError(f"unknown transformer config {config!r}; available: {', '.join(CONFIGS)}")
        config = CONFIGS[config]
    cfg = {k: int(config[k]) for k in ("d_model", "num_heads", "num_layers")}
    if cfg["d_model"] < 1 or cfg["num_heads"] < 1 or cfg["num_layers"] < 0:
        raise ValueError(f"invalid transformer config {cfg}")
    vocab = int(config.get("vocab", VOCAB))
    if not VOCAB <= vocab <= MAX_VOCAB:
        raise ValueError(f"vocab must be in [{VOCAB}, {MAX_VOCAB}], got {vocab}")
    if vocab != VOCAB:  # byte models keep the three-key config their checkpoints record
        cfg["vocab"] = vocab
    if cfg["d_model"] % cfg["num_heads"] or cfg["d_model"] % 2:
        raise ValueError(f"d_model must be even and divisible by num_heads: {cfg}")
    return cfg


def param_shapes(config):
    """Name -> shape of every weight array, in the fixed order used for hashing and files."""
    cfg = get_config(config)
    d, f = cfg["d_model"], WIDENING * cfg["d_model"]
    vocab = cfg.get("vocab", VOCAB)
    shapes = {"embed": (vocab, d)}
    for i in range(cfg["num_layers"]):
        p = f"layer{i}."
        shapes.update({
            p + "wq": (d, d), p + "wk": (d, d), p + "wv": (d, d), p + "wo": (d, d),
            p + "ln1.scale": (d,), p + "ln1.offset": (d,),
            p + "ffn1.w": (d, f), p + "ffn1.b": (f,),
            p + "ffn2.w": (f, d), p + "ffn2.b": (d,),
            p + "ln2.scale": (d,), p + "ln2.offset": (d,),
        })
    shapes.update({"out.w": (d, vocab), "out.b": (vocab,)})
    return shapes


def param_count(config):
    """Number of trainable parameters of a configuration."""
    return sum(math.prod(s) for s in param_shapes(config).values())


def _truncated_normal(rng, shape, std):
    """Normal(0, std) truncated to 2 std, rescaled to keep the variance (Haiku's initializer)."""
    x = rng.standard_normal(shape)
    bad = np.abs(x) > 2.0
    while bad.any():
        x[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(x) > 2.0
    return x * (std / 0.87962566103423978)


def init_params(config, seed=0, dtype=np.float32):
    """Random initial weights as Haiku would draw them (distribution, not bit pattern).

    Embedding: truncated normal, std 0.02; linear weights: truncated normal with
    std ``1/sqrt(fan_in)``; biases and LayerNorm offsets 0; LayerNorm scales 1.
    """
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(config).items():
        if name == "embed":
            w = _truncated_normal(rng, shape, 0.02)
        elif name.endswith(".scale"):
            w = np.ones(shape)
        elif name.endswith((".offset", ".b")):
            w = np.zeros(shape)
        else:
            w = _truncated_normal(rng, shape, 1.0 / math.sqrt(shape[0]))
        params[name] = w.astype(dtype)
    return params


def sinusoid_positions(length, d_model, max_timescale=1e4):
    """Sinusoidal position encodings ``[length, d_model]``: sin(all freqs) then cos(all freqs)."""
    inv_freq = max_timescale ** (-np.arange(0, d_model, 2) / d_model)  # [d/2]
    angles = np.arange(length)[:, None] * inv_freq[None, :]  # [T, d/2]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)[:, :d_model]  # [T, d]


def shift_right(targets):
    """Model inputs: the targets shifted right by one, with token 0 first."""
    targets = np.asarray(targets)
    inputs = np.zeros_like(targets)  # [B, T]
    inputs[..., 1:] = targets[..., :-1]
    return inputs


def gelu(x):
    """GELU, tanh approximation (``jax.nn.gelu`` default)."""
    c = np.asarray(math.sqrt(2.0 / math.pi), dtype=x.dtype)
    return 0.5 * x * (1.0 + np.tanh(c * (x + np.asarray(0.044715, x.dtype) * x**3)))


def layer_norm(x, scale, offset):
    """LayerNorm over the last axis, eps 1e-5, then per-channel scale and offset."""
    mean = x.mean(axis=-1, keepdims=True)  # [..., 1]
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # [..., 1]
    return (x - mean) / np.sqrt(var + np.asarray(LN_EPS, x.dtype)) * scale + offset


def log_softmax(logits):
    """Numerically stable log-softmax over the last axis."""
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def causal_attention(q, k, v, num_heads):
    """Multi-head causal self-attention of the projections ``q, k, v`` ``[B, T, d]`` -> ``[B, T, d]``."""
    b, t, d = q.shape
    hd = d // num_heads

    def heads(x):
        return x.reshape(b, t, num_heads, hd).transpose(0, 2, 1, 3)  # [B, H, T, hd]

    q, k, v = heads(q), heads(k), heads(v)
    scores = q @ k.transpose(0, 1, 3, 2) / np.asarray(math.sqrt(hd), q.dtype)  # [B, H, T, T]
    mask = np.tril(np.ones((t, t), dtype=bool))  # [T, T]
    scores = np.where(mask, scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)  # [B, H, T, T]
    probs /= probs.sum(axis=-1, keepdims=True)
    return (probs @ v).transpose(0, 2, 1, 3).reshape(b, t, d)  # [B, T, d]


class NumpyOps:
    """The operations ``forward`` chains, in plain NumPy.

    ``forward`` calls every weighted operation through an ``ops`` object, so
    that training runs the very same chain with ops that also record what the
    backward pass needs (``lmc_ref.transformer.backprop.Tape``); ``key`` names
    the step for that record (the weight's name).  Here it is unused.
    """

    @staticmethod
    def embed(table, tokens, key):
        return table[tokens] * np.asarray(math.sqrt(table.shape[1]), table.dtype)  # [B, T, d]

    @staticmethod
    def linear(x, w, b, key):
        return x @ w if b is None else x @ w + b

    @staticmethod
    def attention(q, k, v, num_heads, key):
        return causal_attention(q, k, v, num_heads)

    @staticmethod
    def layer_norm(x, scale, offset, key):
        return layer_norm(x, scale, offset)

    @staticmethod
    def gelu(x, key):
        return gelu(x)


# --8<-- [start:forward]
def forward(params, config, targets, ops=NumpyOps):
    """Log-probabilities ``[B, T, 256]``: entry ``[b, t]`` is the model's pdf for ``targets[b, t]``.

    Args:
        params: weights from ``init_params`` or a checkpoint (float32 or float64).
        config: a name in ``CONFIGS`` or a config dict.
        targets: integer array ``[B, T]`` (or ``[T]``) of bytes.
        ops: the operations to chain (``NumpyOps``; training passes a ``backprop.Tape``).
    """
    cfg = get_config(config)
    targets = np.asarray(targets)
    squeeze = targets.ndim == 1
    if squeeze:
        targets = targets[None]
    d = cfg["d_model"]
    inputs = shift_right(targets)  # [B, T]
    h = ops.embed(params["embed"], inputs, "embed")  # [B, T, d]: embedding * sqrt(d)
    h = h + sinusoid_positions(targets.shape[1], d).astype(h.dtype)  # [B, T, d]
    for i in range(cfg["num_layers"]):
        p = f"layer{i}."
        q, k, v = (ops.linear(h, params[p + w], None, p + w) for w in ("wq", "wk", "wv"))  # [B, T, d] each
        att = ops.attention(q, k, v, cfg["num_heads"], p + "att")  # [B, T, d]
        att = ops.linear(att, params[p + "wo"], None, p + "wo")  # [B, T, d]
        h = ops.layer_norm(h + att, params[p + "ln1.scale"], params[p + "ln1.offset"], p + "ln1")  # [B, T, d]
        ff = ops.linear(h, params[p + "ffn1.w"], params[p + "ffn1.b"], p + "ffn1")  # [B, T, 4d]
        ff = ops.gelu(ff, p + "gelu")  # [B, T, 4d]
        ff = ops.linear(ff, params[p + "ffn2.w"], params[p + "ffn2.b"], p + "ffn2")  # [B, T, d]
        h = ops.layer_norm(h + ff, params[p + "ln2.scale"], params[p + "ln2.offset"], p + "ln2")  # [B, T, d]
    logits = ops.linear(h, params["out.w"], params["out.b"], "out")  # [B, T, 256]
    logp = log_softmax(logits)  # [B, T, 256]
    return logp[0] if squeeze else logp
# --8<-- [end:forward]


if __name__ == "__main__":
    for _name in CONFIGS:
        print(f"{_name:8s} {param_count(_name):>10,d} parameters  {CONFIGS[_name]}")
