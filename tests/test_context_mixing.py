"""The context-mixing predictor: components, byte pdf, readable == fused, round trips, specs."""

import math
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmc_ref.codec import compress, decode_readable, decompress, encode_readable
from lmc_ref.container import unpack
from lmc_ref.predictors import cm_apm, cm_contexts, cm_counters, cm_match, cm_mixer, cm_runs, make_predictor
from lmc_ref.predictors import context_mixing as cm
from lmc_ref.predictors import context_mixing_kernels as K
from lmc_ref.predictors.cm_counters import STRETCH, learn, squash

SMALL = "cm:mem=10"


def p12(counters, i):
    """Counter ``i``'s 12-bit probability."""
    return int(counters.t[i]) >> 20


# ------------------------------------------------------------- components ----

def test_squash_inverts_stretch():
    for p in range(1, 4096):
        assert abs(squash(int(STRETCH[p])) - p) <= 4
    assert all(STRETCH[i] <= STRETCH[i + 1] for i in range(4095))
    assert [squash(d) for d in (-5000, -2047, 0, 2047, 5000)] == [1, 1, 2048, 4095, 4095]


def test_stretch_is_the_logit_in_256ths():
    for p in range(64, 4096 - 64, 37):
        assert STRETCH[p] == pytest.approx(256 * math.log(p / (4096 - p)), abs=12)


@pytest.mark.parametrize("freq", [0.05, 0.3, 0.8, 0.97])
def test_counter_converges_to_the_bit_frequency(freq):
    counters = cm.Counters(4, limit=1023)
    bits = np.random.default_rng(1).random(20000) < freq
    for bit in bits:
        learn(counters.t, 2, int(bit), counters.limit)
    assert p12(counters, 2) / 4096 == pytest.approx(freq, abs=0.03)
    assert p12(counters, 1) == 2048  # other counters untouched


def test_young_counter_is_a_frequency_count():
    counters = cm.Counters(1, limit=1023)
    learn(counters.t, 0, 1, counters.limit)
    assert p12(counters, 0) / 4096 == pytest.approx(5 / 6, abs=0.01)  # (1/2 + 1) / (1 + 1.5) ... p += (1-p)/1.5


def test_counters_start_at_their_priors():
    index = cm_contexts.history_index
    hist = cm.Counters(cm_contexts.HISTORY_COUNTERS, cm_contexts.LIMIT_HISTORY, cm_contexts.history_prior())
    assert p12(hist, index(0, 0, 0)) == 2048                # no history: 1/2
    assert p12(hist, index(3, 5, 3 << 8)) == 3584           # three ones, no zero: 3.5 / 4
    assert p12(hist, index(7, 7, (2 * 16 + 0) << 8)) == 682  # two zeros: 0.5 / 3
    match = cm.Counters(cm_match.MATCH_COUNTERS, cm_match.LIMIT_MATCH, cm_match.match_prior())
    assert p12(match, cm_match.match_context(0, 0, 1, 0, 65)) == 2048   # no match: 1/2
    long_one = cm_match.match_context(0b10000000, 20, 1, 0, 65)       # expects a 1 after a 20-byte match: 21 / 22
    short_zero = cm_match.match_context(0b00000000, 1, 1, 0, 65)      # expects a 0 after a 1-byte match: 1 / 3
    assert p12(match, long_one) == 3909 and p12(match, short_zero) == 4096 - 2731
    run = cm.Counters(cm_runs.RUN_COUNTERS, cm_runs.LIMIT_RUN, cm_runs.run_prior())
    three = cm_runs.run_context(2, 0xFF, 3, 1, 0)
    assert p12(run, three) == 3276          # a run of 3 expecting a 1: 4 / 5
    # a prior is worth a few bits: the first observation against it moves the counter less than from 1/2
    learn(run.t, three, 0, run.limit)
    assert 3276 * 2 // 3 < p12(run, three) < 3276


def test_mixer_learns_to_trust_the_better_input():
    ROWS = tuple(offset + 3 for offset in cm_mixer.MIXER_OFFSETS)  # one weight set of each mixer
    rng = np.random.default_rng(7)
    mixer = cm.Mixer()
    x = np.zeros(cm_mixer.N_INPUTS, np.int32)
    rate = cm_mixer.mixer_rate(1 << 20)  # the long-run rate
    for _ in range(4000):
        bit = int(rng.random() < 0.5)
        good = 0.9 if bit else 0.1                      # input 0 knows the bit
        x[0] = STRETCH[int(good * 4096)]
        x[1] = STRETCH[int(rng.integers(200, 3896))]  # input 1 is noise
        dots = cm_mixer.mixer_dots(mixer.weights, x, ROWS)
        cm_mixer.mixer_update(mixer.weights, x, ROWS, dots, bit, rate)
    for row in ROWS:
        w = mixer.weights[row]
        assert w[0] > cm_mixer.MIX_INIT and w[0] > 4 * abs(w[1])
    x[0], x[1] = STRETCH[int(0.9 * 4096)], STRETCH[500]
    # trusts (and sharpens) the good input, ignores the noise
    assert squash(sum(cm_mixer.mixer_dots(mixer.weights, x, ROWS)) >> 2) > 0.9 * 4096
    fresh = cm.Mixer()  # the other weight sets are untouched
    untouched = [r for r in range(cm_mixer.MIXER_ROWS) if r not in ROWS]
    assert np.array_equal(mixer.weights[untouched], fresh.weights[untouched])
    X_RUN = cm_mixer.X_RUN
    assert (fresh.weights[:, :X_RUN] == cm_mixer.MIX_INIT).all() and (fresh.weights[:, X_RUN:] == 0).all()


def test_apm_is_monotone_in_its_input():
    apm = cm.APM(4)

    def refine(pr):
        return cm_apm.apm_refine(apm.t, pr, 1)

    fresh = [refine(pr)[0] for pr in range(1, 4096)]
    assert all(a <= b for a, b in pairwise(fresh))
    assert fresh[2047] == pytest.approx(2048 * 16, abs=64)  # an untrained APM is about the identity
    rng = np.random.default_rng(3)
    rate = cm_apm.apm_rate(1 << 20)  # the long-run rate
    for _ in range(20000):  # train on a source sharper than its input: bit = (p > 1/2)
        pr = squash(int(rng.integers(-2047, 2048)))  # every knot gets its share of updates
        cm_apm.apm_update(apm.t, refine(pr)[1], int(pr > 2048), rate)
    trained = [refine(pr)[0] for pr in range(1, 4096)]
    assert all(a <= b for a, b in pairwise(trained))
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
    assert (cm_runs.RUN_MODEL0, cm_runs.N_RUNS) == (1, 6)  # runs of orders 2, 3, 4, 5 and the two word models
    # orders 2, 3, 4 and 5 predict "b", seen 4, 4, 3 and 3 times in a row after these contexts;
    # the word models see one ever longer word, never the same context
    assert list(run.byte[:4]) == [ord("b")] * 4 and list(run.count) == [4, 4, 3, 3, 0, 0]

    def run_inputs(c0, bitpos):
        """The run models' mixer inputs for a bit of the next byte (the prediction changes nothing)."""
        inputs = K.new_inputs()
        cm.predict_step(predictor.tables, predictor.contexts.slots, inputs, c0, bitpos, c0,
                        predictor._byte_context())
        return inputs.x[cm_mixer.X_RUN:cm_mixer.X_RUN + cm_runs.N_RUNS]

    # the first bit of "b" (0x62 = 0110 0010) is 0: no run input says 1, and those whose
    # counter (per run length) has been trained already say 0 with confidence
    first = run_inputs(1, 0)
    assert np.all(first[:4] <= 0) and np.any(first[:4] < -200)
    # once the byte leaves the run (a 1 where "b" has a 0), the runs fall silent
    assert np.all(run_inputs(0b11, 1) == 0)
    # a different byte restarts the run at 1: "ba" was followed by "c" once, after "b" four times
    for byte in b"cba":
        predictor.update(byte)
    assert run.byte[0] == ord("c") and run.count[0] == 1


def test_each_kernel_takes_few_arguments():
    """The model's arrays travel as one ``Tables``: no kernel needs a long argument list."""
    import inspect

    from numba.core.registry import CPUDispatcher

    for module in (cm_counters, cm_contexts, cm_match, cm_runs, cm_mixer, cm_apm, K):
        for name, f in vars(module).items():
            if isinstance(f, CPUDispatcher) and f.py_func.__module__ == module.__name__:
                assert len(inspect.signature(f.py_func).parameters) <= 8, name


def test_the_readable_path_runs_the_fused_loops_bit_step():
    assert cm.predict_step is K.predict_bit.py_func and cm.update_step is K.update_bit.py_func


# ------------------------------------------------------------ byte pdf ----

def test_byte_classes():
    classes = cm_contexts.byte_classes()
    names = {ch: int(classes[ord(ch)]) for ch in "aZ7 \n.'([{|<=/&"}
    assert len(set(names.values())) == len(names)  # each of these in a class of its own
    assert classes[ord("q")] == names["a"] and classes[ord("B")] == names["Z"] and classes[ord(")")] == names["("]
    assert classes[0] == classes[0xFF] == classes[ord("~")] == 15  # anything else
    assert cm_contexts.byte_classes([2, 0xFF])[[2, 0xFF]].tolist() == [0, 0]  # word-code bytes are lowercase words


def test_shape_keeps_the_classes_of_the_last_six_runs():
    classes = cm_contexts.byte_classes()
    shape, run_length = 0, 0
    for byte in b"[[Paris]], 12":
        shape, run_length = cm_contexts.shape_step(shape, run_length, classes[byte])
    runs = [(shape >> (4 * i)) & 15 for i in range(6)]  # latest first
    assert runs == [classes[ord(c)] for c in "2 ,]aP"] and run_length == 2
    shape, run_length = cm_contexts.shape_step(shape, run_length, classes[ord("3")])
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
    lower = int(cm_contexts.byte_classes()[ord("e")])
    rows = [cm_mixer.mixer_rows(known, lower, run_length, 0, 5, 0, 2)[0] for known, run_length in
            ((8, 4), (8, 9), (7, 4), (6, 4), (8, 1), (8, 0))]
    assert rows[0] == rows[1] == rows[2] != rows[3]  # 4+ letters alike; 7 or 8 known alike
    assert rows[4] == rows[5] != rows[0]  # no byte yet counts as a run of 1
    assert all(0 <= r < cm_mixer.MIXER_SETS[0] for r in rows)


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
    assert make_predictor("cm").spec == f"cm:v=7,mem={cm.DEFAULT_MEM}"
    assert make_predictor("cm:mem=12").spec == "cm:v=7,mem=12"
    header, _ = unpack(compress(b"abc", "cm:mem=11", progress=False))
    assert header.spec == "cm:v=7,mem=11"
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
    X_RUN = cm_mixer.X_RUN
    assert np.all(weights[0, :X_RUN] == cm_mixer.MIX_INIT / 65536) and np.all(weights[0, X_RUN:] == 0)  # runs etc. 0
    assert np.abs(weights[-1] - weights[0]).max() > 0.01  # the traced set has learned
    mixer.plot(positions, weights, tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 1000


def test_learning_rates_fall_from_fast_to_the_long_run_rate():
    mixer = [cm_mixer.mixer_rate(pos) for pos in range(0, 1 << 21, 997)]
    apm = [cm_apm.apm_rate(pos) for pos in range(0, 1 << 21, 997)]
    MIX_RATE, APM_RATE = cm_mixer.MIX_RATE, cm_apm.APM_RATE
    assert all(a >= b for a, b in pairwise(mixer)) and mixer[0] > 4 * MIX_RATE and mixer[-1] == MIX_RATE
    assert all(a <= b for a, b in pairwise(apm)) and apm[0] < APM_RATE and apm[-1] == APM_RATE  # shifts
