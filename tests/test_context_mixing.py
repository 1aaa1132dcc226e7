"""The context-mixing predictor: components, byte pdf, readable == fused, round trips, specs."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmc_ref.codec import compress, decode_readable, decompress, encode_readable
from lmc_ref.container import unpack
from lmc_ref.predictors import context_mixing as cm
from lmc_ref.predictors import context_mixing_kernels as K
from lmc_ref.predictors import make_predictor

SMALL = "cm:mem=10"


# ------------------------------------------------------------- components ----

def test_squash_inverts_stretch():
    for p in range(1, 4096):
        assert abs(K.squash(int(K.STRETCH[p])) - p) <= 4
    assert all(K.STRETCH[i] <= K.STRETCH[i + 1] for i in range(4095))
    assert [K.squash(d) for d in (-5000, -2047, 0, 2047, 5000)] == [1, 1, 2048, 4095, 4095]


def test_stretch_is_the_logit_in_256ths():
    for p in range(64, 4096 - 64, 37):
        assert K.STRETCH[p] == pytest.approx(256 * math.log(p / (4096 - p)), abs=12)


@pytest.mark.parametrize("freq", [0.05, 0.3, 0.8, 0.97])
def test_counter_converges_to_the_bit_frequency(freq):
    counters = cm.Counters(4, limit=1023)
    bits = np.random.default_rng(1).random(20000) < freq
    for bit in bits:
        counters.update(2, int(bit))
    assert counters.p(2) / 4096 == pytest.approx(freq, abs=0.03)
    assert counters.p(1) == 2048  # other counters untouched


def test_young_counter_is_a_frequency_count():
    counters = cm.Counters(1, limit=1023)
    counters.update(0, 1)
    assert counters.p(0) / 4096 == pytest.approx(5 / 6, abs=0.01)  # (1/2 + 1) / (1 + 1.5) ... p += (1-p)/1.5


def test_counters_start_at_their_priors():
    hist = cm.Counters(K.HISTORY_COUNTERS, K.LIMIT_HISTORY, K.history_prior())
    assert hist.p(K.history_index(0, 0, 0)) == 2048                # no history: 1/2
    assert hist.p(K.history_index(3, 5, 3 << 8)) == 3584           # three ones, no zero: 3.5 / 4
    assert hist.p(K.history_index(7, 7, (2 * 16 + 0) << 8)) == 682  # two zeros: 0.5 / 3
    match = cm.Counters(K.MATCH_COUNTERS, K.LIMIT_MATCH, K.match_prior())
    assert match.p(K.match_context(0, 0, 1, 0, 65)) == 2048        # no match: 1/2
    long_one = K.match_context(0b10000000, 20, 1, 0, 65)           # expects a 1 after a 20-byte match: 21 / 22
    short_zero = K.match_context(0b00000000, 1, 1, 0, 65)          # expects a 0 after a 1-byte match: 1 / 3
    assert match.p(long_one) == 3909 and match.p(short_zero) == 4096 - 2731
    run = cm.Counters(K.RUN_COUNTERS, K.LIMIT_RUN, K.run_prior())
    assert run.p(K.run_context(2, 0xFF, 3, 1, 0)) == 3276          # a run of 3 expecting a 1: 4 / 5
    # a prior is worth a few bits: the first observation against it moves the counter less than from 1/2
    run.update(K.run_context(2, 0xFF, 3, 1, 0), 0)
    assert 3276 * 2 // 3 < run.p(K.run_context(2, 0xFF, 3, 1, 0)) < 3276


def test_mixer_learns_to_trust_the_better_input():
    ROWS = tuple(offset + 3 for offset in K.MIXER_OFFSETS)  # one weight set of each mixer
    rng = np.random.default_rng(7)
    mixer = cm.Mixer()
    x = np.zeros(K.N_INPUTS, np.int64)
    for _ in range(4000):
        bit = int(rng.random() < 0.5)
        good = 0.9 if bit else 0.1                      # input 0 knows the bit
        x[0] = K.STRETCH[int(good * 4096)]
        x[1] = K.STRETCH[int(rng.integers(200, 3896))]  # input 1 is noise
        mixer.p(x, ROWS)
        mixer.update(x, bit, pos=1 << 20)  # the long-run rate
    for row in ROWS:
        w = mixer.weights[row]
        assert w[0] > K.MIX_INIT and w[0] > 4 * abs(w[1])
    x[0], x[1] = K.STRETCH[int(0.9 * 4096)], K.STRETCH[500]
    assert mixer.p(x, ROWS) > 0.9 * 4096  # trusts (and sharpens) the good input, ignores the noise
    fresh = cm.Mixer()  # the other weight sets are untouched
    untouched = [r for r in range(K.MIXER_ROWS) if r not in ROWS]
    assert np.array_equal(mixer.weights[untouched], fresh.weights[untouched])
    assert (fresh.weights[:, :K.X_RUN] == K.MIX_INIT).all() and (fresh.weights[:, K.X_RUN:] == 0).all()


def test_apm_is_monotone_in_its_input():
    apm = cm.APM(4)
    fresh = [apm.p(pr, 1) for pr in range(1, 4096)]
    assert all(a <= b for a, b in zip(fresh, fresh[1:]))
    assert fresh[2047] == pytest.approx(2048 * 16, abs=64)  # an untrained APM is about the identity
    rng = np.random.default_rng(3)
    for _ in range(20000):  # train on a source sharper than its input: bit = (p > 1/2)
        pr = K.squash(int(rng.integers(-2047, 2048)))  # every knot gets its share of updates
        apm.p(pr, 1)
        apm.update(int(pr > 2048), pos=1 << 20)  # the long-run rate
    trained = [apm.p(pr, 1) for pr in range(1, 4096)]
    assert all(a <= b for a, b in zip(trained, trained[1:]))
    assert trained[3000] > fresh[3000] and trained[1000] < fresh[1000]


def test_match_model_follows_a_repeat():
    predictor = make_predictor(SMALL)
    text = b"the quick brown fox jumps over the lazy dog; "
    for byte in text * 3:
        predictor.update(byte)
    assert predictor.match.length > 20
    pdf = predictor.predict()
    assert pdf.argmax() == text[0] and pdf[text[0]] > 0.2  # after 3 repeats: 1/4 of 8 bits to code


def test_match_model_prefers_the_longer_context():
    """A match into the first segment fails at "j"; the last 6 bytes, "efghij", occurred last before "2",
    but the last 10, "ABCDefghij", before "1": the new match follows the 10."""
    predictor = make_predictor(SMALL)
    for byte in b"<qrstuvABCDefghiX> <ABCDefghij1> <WXYZefghij2> <qrstuvABCDefghij":
        predictor.update(byte)
    assert predictor.match.length >= 10
    assert predictor.hist[predictor.match.ptr] == ord("1")


def test_run_model_counts_repeats_and_predicts_the_byte():
    """After "ab" five times and "a", the contexts of "ba", "aba", ... have seen "b" follow them in a row."""
    predictor = make_predictor(SMALL)
    for byte in b"ab" * 5 + b"a":
        predictor.update(byte)
    run = predictor.run
    assert (K.RUN_MODEL0, K.N_RUNS) == (1, 6)  # runs of orders 2, 3, 4, 5 and the two word models
    # orders 2, 3, 4 and 5 predict "b", seen 4, 4, 3 and 3 times in a row after these contexts;
    # the word models see one ever longer word, never the same context
    assert list(run.byte[:4]) == [ord("b")] * 4 and list(run.count) == [4, 4, 3, 3, 0, 0]
    x = np.zeros(K.N_INPUTS, np.int64)
    # the first bit of "b" (0x62 = 0110 0010) is 0: no run input says 1, and those whose
    # counter (per run length) has been trained already say 0 with confidence
    run.add_inputs(1, 0, x)
    assert np.all(x[K.X_RUN:K.X_RUN + 4] <= 0) and np.any(x[K.X_RUN:K.X_RUN + 4] < -200)
    # once the byte leaves the run (a 1 where "b" has a 0), the runs fall silent
    run.add_inputs(0b11, 1, x)
    assert np.all(x[K.X_RUN:K.X_RUN + K.N_RUNS] == 0)
    # a different byte restarts the run at 1: "ba" was followed by "c" once, after "b" four times
    for byte in b"cba":
        predictor.update(byte)
    assert run.byte[0] == ord("c") and run.count[0] == 1


# ------------------------------------------------------------ byte pdf ----

def test_byte_classes():
    classes = K.byte_classes()
    names = {ch: int(classes[ord(ch)]) for ch in "aZ7 \n.'([{|<=/&"}
    assert len(set(names.values())) == len(names)  # each of these in a class of its own
    assert classes[ord("q")] == names["a"] and classes[ord("B")] == names["Z"] and classes[ord(")")] == names["("]
    assert classes[0] == classes[0xFF] == classes[ord("~")] == 15  # anything else
    assert K.byte_classes([2, 0xFF])[[2, 0xFF]].tolist() == [0, 0]  # word-code bytes are lowercase words


def test_shape_keeps_the_classes_of_the_last_six_runs():
    classes = K.byte_classes()
    shape, run_length = 0, 0
    for byte in b"[[Paris]], 12":
        shape, run_length = K.shape_step(shape, run_length, classes[byte])
    runs = [(shape >> (4 * i)) & 15 for i in range(6)]  # latest first
    assert runs == [classes[ord(c)] for c in "2 ,]aP"] and run_length == 2
    shape, run_length = K.shape_step(shape, run_length, classes[ord("3")])
    assert run_length == 3 and shape < 1 << 24


def test_shape_context_is_the_same_for_different_words_of_the_same_shape():
    """ "See [[Paris" and "See [[Tokyo" differ in every letter of the last word but have one shape:
    the shape context is the same, every byte and word context differs."""
    hashes = []
    for text in (b"See [[Paris", b"See [[Tokyo"):
        model = make_predictor(SMALL)
        for byte in text:
            model.update(byte)
        hashes.append(model.contexts.hashes.copy())
    assert hashes[0][7] == hashes[1][7] and hashes[0][0] == hashes[1][0]  # shape; classes of the last 3 bytes
    assert all(hashes[0][k] != hashes[1][k] for k in range(1, 7))  # orders 2-5, the word contexts


def test_mixer_1_is_selected_by_class_run_length_and_familiarity():
    lower = int(K.byte_classes()[ord("e")])
    rows = [K.mixer_rows(known, lower, run_length, 0, 5, 0, 2)[0] for known, run_length in
            ((8, 4), (8, 9), (7, 4), (6, 4), (8, 1), (8, 0))]
    assert rows[0] == rows[1] == rows[2] != rows[3]  # 4+ letters alike; 7 or 8 known alike
    assert rows[4] == rows[5] != rows[0]  # no byte yet counts as a run of 1
    assert all(0 <= r < K.MIXER_SETS[0] for r in rows)


def test_pdf_is_the_product_of_bit_probabilities(enwik8_head):
    predictor = make_predictor(SMALL)
    for byte in enwik8_head[:300]:
        predictor.update(byte)
    for byte in enwik8_head[300:340]:
        pdf = predictor.predict()
        assert pdf.shape == (256,) and np.all(pdf > 0)
        assert pdf.sum() == pytest.approx(1.0, abs=1e-12)
        assert np.array_equal(pdf, predictor.predict())  # predicting changes nothing
        prob = 1.0
        for k in range(7, -1, -1):
            bit = (byte >> k) & 1
            p1 = predictor.predict_bit() / 65536
            prob *= p1 if bit else 1 - p1
            predictor.update_bit(bit)
        assert pdf[byte] == pytest.approx(prob, rel=1e-12)


def test_predict_does_not_change_the_code(enwik8_head):
    data = np.frombuffer(enwik8_head[:500], np.uint8)
    plain = encode_readable(make_predictor(SMALL), data)
    predictor = make_predictor(SMALL)
    from lmc_ref.coder import ArithmeticEncoder

    enc = ArithmeticEncoder()
    for byte in data:
        predictor.predict()
        for k in range(7, -1, -1):
            bit = (int(byte) >> k) & 1
            enc.encode_bit(bit, predictor.predict_bit())
            predictor.update_bit(bit)
    assert enc.finish() == plain


def test_predict_only_at_byte_boundary():
    predictor = make_predictor(SMALL)
    predictor.update_bit(1)
    with pytest.raises(RuntimeError):
        predictor.predict()


# ------------------------------------------------- readable == fused ----

@pytest.mark.parametrize("spec", ["cm:mem=10", "cm:mem=14"])
def test_text_readable_equals_fused(spec, enwik8_head):
    data = np.frombuffer(enwik8_head[:2048], np.uint8)
    payload = encode_readable(make_predictor(spec), data)
    assert payload == make_predictor(spec).fused_encode(data)
    assert decode_readable(make_predictor(spec), payload, len(data)).tobytes() == data.tobytes()
    assert make_predictor(spec).fused_decode(payload, len(data)).tobytes() == data.tobytes()
    assert len(payload) < 0.5 * len(data)  # it does compress text


def test_fused_block_boundaries(monkeypatch, enwik8_head):
    """The fused loop runs in blocks; the state must carry over between them."""
    data = np.frombuffer(enwik8_head[:3000], np.uint8)
    whole = make_predictor(SMALL).fused_encode(data)
    monkeypatch.setattr(cm, "BLOCK", 700)
    assert make_predictor(SMALL).fused_encode(data) == whole
    assert make_predictor(SMALL).fused_decode(whole, len(data)).tobytes() == data.tobytes()


@given(data=st.binary(max_size=200))
@settings(max_examples=10)
def test_readable_equals_fused_arbitrary_bytes(data):
    blob = compress(data, SMALL, path="fused", progress=False)
    assert blob == compress(data, SMALL, path="readable", progress=False)
    assert decompress(blob, path="readable", progress=False) == data


@given(data=st.binary(max_size=1 << 14))
def test_fused_round_trip(data):
    assert decompress(compress(data, SMALL, progress=False), progress=False) == data


def test_code_length_matches_model(enwik8_head):
    data = enwik8_head[:1500]
    predictor = make_predictor(SMALL)
    ideal = 0.0
    for byte in data:
        for k in range(7, -1, -1):
            bit = (byte >> k) & 1
            p1 = predictor.predict_bit() / 65536
            ideal -= math.log2(p1 if bit else 1 - p1)
            predictor.update_bit(bit)
    header, payload = unpack(compress(data, SMALL, progress=False))
    assert header.flags == 0  # no word is frequent enough in 1500 bytes for word codes
    assert ideal - 1 <= 8 * len(payload) <= ideal + 9 + 1e-3


def test_corrupt_payload_is_detected():
    data = b"context mixing " * 40
    blob = bytearray(compress(data, SMALL, progress=False))
    blob[-5] ^= 0x40
    with pytest.raises(ValueError):
        decompress(bytes(blob), progress=False)
    with pytest.raises(ValueError):
        decompress(bytes(blob[:-20]), progress=False)


# ---------------------------------------------------------------- specs ----

def test_spec_is_canonical_and_recorded():
    assert make_predictor("cm").spec == f"cm:mem={cm.DEFAULT_MEM}"
    assert make_predictor("cm:mem=12").spec == "cm:mem=12"
    header, _ = unpack(compress(b"abc", "cm:mem=11", progress=False))
    assert header.spec == "cm:mem=11"
    assert cm.memory_bytes(cm.DEFAULT_MEM) <= 1 << 30
    assert "MiB" in cm.ContextMixingPredictor.help_text()


@pytest.mark.parametrize("spec", ["cm:mem=9", "cm:mem=26", "cm:mem=x", "cm:mem=", "cm:order=3", "cm:mem=12,mem=13"])
def test_bad_specs_raise(spec):
    with pytest.raises(ValueError):
        make_predictor(spec)


def test_byte_protocol_gives_the_bitwise_ideal_length(enwik8_head):
    """predict() then update(byte), the byte-level protocol, sees exactly the bit model's
    probabilities: the ideal length matches the fused bit-level sum."""
    data = enwik8_head[:300]
    predictor = make_predictor(SMALL)
    bits = 0.0
    for byte in data:
        pdf = predictor.predict()
        bits -= np.log2(pdf[byte])
        predictor.update(byte)
    assert bits == pytest.approx(make_predictor(SMALL).ideal_bits(np.frombuffer(data, np.uint8)), rel=1e-9)


def test_mixer_trace_for_the_docs_figure(enwik8_head, tmp_path):
    from lmc_ref.experiments import mixer

    positions, weights = mixer.trace(enwik8_head[:300_000], block=50_000, mem=12)
    assert positions[-1] == 300_000 and weights.shape == (len(positions), len(mixer.INPUTS))
    assert np.all(weights[0, :K.X_RUN] == K.MIX_INIT / 65536) and np.all(weights[0, K.X_RUN:] == 0)  # runs, one-sided 0
    assert np.abs(weights[-1] - weights[0]).max() > 0.01  # the traced set has learned
    mixer.plot(positions, weights, tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 1000


def test_learning_rates_fall_from_fast_to_the_long_run_rate():
    mixer = [K.mixer_rate(pos) for pos in range(0, 1 << 21, 997)]
    apm = [K.apm_rate(pos) for pos in range(0, 1 << 21, 997)]
    assert all(a >= b for a, b in zip(mixer, mixer[1:])) and mixer[0] > 4 * K.MIX_RATE and mixer[-1] == K.MIX_RATE
    assert all(a <= b for a, b in zip(apm, apm[1:])) and apm[0] < K.APM_RATE and apm[-1] == K.APM_RATE  # shifts
