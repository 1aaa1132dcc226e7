"""Numba kernels for the training step's most expensive operations (float32 only).

``backprop.py`` states every forward and backward operation in NumPy; that is
the reference, and the float64 gradient checks run on it.  For float32
training, the model calls these fused kernels instead where NumPy is slow:

* causal attention, forward and backward, one (sequence, head) pair per
  ``prange`` iteration: the scores above the diagonal are never computed
  (NumPy computes the full T x T matrices and masks them), and the
  softmax, its derivative and the four products run in one pass over a row
  while it is in the cache;
* GELU, forward and backward, in one pass instead of a dozen array temporaries.

Training is allowed fast-math (nothing here feeds the coder: the coding
kernels in ``transformer/infer_cpu.py`` are separate and exact), so
the compiler may reorder the sums; ``tests/test_backprop.py`` checks each
kernel against its NumPy twin to float32 precision.
"""

import math

import numpy as np
from numba import njit, prange

_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)  # ln 2 = _LN2_HI + _LN2_LO, _LN2_HI exact in few bits
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_P = (np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3),
          np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1))


@njit(cache=True, fastmath=True)
def exp_shifted(s, n, m, pow2):
    """In place: ``s[i] = exp(s[i] - m)`` for ``i < n``, where ``s[i] <= m`` (``pow2``: int32 scratch)."""
    p0, p1, p2, p3, p4, p5 = _EXP_P
    for i in range(n):
        x = max(s[i] - m, np.float32(-87.0))  # below e**-87 the weight underflows anyway
        k = np.floor(x * _LOG2E + np.float32(0.5))
        r = (x - k * _LN2_HI) - k * _LN2_LO
        y = ((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5
        s[i] = (y * (r * r) + r) + np.float32(1.0)
        pow2[i] = (np.int32(k) + np.int32(127)) << np.int32(23)  # the bits of 2**k
    scale = pow2.view(np.float32)
    for i in range(n):
        s[i] *= scale[i]




@njit(cache=True)
def _head_transposed(x, b, c, hd):
    """Columns ``c .. c + hd`` of sequence ``b`` of ``x`` ``[B, T, d]``, as a ``[hd, T]`` array."""
    out = np.empty((hd, x.shape[1]), np.float32)  # [hd, T]
    for j in range(x.shape[1]):
        for e in range(hd):
            out[e, j] = x[b, j, c + e]
    return out


# --8<-- [start:attention_kernel]
# Every inner loop runs along the key position j over contiguous memory (the
# head's K and V are copied transposed, [hd, T]), so it vectorises: a score row
# is hd "axpy" passes, an output element a dot product over j.  No slicing in
# the hot loops: slices are array objects whose reference counts Numba updates
# atomically, which threads sharing the array would contend on.
@njit(parallel=True, cache=True, fastmath=True)
def attention_forward(q, k, v, num_heads, lse, o):
    """``o = softmax(q k^T / sqrt(hd) + causal mask) v`` per head.

    q, k, v, o: ``[B, T, d]`` (heads are column blocks of width hd = d / H);
    lse: ``[B, H, T]`` receives each score row's log-sum-exp, from which the
    backward pass recomputes the probabilities instead of storing T x T of them
    (as FlashAttention does: less memory traffic than reading them back).
    """
    b_size, t_size, d = q.shape
    hd = d // num_heads
    scale = np.float32(1.0 / math.sqrt(hd))
    for pair in prange(b_size * num_heads):
        b, h = pair // num_heads, pair % num_heads
        c = h * hd
        kt = _head_transposed(k, b, c, hd)  # [hd, T]
        vt = _head_transposed(v, b, c, hd)  # [hd, T]
        s = np.empty(t_size, np.float32)  # [T] one row of scores, then of probabilities
        pow2 = np.empty(t_size, np.int32)  # scratch of exp_shifted
        for i in range(t_size):
            n = i + 1
            for j in range(n):
                s[j] = 0.0
            for e in range(hd):
                qe = q[b, i, c + e] * scale
                for j in range(n):
                    s[j] += qe * kt[e, j]
            m = s[0]
            for j in range(n):
                m = max(m, s[j])
            exp_shifted(s, n, m, pow2)
            total = np.float32(0.0)
            for j in range(n):
                total += s[j]
            inv = np.float32(1.0) / total
            lse[b, h, i] = m + np.log(total)
            for j in range(n):
                s[j] *= inv
            for e in range(hd):
                acc = np.float32(0.0)
                for j in range(n):
                    acc += s[j] * vt[e, j]
                o[b, i, c + e] = acc


@njit(parallel=True, cache=True, fastmath=True)
def attention_backward(do, q, k, v, lse, num_heads, dq, dk, dv):
    """Gradients of ``attention_forward`` w.r.t. q, k, v (``[B, T, d]`` each), row by row:

    ``dP_ij = dO_i . V_j``, ``dS_ij = P_ij (dP_ij - sum_j' dP_ij' P_ij') / sqrt(hd)``,
    ``dQ_i = sum_j dS_ij K_j``, ``dK_j += dS_ij Q_i``, ``dV_j += P_ij dO_i`` (j <= i).
    """
    b_size, t_size, d = q.shape
    hd = d // num_heads
    scale = np.float32(1.0 / math.sqrt(hd))
    for pair in prange(b_size * num_heads):
        b, h = pair // num_heads, pair % num_heads
        c = h * hd
        kt = _head_transposed(k, b, c, hd)  # [hd, T]
        vt = _head_transposed(v, b, c, hd)  # [hd, T]
        gkt = np.zeros((hd, t_size), np.float32)  # [hd, T] dK of this head, transposed
        gvt = np.zeros((hd, t_size), np.float32)  # [hd, T] dV of this head, transposed
        pr = np.empty(t_size, np.float32)  # [T] row i of P, recomputed
        ds = np.empty(t_size, np.float32)  # [T] row i of dP, then of dS
        pow2 = np.empty(t_size, np.int32)  # scratch of exp_shifted
        for i in range(t_size):
            n = i + 1
            for j in range(n):
                pr[j] = 0.0
                ds[j] = 0.0
            for e in range(hd):
                qe = q[b, i, c + e] * scale
                for j in range(n):
                    pr[j] += qe * kt[e, j]
            exp_shifted(pr, n, lse[b, h, i], pow2)  # P_ij = exp(S_ij - lse_i)
            for e in range(hd):
                g = do[b, i, c + e]
                for j in range(n):
                    ds[j] += g * vt[e, j]
                    gvt[e, j] += g * pr[j]
            dot = np.float32(0.0)
            for j in range(n):
                dot += ds[j] * pr[j]
            for j in range(n):
                ds[j] = pr[j] * (ds[j] - dot) * scale
            for e in range(hd):
                qe = q[b, i, c + e]
                acc = np.float32(0.0)
                for j in range(n):
                    acc += ds[j] * kt[e, j]
                    gkt[e, j] += ds[j] * qe
                dq[b, i, c + e] = acc
        for j in range(t_size):
            for e in range(hd):
                dk[b, j, c + e] = gkt[e, j]
                dv[b, j, c + e] = gvt[e, j]
# --8<-- [end:attention_kernel]


_GELU_C = np.float32(math.sqrt(2.0 / math.pi))
_GELU_A = np.float32(0.044715)
# tanh as a rational function (odd degree-13 numerator, even degree-6 denominator) on
# [-7.9053, 7.9053], where float32 tanh reaches +-1: the minimax coefficients of
# Eigen's float tanh.  Pure multiply-adds, so the loops vectorise (the math
# library's tanhf does not); |error| < 4e-7 against float64 tanh (tested).
_TANH_CLAMP = np.float32(7.90531110763549805)
_TANH_P = (np.float32(-2.76076847742355e-16), np.float32(2.00018790482477e-13), np.float32(-8.60467152213735e-11),
           np.float32(5.12229709037114e-08), np.float32(1.48572235717979e-05), np.float32(6.37261928875436e-04),
           np.float32(4.89352455891786e-03))
_TANH_Q = (np.float32(1.19825839466702e-06), np.float32(1.18534705686654e-04), np.float32(2.26843463243900e-03),
           np.float32(4.89352518554385e-03))


@njit(cache=True, inline="always", fastmath=True)
def tanh_f32(x):
    """float32 tanh by the rational approximation above."""
    x = min(max(x, -_TANH_CLAMP), _TANH_CLAMP)
    x2 = x * x
    p = _TANH_P[0]
    for c in _TANH_P[1:]:
        p = p * x2 + c
    q = _TANH_Q[0]
    for c in _TANH_Q[1:]:
        q = q * x2 + c
    return p * x / q


@njit(parallel=True, cache=True, fastmath=True)
def gelu_forward(x, y, th):
    """``y = 0.5 x (1 + tanh(c (x + a x^3)))``, keeping the tanh for the backward pass (flat arrays)."""
    for i in prange(x.shape[0]):
        xi = x[i]
        t = tanh_f32(_GELU_C * (xi + _GELU_A * xi * xi * xi))
        th[i] = t
        y[i] = np.float32(0.5) * xi * (np.float32(1.0) + t)


@njit(parallel=True, cache=True, fastmath=True)
def gelu_backward(dout, x, th, dx):
    """``dx = dout * d gelu / dx`` from the forward pass's x and tanh (flat arrays)."""
    for i in prange(x.shape[0]):
        xi, t = x[i], th[i]
        dth = (np.float32(1.0) - t * t) * _GELU_C * (np.float32(1.0) + np.float32(3.0) * _GELU_A * xi * xi)
        dx[i] = dout[i] * (np.float32(0.5) * (np.float32(1.0) + t) + np.float32(0.5) * xi * dth)
