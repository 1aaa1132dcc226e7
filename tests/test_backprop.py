"""Hand-written backward pass vs central finite differences (float64), op by op and whole model."""

import numpy as np
import pytest

from lmc_ref.transformer import backprop as bp
from lmc_ref.transformer import model as tf

TINY = {"d_model": 8, "num_heads": 2, "num_layers": 2}


def numeric_grad(f, x, eps=1e-6):
    """Central finite differences of the scalar ``f()`` w.r.t. every entry of ``x`` (in place)."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        up = f()
        x[i] = old - eps
        down = f()
        x[i] = old
        g[i] = (up - down) / (2 * eps)
    return g


def check(analytic, numeric, tol=1e-6):
    np.testing.assert_allclose(analytic, numeric, rtol=tol, atol=tol)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def test_param_counts():
    assert tf.param_count("default") == 231_936
    assert tf.param_count("200K") == 231_936
    assert tf.param_count("800K") == 856_832
    assert tf.param_count("3.2M") == 3_286_272
    for name in tf.CONFIGS:
        params = tf.init_params(name)
        assert sum(w.size for w in params.values()) == tf.param_count(name)
        assert all(w.dtype == np.float32 for w in params.values())


def test_linear(rng):
    x, w, b = rng.normal(size=(2, 3, 4)), rng.normal(size=(4, 5)), rng.normal(size=5)
    r = rng.normal(size=(2, 3, 5))

    def f():
        return (bp.linear_fwd(x, w, b)[0] * r).sum()

    dx, dw, db = bp.linear_bwd(r, bp.linear_fwd(x, w, b)[1])
    check(dx, numeric_grad(f, x))
    check(dw, numeric_grad(f, w))
    check(db, numeric_grad(f, b))
    assert bp.linear_bwd(r, bp.linear_fwd(x, w)[1])[2] is None


def test_embedding_and_positions(rng):
    table = rng.normal(size=(256, 6))
    tokens = np.array([[0, 5, 5, 255], [7, 0, 5, 1]])
    r = rng.normal(size=(2, 4, 6))

    def f():
        return (bp.pos_fwd(bp.embed_fwd(table, tokens)[0]) * r).sum()

    _, cache = bp.embed_fwd(table, tokens)
    dtable = bp.embed_bwd(bp.pos_bwd(r), cache)
    rows = [0, 1, 5, 7, 255, 3]  # used and unused rows
    num = numeric_grad(f, table)
    check(dtable[rows], num[rows])
    check(dtable, num)


def test_attention(rng):
    q, k, v = (rng.normal(size=(2, 5, 6)) for _ in range(3))
    r = rng.normal(size=(2, 5, 6))

    def f():
        return (bp.attention_fwd(q, k, v, 3)[0] * r).sum()

    dq, dk, dv = bp.attention_bwd(r, bp.attention_fwd(q, k, v, 3)[1])
    check(dq, numeric_grad(f, q))
    check(dk, numeric_grad(f, k))
    check(dv, numeric_grad(f, v))


def test_attention_is_causal(rng):
    q, k, v = (rng.normal(size=(1, 6, 4)) for _ in range(3))
    out = bp.attention_fwd(q, k, v, 2)[0]
    k2, v2 = k.copy(), v.copy()
    k2[:, 3:] += 5.0
    v2[:, 3:] -= 5.0
    np.testing.assert_array_equal(out[:, :3], bp.attention_fwd(q, k2, v2, 2)[0][:, :3])


def test_layernorm(rng):
    x, s, o = rng.normal(size=(2, 3, 7)), rng.normal(size=7), rng.normal(size=7)
    r = rng.normal(size=(2, 3, 7))

    def f():
        return (bp.layernorm_fwd(x, s, o)[0] * r).sum()

    dx, ds, do = bp.layernorm_bwd(r, bp.layernorm_fwd(x, s, o)[1])
    check(dx, numeric_grad(f, x))
    check(ds, numeric_grad(f, s))
    check(do, numeric_grad(f, o))
    np.testing.assert_allclose(bp.layernorm_fwd(x, s, o)[0], tf.layer_norm(x, s, o))


def test_gelu(rng):
    x = rng.normal(size=(3, 5)) * 3
    r = rng.normal(size=(3, 5))

    def f():
        return (bp.gelu_fwd(x)[0] * r).sum()

    check(bp.gelu_bwd(r, bp.gelu_fwd(x)[1]), numeric_grad(f, x))
    np.testing.assert_allclose(bp.gelu_fwd(x)[0], tf.gelu(x))


def test_log_softmax_nll(rng):
    logits = rng.normal(size=(2, 3, 11)) * 4
    targets = np.array([[0, 10, 4], [4, 4, 1]])

    def f():
        return bp.nll_fwd(logits, targets)[0]

    loss, logp, cache = bp.nll_fwd(logits, targets)
    check(bp.nll_bwd(cache), numeric_grad(f, logits))
    np.testing.assert_allclose(logp, tf.log_softmax(logits))


@pytest.mark.parametrize("layers", [1, 2])
def test_whole_model_gradient(rng, layers):
    cfg = dict(TINY, num_layers=layers)
    params = tf.init_params(cfg, seed=layers, dtype=np.float64)
    for name in params:  # non-trivial LayerNorm weights and biases, too
        params[name] += 0.1 * rng.normal(size=params[name].shape)
    targets = rng.integers(0, 256, size=(2, 6))
    loss, grads = bp.loss_and_grads(params, cfg, targets)
    assert set(grads) == set(params)
    for name, w in params.items():
        assert grads[name].shape == w.shape, name
        if name == "embed":  # only the rows of used tokens are non-zero: check those
            rows = np.unique(tf.shift_right(targets))
            sub = w[rows].copy()

            def f():
                params["embed"][rows] = sub
                return bp.model_fwd(params, cfg, targets)[0]

            check(grads[name][rows], numeric_grad(f, sub), tol=1e-5)
            params["embed"][rows] = sub
            unused = np.setdiff1d(np.arange(256), rows)
            assert not grads[name][unused].any()
            continue
        check(grads[name], numeric_grad(lambda: bp.model_fwd(params, cfg, targets)[0], w), tol=1e-5)


def test_training_forward_matches_model_forward(rng):
    params = tf.init_params("default", seed=3)
    targets = rng.integers(0, 256, size=(2, 33))
    _, logp, _ = bp.model_fwd(params, "default", targets)
    np.testing.assert_allclose(logp, tf.forward(params, "default", targets), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tf.forward(params, "default", targets[0]), logp[0], rtol=1e-5, atol=1e-5)


# ------------------------------------------ float32 training kernels vs NumPy ----

@pytest.mark.parametrize("b,t,d,h", [(1, 1, 4, 1), (2, 7, 8, 2), (3, 33, 12, 3), (1, 64, 64, 4)])
def test_fused_attention_matches_the_numpy_reference(rng, b, t, d, h):
    """The Numba kernels (causal rows only, probabilities recomputed from the
    log-sum-exp) give the reference's outputs and gradients to float32 precision."""
    q, k, v, dout = (rng.standard_normal((b, t, d)).astype(np.float32) for _ in range(4))
    o_ref, cache = bp.attention_fwd(q, k, v, h)
    o, fused_cache = bp.attention_fwd_fused(q, k, v, h)
    np.testing.assert_allclose(o, o_ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(bp.attention_bwd_fused(dout, fused_cache), bp.attention_bwd(dout, cache)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_fused_attention_is_causal(rng):
    q, k, v = (rng.standard_normal((1, 9, 8)).astype(np.float32) for _ in range(3))
    k2, v2 = k.copy(), v.copy()
    k2[:, 5:] += 3.0
    v2[:, 5:] -= 2.0
    out = bp.attention_fwd_fused(q, k, v, 2)[0]
    np.testing.assert_array_equal(out[:, :5], bp.attention_fwd_fused(q, k2, v2, 2)[0][:, :5])


def test_fused_gelu_matches_the_numpy_reference(rng):
    x = (rng.standard_normal((3, 5, 16)) * 4).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    y_ref, cache = bp.gelu_fwd(x)
    y, fused_cache = bp.gelu_fwd_fused(x)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(bp.gelu_bwd_fused(dout, fused_cache), bp.gelu_bwd(dout, cache), rtol=1e-4, atol=1e-4)


def test_rational_tanh_is_accurate():
    from numba import njit

    from lmc_ref.transformer.backprop_kernels import tanh_f32

    x = np.linspace(-12, 12, 200_001).astype(np.float32)
    got = njit(lambda a: np.array([tanh_f32(v) for v in a], np.float32))(x)
    assert np.abs(got - np.tanh(x.astype(np.float64))).max() < 5e-7


def test_float32_training_gradients_match_float64(rng):
    """The whole float32 step (fused kernels) against the float64 NumPy reference."""
    params = tf.init_params(TINY, seed=3, dtype=np.float64)
    targets = rng.integers(0, 256, size=(2, 11))
    loss64, g64 = bp.loss_and_grads(params, TINY, targets)
    loss32, g32 = bp.loss_and_grads({k: w.astype(np.float32) for k, w in params.items()}, TINY, targets)
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    for name in g64:
        np.testing.assert_allclose(g32[name], g64[name], rtol=2e-3, atol=2e-5, err_msg=name)
