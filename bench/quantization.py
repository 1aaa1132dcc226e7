"""Benchmark: what quantizing float pdfs to 2**CDF_BITS integer frequencies costs.

Run (about a minute)::

    LMC_REF_DATA=../shared/data .venv/bin/python bench/quantization.py

This is the measurement behind ``CDF_BITS`` in ``lmc_ref/constants.py``.  For
each CDF_BITS in (12, 14, ..., 24) it prints, per family of 256-symbol pdfs,

* the realised relative cost of coding with the quantized model q instead of
  the float model p, over the actually coded symbols x (in %)::

      cost = sum_x -log2 q(x) / sum_x -log2 p(x) - 1

* and the expected cost, sum KL(p || q) / sum H(p) (in %): what the cost would
  be if the data really came from p.  It is never negative; the realised cost
  can be, when the model is miscalibrated (quantization moves mass from the
  improbable symbols to the most probable one, which helps an underconfident model).

Families (the first 200,000 bytes of ``$LMC_REF_DATA/enwik8_head``):

* ``order2_static``: the model of ``bench/coder.py``: counts per 2-byte context
  fitted on the data, +1 smoothing.  Underconfident (flat in rare contexts).
* ``order2_adaptive`` / ``order3_adaptive``: adaptive order-2 / order-3 byte models
  (counts per exact 2-byte / hashed 3-byte context, updated after each byte,
  add-1/64 smoothing, the best of 1, 1/4, 1/16, 1/64, 1/256 on these bytes):
  roughly calibrated, sharp in familiar contexts;
* ``softmax_sigma4`` / ``softmax_sigma8``: softmax of N(0, 4**2) / N(0, 8**2)
  logits, the coded symbol drawn from the pdf itself (about 2.6 / 1.0 bits per
  symbol): stand-ins for confident neural models (the paper's LMs reach about
  1 bit per byte or less on enwik).

Every width uses exactly the library's rule, through
``lmc_ref.quantize.quantize_units`` (``quantize_into`` with another total).  The last line printed is one JSON object.
"""

import json

import numpy as np
from common import text_sample
from numba import njit

from lmc_ref.constants import CDF_BITS
from lmc_ref.quantize import quantize, quantize_units

BITS = (12, 14, 16, 18, 20, 22, 24)
N_SYMBOLS = 200_000
BATCH = 20_000
K = 256


@njit(cache=True)
def _quantize_rows(pdfs, freqs, units):
    cdf = np.empty(pdfs.shape[1] + 1, dtype=np.int64)
    for r in range(pdfs.shape[0]):
        quantize_units(pdfs[r], cdf, units)
        for s in range(pdfs.shape[1]):
            freqs[r, s] = cdf[s + 1] - cdf[s]


def quantize_rows(pdfs, bits):
    """Integer frequencies [B, K] of each row of ``pdfs`` [B, K], total 2**bits, by the
    library's own rule (``lmc_ref.quantize.quantize_units``)."""
    freqs = np.empty(pdfs.shape, dtype=np.int64)
    _quantize_rows(np.ascontiguousarray(pdfs), freqs, 1 << bits)
    return freqs


def load_symbols():
    data = np.frombuffer(text_sample(), dtype=np.uint8)
    return np.resize(data, N_SYMBOLS).astype(np.int64)  # wraps around if shorter


def order2_static(symbols):
    """Yield ([B, K] float64 pdfs, [B] symbols) batches of the static order-2 model."""
    prev1 = np.concatenate([[0], symbols[:-1]])
    prev2 = np.concatenate([[0, 0], symbols[:-2]])
    ctx = prev2 * 256 + prev1
    counts = np.bincount(ctx * 256 + symbols, minlength=65536 * 256).reshape(65536, 256)
    table = ((counts + 1.0) / (counts.sum(axis=1, keepdims=True) + 256.0)).astype(np.float32)
    for a in range(0, symbols.shape[0], BATCH):
        yield table[ctx[a : a + BATCH]].astype(np.float64), symbols[a : a + BATCH]


@njit(cache=True)
def _adaptive_batch(symbols, order, beta, start, stop, counts, totals, out):
    for i in range(start, stop):
        c = 0
        for j in range(1, order + 1):
            c = c * 256 + (symbols[i - j] if i - j >= 0 else 0)
        h = c if order <= 2 else (c * 2654435761) & (counts.shape[0] - 1)  # hashed for order 3
        for s in range(256):
            out[i - start, s] = (counts[h, s] + beta) / (totals[h] + 256.0 * beta)
        counts[h, symbols[i]] += 1
        totals[h] += 1


def adaptive(symbols, order, beta=1.0 / 64.0):
    """Yield batches of an adaptive order-``order`` model (pdf computed before the update)."""
    n_ctx = 1 << 16 if order <= 2 else 1 << 17
    counts = np.zeros((n_ctx, 256), dtype=np.int32)  # [contexts, 256], up to 128 MiB
    totals = np.zeros(n_ctx, dtype=np.int64)
    out = np.empty((BATCH, K), dtype=np.float64)
    for a in range(0, symbols.shape[0], BATCH):
        b = min(a + BATCH, symbols.shape[0])
        _adaptive_batch(symbols, order, beta, a, b, counts, totals, out)
        yield out[: b - a], symbols[a:b]


def softmax(n, sigma, seed=0):
    rng = np.random.default_rng(seed)
    for a in range(0, n, BATCH):
        z = rng.normal(size=(min(BATCH, n - a), K)) * sigma
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        u = rng.random(p.shape[0])[:, None]
        x = np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), K - 1)
        yield p, x


def measure(batches):
    """Realised and expected relative cost (%) per CDF_BITS, and the float model's bits/symbol."""
    float_bits = entropy = 0.0
    quant_bits = dict.fromkeys(BITS, 0.0)
    kl = dict.fromkeys(BITS, 0.0)
    n = 0
    for pdfs, x in batches:
        rows = np.arange(x.shape[0])
        p = pdfs / pdfs.sum(axis=1, keepdims=True)  # [B, K]
        float_bits += float(-np.sum(np.log2(p[rows, x])))
        entropy += float(-np.sum(p * np.log2(p)))
        n += x.shape[0]
        for bits in BITS:
            f = quantize_rows(pdfs, bits)  # [B, K]
            quant_bits[bits] += float(np.sum(bits - np.log2(f[rows, x])))
            kl[bits] += float(np.sum(p * (np.log2(p) - (np.log2(f) - bits))))
    cost = {bits: 100.0 * (quant_bits[bits] / float_bits - 1.0) for bits in BITS}
    expected = {bits: 100.0 * kl[bits] / entropy for bits in BITS}
    return cost, expected, float_bits / n


def check_quantizer(symbols):
    """The recompiled kernel at CDF_BITS must equal the library's ``quantize``."""
    pdfs, _ = next(adaptive(symbols[:BATCH], 2))
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, K)) * 4.0
    extra = np.vstack([np.exp(z), [np.full(K, np.nan)], [np.r_[np.inf, -1.0, np.zeros(K - 2)]]])
    for rows in (pdfs[::97], extra):
        f = quantize_rows(rows, CDF_BITS)
        for r in range(rows.shape[0]):
            assert np.array_equal(np.diff(quantize(rows[r])), f[r]), "quantizer_for(CDF_BITS) != quantize"


def main():
    symbols = load_symbols()
    check_quantizer(symbols)
    families = {
        "order2_static": lambda: order2_static(symbols),
        "order2_adaptive": lambda: adaptive(symbols, 2),
        "order3_adaptive": lambda: adaptive(symbols, 3),
        "softmax_sigma4": lambda: softmax(N_SYMBOLS, 4.0),
        "softmax_sigma8": lambda: softmax(N_SYMBOLS, 8.0),
    }
    results = {}
    head = f"{'family':18s}{'bits/sym':>9s}" + "".join(f"{b:>10d}" for b in BITS)
    rows_real, rows_exp = [], []
    for name, make in families.items():
        cost, expected, bps = measure(make())
        results[name] = {
            "float_bits_per_symbol": round(bps, 4),
            "cost_percent": {str(b): float(f"{cost[b]:.3g}") for b in BITS},
            "expected_cost_percent": {str(b): float(f"{expected[b]:.3g}") for b in BITS},
        }
        rows_real.append(f"{name:18s}{bps:9.3f}" + "".join(f"{cost[b]:10.5f}" for b in BITS))
        rows_exp.append(f"{name:18s}{bps:9.3f}" + "".join(f"{expected[b]:10.5f}" for b in BITS))
    print(f"realised cost of 2**CDF_BITS quantization, {N_SYMBOLS:,} symbols per family (%)")
    print(head, *rows_real, sep="\n")
    print("expected cost, sum KL(p||q) / sum H(p) (%)")
    print(head, *rows_exp, sep="\n")
    print(json.dumps({"bench": "quantization", "symbols_per_family": N_SYMBOLS, "cdf_bits": CDF_BITS,
                      "families": results}))


if __name__ == "__main__":
    main()
