"""Hand-written backward pass of the transformer, one function per operation.

Each operation has a ``*_fwd`` that returns its output and a cache, and a
``*_bwd`` that maps the gradient of the loss w.r.t. the output (``dout``) to the
gradients w.r.t. its inputs and weights.  The forward chain is written once,
in ``lmc_ref.transformer.model.forward``: ``model_fwd`` runs it with a ``Tape``
as its operations, which calls the ``*_fwd`` functions and keeps their caches;
``model_bwd`` walks the same chain backwards.  Everything is plain NumPy (BLAS
matmuls) and works in float32 (training) or float64 (gradient checks,
``tests/test_backprop.py``).
"""

import math

import numpy as np

from .model import LN_EPS, forward, get_config, log_softmax, sinusoid_positions


# -- embedding: h = E[tokens] * sqrt(d) ---------------------------------------
def embed_fwd(table, tokens):
    scale = np.asarray(math.sqrt(table.shape[1]), table.dtype)
    return table[tokens] * scale, (tokens, table.shape, scale)  # [B, T, d]


def embed_bwd(dout, cache):
    tokens, shape, scale = cache
    dtable = np.zeros(shape, dout.dtype)  # [V, d]
    np.add.at(dtable, tokens.reshape(-1), dout.reshape(-1, shape[1]) * scale)
    return dtable


# -- positional add: h = x + P -------------------------------------------------
def pos_fwd(x):
    return x + sinusoid_positions(x.shape[-2], x.shape[-1]).astype(x.dtype)  # [B, T, d]


def pos_bwd(dout):
    return dout  # P is a constant: the gradient passes through unchanged


# -- linear: y = x W (+ b) -----------------------------------------------------
def linear_fwd(x, w, b=None):
    y = x @ w  # [..., d_out]
    if b is not None:
        y = y + b
    return y, (x, w, b is not None)


def linear_bwd(dout, cache):
    """Returns ``(dx, dw, db)``; ``db`` is None for a layer without bias."""
    x, w, has_bias = cache
    dx = dout @ w.T  # [..., d_in]
    d2 = dout.reshape(-1, dout.shape[-1])  # [N, d_out]
    dw = x.reshape(-1, x.shape[-1]).T @ d2  # [d_in, d_out]
    return dx, dw, (d2.sum(axis=0) if has_bias else None)


_MASKS = {}


def _causal_mask(t, dtype):
    """``[T, T]`` additive causal mask: 0 on and below the diagonal, -inf above (cached)."""
    key = (t, np.dtype(dtype).str)
    if key not in _MASKS:
        _MASKS[key] = np.triu(np.full((t, t), -np.inf, dtype=dtype), k=1)
    return _MASKS[key]


# -- causal multi-head attention core: (q, k, v) -> softmax(q k^T / sqrt(hd)) v
def attention_fwd(q, k, v, num_heads):
    """``q, k, v``: ``[B, T, d]`` projections; returns the merged heads ``[B, T, d]``."""
    b, t, d = q.shape
    hd = d // num_heads

    def split(x):
        return x.reshape(b, t, num_heads, hd).transpose(0, 2, 1, 3)  # [B, H, T, hd]

    qh, kh, vh = split(q), split(k), split(v)
    scale = np.asarray(1.0 / math.sqrt(hd), q.dtype)
    s = qh @ kh.transpose(0, 1, 3, 2)  # [B, H, T, T]
    s *= scale
    s += _causal_mask(t, q.dtype)  # -inf above the diagonal
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s, out=s)  # [B, H, T, T]; masked entries are exactly 0
    p /= p.sum(axis=-1, keepdims=True)
    o = (p @ vh).transpose(0, 2, 1, 3).reshape(b, t, d)  # [B, T, d]
    return o, (qh, kh, vh, p, scale)


# --8<-- [start:attention_bwd]
def attention_bwd(dout, cache):
    """Gradients w.r.t. ``q, k, v`` (each ``[B, T, d]``).

    With ``o = P V`` and ``P = softmax(S)`` row-wise, ``S = scale * Q K^T``:
    ``dV = P^T dO``, ``dP = dO V^T``, ``dS = P * (dP - rowsum(dP * P))``
    (masked entries have P = 0, so they get no gradient), ``dQ = scale dS K``,
    ``dK = scale dS^T Q``.
    """
    qh, kh, vh, p, scale = cache
    b, h, t, hd = qh.shape
    do = dout.reshape(b, t, h, hd).transpose(0, 2, 1, 3)  # [B, H, T, hd]
    dv = p.transpose(0, 1, 3, 2) @ do  # [B, H, T, hd]
    ds = do @ vh.transpose(0, 1, 3, 2)  # [B, H, T, T]: dP, turned into dS in place
    ds -= np.einsum("bhij,bhij->bhi", ds, p)[..., None]  # dP - rowsum(dP * P)
    ds *= p
    ds *= scale
    dq = ds @ kh  # [B, H, T, hd]
    dk = ds.transpose(0, 1, 3, 2) @ qh  # [B, H, T, hd]

    def merge(x):
        return x.transpose(0, 2, 1, 3).reshape(b, t, h * hd)  # [B, T, d]

    return merge(dq), merge(dk), merge(dv)
# --8<-- [end:attention_bwd]


# -- layer norm -----------------------------------------------------------------
def layernorm_fwd(x, scale, offset):
    mean = x.mean(axis=-1, keepdims=True)  # [..., 1]
    xc = x - mean  # [..., d]
    rstd = 1.0 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + np.asarray(LN_EPS, x.dtype))
    xhat = xc * rstd  # [..., d]
    return xhat * scale + offset, (xhat, rstd, scale)


def layernorm_bwd(dout, cache):
    """Returns ``(dx, dscale, doffset)``."""
    xhat, rstd, scale = cache
    d = xhat.shape[-1]
    dxhat = dout * scale  # [..., d]
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                 - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    flat = dout.reshape(-1, d)
    return dx, (flat * xhat.reshape(-1, d)).sum(axis=0), flat.sum(axis=0)


# -- GELU (tanh approximation) --------------------------------------------------
_GELU_C = math.sqrt(2.0 / math.pi)


def gelu_fwd(x):
    c = np.asarray(_GELU_C, x.dtype)
    a = np.asarray(0.044715, x.dtype)
    th = np.tanh(c * (x + a * x * x * x))
    return 0.5 * x * (1.0 + th), (x, th)


def gelu_bwd(dout, cache):
    x, th = cache
    c = np.asarray(_GELU_C, x.dtype)
    a = np.asarray(0.044715, x.dtype)
    dth = (1.0 - th * th) * c * (1.0 + 3.0 * a * x * x)
    return dout * (0.5 * (1.0 + th) + 0.5 * x * dth)


# -- float32 training: the same operations as fused Numba kernels ----------------
# (lmc_ref/transformer/backprop_kernels.py; tests/test_backprop.py checks them against the
# NumPy functions above, which remain the reference and the float64 path.)
def attention_fwd_fused(q, k, v, num_heads):
    from .backprop_kernels import attention_forward

    b, t, d = q.shape
    q, k, v = (np.ascontiguousarray(x, np.float32) for x in (q, k, v))
    lse = np.empty((b, num_heads, t), np.float32)  # [B, H, T] log-sum-exp of each score row
    o = np.empty_like(q)  # [B, T, d]
    attention_forward(q, k, v, num_heads, lse, o)
    return o, (q, k, v, lse, num_heads)


def attention_bwd_fused(dout, cache):
    from .backprop_kernels import attention_backward

    q, k, v, lse, num_heads = cache
    dq, dk, dv = np.empty_like(q), np.empty_like(q), np.empty_like(q)
    attention_backward(np.ascontiguousarray(dout, np.float32), q, k, v, lse, num_heads, dq, dk, dv)
    return dq, dk, dv


def gelu_fwd_fused(x):
    from .backprop_kernels import gelu_forward

    x = np.ascontiguousarray(x, np.float32)
    y, th = np.empty_like(x), np.empty_like(x)
    gelu_forward(x.reshape(-1), y.reshape(-1), th.reshape(-1))
    return y, (x, th)


def gelu_bwd_fused(dout, cache):
    from .backprop_kernels import gelu_backward

    x, th = cache
    dx = np.empty_like(x)
    gelu_backward(np.ascontiguousarray(dout, np.float32).reshape(-1), x.reshape(-1), th.reshape(-1), dx.reshape(-1))
    return dx


# -- log-softmax + mean negative log-likelihood (nats) ---------------------------
def nll_fwd(logits, targets):
    """Mean over all positions of ``-log softmax(logits)[target]``; returns (loss, log-probs, cache)."""
    logp = log_softmax(logits)  # [B, T, V]
    picked = np.take_along_axis(logp, targets[..., None].astype(np.intp), axis=-1)[..., 0]  # [B, T]
    return -picked.mean(), logp, (logp, targets)


def nll_bwd(cache):
    logp, targets = cache
    g = np.exp(logp)  # [B, T, V]
    np.put_along_axis(g, targets[..., None].astype(np.intp),
                      np.take_along_axis(g, targets[..., None].astype(np.intp), axis=-1) - 1.0, axis=-1)
    return g / targets.size


# -- the whole model ------------------------------------------------------------
class Tape:
    """The operations of ``model.forward`` for training: each runs its ``*_fwd`` and keeps the cache.

    float32 weights run the fused Numba kernels for attention and GELU; float64
    (the gradient checks) runs the NumPy reference of every operation.
    """

    def __init__(self, fused):
        self.fused = fused
        self.caches = {"fused": fused, "fused_att": fused}

    def embed(self, table, tokens, key):
        h, self.caches[key] = embed_fwd(table, tokens)
        return h

    def linear(self, x, w, b, key):
        y, self.caches[key] = linear_fwd(x, w, b)
        return y

    def attention(self, q, k, v, num_heads, key):
        o, self.caches[key] = (attention_fwd_fused if self.fused else attention_fwd)(q, k, v, num_heads)
        return o

    def layer_norm(self, x, scale, offset, key):
        y, self.caches[key] = layernorm_fwd(x, scale, offset)
        return y

    def gelu(self, x, key):
        y, self.caches[key] = (gelu_fwd_fused if self.fused else gelu_fwd)(x)
        return y


def model_fwd(params, config, targets):
    """Returns ``(loss_nats, logp [B, T, 256], caches)`` for a batch of targets ``[B, T]``."""
    targets = np.asarray(targets)
    tape = Tape(fused=params["embed"].dtype == np.float32)
    logp = forward(params, config, targets, ops=tape)  # [B, T, V]
    picked = np.take_along_axis(logp, targets[..., None].astype(np.intp), axis=-1)[..., 0]  # [B, T]
    caches = tape.caches
    caches["nll"] = (logp, targets)
    caches["num_layers"] = get_config(config)["num_layers"]
    return -picked.mean(), logp, caches


def model_bwd(caches):
    """Gradients of the mean NLL w.r.t. every parameter (same names as the params dict)."""
    g = {}
    att_bwd = attention_bwd_fused if caches["fused_att"] else attention_bwd
    act_bwd = gelu_bwd_fused if caches["fused"] else gelu_bwd
    dh, g["out.w"], g["out.b"] = linear_bwd(nll_bwd(caches["nll"]), caches["out"])
    for i in reversed(range(caches["num_layers"])):
        p = f"layer{i}."
        dres, g[p + "ln2.scale"], g[p + "ln2.offset"] = layernorm_bwd(dh, caches[p + "ln2"])
        df, g[p + "ffn2.w"], g[p + "ffn2.b"] = linear_bwd(dres, caches[p + "ffn2"])
        df = act_bwd(df, caches[p + "gelu"])
        dh1, g[p + "ffn1.w"], g[p + "ffn1.b"] = linear_bwd(df, caches[p + "ffn1"])
        dh = dres + dh1  # gradient into the LN1 output (residual + FFN branch)
        dres, g[p + "ln1.scale"], g[p + "ln1.offset"] = layernorm_bwd(dh, caches[p + "ln1"])
        do, g[p + "wo"], _ = linear_bwd(dres, caches[p + "wo"])
        dq, dk, dv = att_bwd(do, caches[p + "att"])
        dh = dres
        for name, dproj in (("wq", dq), ("wk", dk), ("wv", dv)):
            dx, g[p + name], _ = linear_bwd(dproj, caches[p + name])
            dh = dh + dx
    g["embed"] = embed_bwd(pos_bwd(dh), caches["embed"])
    return g


def loss_and_grads(params, config, targets):
    """Mean NLL (nats) of ``targets [B, T]`` and its gradient for every parameter."""
    loss, _, caches = model_fwd(params, config, targets)
    return loss, model_bwd(caches)
