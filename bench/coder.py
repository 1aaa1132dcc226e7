"""Benchmark: our quantize + arithmetic coder against constriction's range coder.

Run (about 2-3 minutes)::

    LMC_REF_DATA=../shared/data .venv/bin/python bench/coder.py

Workload: 1,000,000 symbols, the bytes of ``$LMC_REF_DATA/enwik8_head``
(wrapped around if the file is shorter).  Every symbol gets its own 256-entry
float32 probability vector from a *static* order-2 byte model fitted on those
same symbols (counts per 2-byte context, +1 smoothing), so encoder and decoder
see identical float pdfs.  Building a batch of pdfs is not timed.

Two batch sizes, both timed, both printed:

* **1,000 symbols (the headline figures).**  A batch of pdfs is 1 MB and sits
  in the CPU cache when it is coded, as a model's pdf does in a real
  predict-then-code loop (the model has just written it).  This measures the
  coders' own work.
* **100,000 symbols ("streaming").**  A batch is 100 MB, so every pdf is read
  from main memory: the figures then also depend on the machine's memory
  bandwidth (1 KB per symbol), which both coders share.

Timed, best of 3 repeats, JIT warmed first:

(a) constriction: ``constriction.stream.queue.RangeEncoder`` / ``RangeDecoder``
    with the batched family ``constriction.stream.model.Categorical(perfect=False)``,
    one ``encode``/``decode`` call per batch with the 2-D float32 pdf array;
(b) ours: one ``@njit`` loop per batch, as a fused predictor loop runs it:
    ``quantize_interval`` + ``encode_interval`` (decode: ``decoder_target`` +
    ``quantize_search`` + ``decode_interval``), from the same float32 pdfs;
(b') ours with the whole CDF built per symbol: ``quantize_into`` + ``encode_symbol``
    (decode: ``quantize_into`` + ``decode_symbol``, a binary search);
(c) ours, coder only: the CDFs quantized beforehand (untimed).

Both coders must round-trip.  Sizes are compared with the ideal code length of
the float model (-log2 p) and of our quantized model (-log2 f / 2**CDF_BITS);
our overhead is measured against the latter.  The last line printed is one JSON
object with every figure.
"""

import json
import time

import constriction
import numpy as np
from common import text_sample
from numba import njit

from lmc_ref.coder import (
    decode_interval,
    decode_symbol,
    decoder_init,
    decoder_target,
    encode_interval,
    encode_symbol,
    encoder_finish,
    encoder_init,
    max_encoded_bytes,
)
from lmc_ref.constants import CDF_BITS
from lmc_ref.quantize import quantize_interval, quantize_into, quantize_search

N_SYMBOLS = 1_000_000
BATCH = 1_000  # 1 MB of float32 pdfs: cache-resident, like a pdf a model has just computed
STREAM_BATCH = 100_000  # 100 MB: every pdf comes from main memory
REPEATS = 3
K = 256


def load_symbols():
    data = np.frombuffer(text_sample(), dtype=np.uint8)
    return np.resize(data, N_SYMBOLS).astype(np.int64)  # wraps around if shorter


def order2_model(symbols):
    """Static order-2 model: context ids [N] and a [65536, 256] float32 probability table."""
    prev1 = np.concatenate([[0], symbols[:-1]])
    prev2 = np.concatenate([[0, 0], symbols[:-2]])
    ctx = prev2 * 256 + prev1  # [N]
    counts = np.bincount(ctx * 256 + symbols, minlength=65536 * 256).reshape(65536, 256)
    table = (counts + 1.0) / (counts.sum(axis=1, keepdims=True) + 256.0)
    return ctx, table.astype(np.float32)  # [65536, 256]


@njit(cache=True)
def ours_encode(pdfs, symbols, st, out):
    for i in range(symbols.shape[0]):
        lo, hi = quantize_interval(pdfs[i], symbols[i])
        encode_interval(st, out, lo, hi)


@njit(cache=True)
def ours_decode(pdfs, st, data, res):
    for i in range(res.shape[0]):
        s, lo, hi = quantize_search(pdfs[i], decoder_target(st))
        decode_interval(st, data, lo, hi)
        res[i] = s


@njit(cache=True)
def full_cdf_encode(pdfs, symbols, st, out):
    cdf = np.empty(pdfs.shape[1] + 1, dtype=np.int64)
    for i in range(symbols.shape[0]):
        quantize_into(pdfs[i], cdf)
        encode_symbol(st, out, cdf, symbols[i])


@njit(cache=True)
def full_cdf_decode(pdfs, st, data, res):
    cdf = np.empty(pdfs.shape[1] + 1, dtype=np.int64)
    for i in range(res.shape[0]):
        quantize_into(pdfs[i], cdf)
        res[i] = decode_symbol(st, data, cdf)


@njit(cache=True)
def quantize_rows(pdfs, cdfs):
    for i in range(pdfs.shape[0]):
        quantize_into(pdfs[i], cdfs[i])


@njit(cache=True)
def coder_only_encode(cdfs, symbols, st, out):
    for i in range(symbols.shape[0]):
        encode_symbol(st, out, cdfs[i], symbols[i])


@njit(cache=True)
def coder_only_decode(cdfs, st, data, res):
    for i in range(res.shape[0]):
        res[i] = decode_symbol(st, data, cdfs[i])


@njit(cache=True)
def quantized_ideal_bits(cdfs, symbols):
    bits = 0.0
    for i in range(symbols.shape[0]):
        bits += CDF_BITS - np.log2(cdfs[i, symbols[i] + 1] - cdfs[i, symbols[i]])
    return bits


def timed(fn, *args):
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


def run_repeat(symbols, ctx, table, stats, batch=BATCH):
    """One pass over all batches; returns the seconds of each timed phase."""
    n = symbols.shape[0]
    secs = dict.fromkeys(["c_enc", "c_dec", "o_enc", "o_dec", "f_enc", "f_dec", "q_enc", "q_dec"], 0.0)
    family = constriction.stream.model.Categorical(perfect=False)
    batches = [(s, min(s + batch, n)) for s in range(0, n, batch)]
    sym32 = symbols.astype(np.int32)

    # Encoders run over every batch, then decoders (a stream must be finished first).
    c_enc = constriction.stream.queue.RangeEncoder()
    o_st, o_out = encoder_init(), np.zeros(max_encoded_bytes(n), dtype=np.uint8)
    q_st, q_out = encoder_init(), np.zeros(max_encoded_bytes(n), dtype=np.uint8)
    f_st, f_out = encoder_init(), np.zeros(max_encoded_bytes(n), dtype=np.uint8)
    cdfs = np.empty((batch, K + 1), dtype=np.int64)  # [B, 257]
    ideal_q = ideal_f = 0.0
    for a, b in batches:
        pdfs = table[ctx[a:b]]  # [B, 256] float32, untimed
        t, _ = timed(c_enc.encode, sym32[a:b], family, pdfs)
        secs["c_enc"] += t
        t, _ = timed(ours_encode, pdfs, symbols[a:b], o_st, o_out)
        secs["o_enc"] += t
        t, _ = timed(full_cdf_encode, pdfs, symbols[a:b], f_st, f_out)
        secs["f_enc"] += t
        quantize_rows(pdfs, cdfs[: b - a])  # untimed
        t, _ = timed(coder_only_encode, cdfs[: b - a], symbols[a:b], q_st, q_out)
        secs["q_enc"] += t
        ideal_q += quantized_ideal_bits(cdfs[: b - a], symbols[a:b])
        p = pdfs[np.arange(b - a), symbols[a:b]].astype(np.float64)
        ideal_f += float(-np.sum(np.log2(p / pdfs.astype(np.float64).sum(axis=1))))
    t0 = time.perf_counter()
    c_words = c_enc.get_compressed()
    secs["c_enc"] += time.perf_counter() - t0
    t, o_len = timed(encoder_finish, o_st, o_out)
    secs["o_enc"] += t
    q_len = encoder_finish(q_st, q_out)
    f_len = encoder_finish(f_st, f_out)
    o_payload, q_payload = o_out[:o_len].copy(), q_out[:q_len].copy()
    assert np.array_equal(o_payload, q_payload), "fused and coder-only streams differ"
    assert np.array_equal(o_payload, f_out[:f_len]), "lazy and full-CDF streams differ"

    c_dec = constriction.stream.queue.RangeDecoder(c_words)
    o_dst, q_dst, f_dst = decoder_init(o_payload), decoder_init(q_payload), decoder_init(o_payload)
    res = np.empty(batch, dtype=np.int64)
    for a, b in batches:
        pdfs = table[ctx[a:b]]
        t, got = timed(c_dec.decode, family, pdfs)
        secs["c_dec"] += t
        assert np.array_equal(got, sym32[a:b]), "constriction round trip failed"
        t, _ = timed(ours_decode, pdfs, o_dst, o_payload, res[: b - a])
        secs["o_dec"] += t
        assert np.array_equal(res[: b - a], symbols[a:b]), "our round trip failed"
        t, _ = timed(full_cdf_decode, pdfs, f_dst, o_payload, res[: b - a])
        secs["f_dec"] += t
        assert np.array_equal(res[: b - a], symbols[a:b]), "full-CDF round trip failed"
        quantize_rows(pdfs, cdfs[: b - a])
        t, _ = timed(coder_only_decode, cdfs[: b - a], q_dst, q_payload, res[: b - a])
        secs["q_dec"] += t
        assert np.array_equal(res[: b - a], symbols[a:b]), "coder-only round trip failed"

    stats.update(
        ours_bits=8 * int(o_len),
        constriction_bits=32 * int(c_words.shape[0]),
        ideal_quantized_bits=ideal_q,
        ideal_float_bits=ideal_f,
    )
    return secs


def best_of(symbols, ctx, table, stats, batch):
    best = None
    for _ in range(REPEATS):
        secs = run_repeat(symbols, ctx, table, stats, batch=batch)
        best = secs if best is None else {k: min(v, secs[k]) for k, v in best.items()}
    return best


def main():
    symbols = load_symbols()
    ctx, table = order2_model(symbols)
    # Warm the JIT and constriction on a small slice.
    run_repeat(symbols[:2000], ctx[:2000], table, {}, batch=1000)

    stats = {}
    best = best_of(symbols, ctx, table, stats, BATCH)
    stream = best_of(symbols, ctx, table, {}, STREAM_BATCH)

    n = symbols.shape[0]
    rate = {k: n / v for k, v in best.items()}
    bps = {k: stats[k] / n for k in stats}
    print(f"symbols: {n:,} from enwik8_head, static order-2 model (+1 smoothing), batches of {BATCH:,}")
    print(f"{'':28s}{'encode sym/s':>16s}{'decode sym/s':>16s}")
    print(f"{'constriction Range+Categorical':28s}{rate['c_enc']:16,.0f}{rate['c_dec']:16,.0f}")
    print(f"{'ours (lazy quantize+coder)':28s}{rate['o_enc']:16,.0f}{rate['o_dec']:16,.0f}")
    print(f"{'ours (full CDF+coder)':28s}{rate['f_enc']:16,.0f}{rate['f_dec']:16,.0f}")
    print(f"{'ours coder only':28s}{rate['q_enc']:16,.0f}{rate['q_dec']:16,.0f}")
    print(f"speed-up vs constriction: encode {best['c_enc'] / best['o_enc']:.2f}x, "
          f"decode {best['c_dec'] / best['o_dec']:.2f}x (targets >= 1.5x)")
    print(f"streaming from memory (batches of {STREAM_BATCH:,}): encode "
          f"{stream['c_enc'] / stream['o_enc']:.2f}x, decode {stream['c_dec'] / stream['o_dec']:.2f}x "
          f"(ours {n / stream['o_enc']:,.0f} / {n / stream['o_dec']:,.0f} sym/s, constriction "
          f"{n / stream['c_enc']:,.0f} / {n / stream['c_dec']:,.0f})")
    print(f"bits/symbol: float ideal {bps['ideal_float_bits']:.6f}, quantized ideal "
          f"{bps['ideal_quantized_bits']:.6f}, ours {bps['ours_bits']:.6f}, "
          f"constriction {bps['constriction_bits']:.6f}")
    overhead = (stats["ours_bits"] - stats["ideal_quantized_bits"]) / n
    print(f"our overhead vs quantized ideal: {overhead:.2e} bit/symbol (target <= 1e-3)")
    print(json.dumps({
        "bench": "coder",
        "symbols": n,
        "batch": BATCH,
        "model": "static order-2, +1 smoothing, float32 pdfs",
        "cdf_bits": CDF_BITS,
        "encode_speedup_vs_constriction": round(best["c_enc"] / best["o_enc"], 3),
        "decode_speedup_vs_constriction": round(best["c_dec"] / best["o_dec"], 3),
        "ours_encode_sym_per_s": round(rate["o_enc"]),
        "ours_decode_sym_per_s": round(rate["o_dec"]),
        "constriction_encode_sym_per_s": round(rate["c_enc"]),
        "constriction_decode_sym_per_s": round(rate["c_dec"]),
        "full_cdf_encode_sym_per_s": round(rate["f_enc"]),
        "full_cdf_decode_sym_per_s": round(rate["f_dec"]),
        "coder_only_encode_sym_per_s": round(rate["q_enc"]),
        "coder_only_decode_sym_per_s": round(rate["q_dec"]),
        "streaming_batch": STREAM_BATCH,
        "streaming_encode_speedup_vs_constriction": round(stream["c_enc"] / stream["o_enc"], 3),
        "streaming_decode_speedup_vs_constriction": round(stream["c_dec"] / stream["o_dec"], 3),
        "overhead_bits_per_symbol": overhead,
        "ours_bits_per_symbol": bps["ours_bits"],
        "constriction_bits_per_symbol": bps["constriction_bits"],
        "ideal_quantized_bits_per_symbol": bps["ideal_quantized_bits"],
        "ideal_float_bits_per_symbol": bps["ideal_float_bits"],
        "round_trip": True,
    }))


if __name__ == "__main__":
    main()
