"""Round trips through ``compress``/``decompress`` for every predictor and both coding paths."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmc_ref.codec import compress, decompress, decode_readable, encode_readable
from lmc_ref.container import unpack
from lmc_ref.predictors import available, make_predictor

# Small tables keep the tests light; every registered predictor must appear here.
SPECS = {
    "ngram": ["ngram:order=0,mem=10", "ngram:order=2,mem=10", "ngram:order=6,mem=12"],
    "cm": ["cm:mem=10", "cm:mem=16"],
}

SPECIAL_INPUTS = {
    "empty": b"",
    "one byte": b"\x00",
    "one high byte": b"\xff",
    "all 256 values": bytes(range(256)),
    "all 256 values twice, reversed": bytes(range(255, -1, -1)) * 2,
    "long run": b"a" * 5000,
    "alternating": b"ab" * 2000,
    # one order-6 context followed by every byte value: fills and evicts a full slot
    "crowded context": b"".join(b"abcdef" + bytes([i]) for i in range(256)),
}


def test_every_predictor_is_covered():
    """Every registered predictor that needs no model file is round-tripped here; the
    transformer (a checkpoint in its spec) has its own round-trip tests in test_transformer.py."""
    from lmc_ref.predictors import predictor_class

    assert sorted(SPECS) == [n for n in available() if not predictor_class(n).needs_model_file]


ALL_SPECS = [spec for specs in SPECS.values() for spec in specs]


@pytest.mark.parametrize("spec", ALL_SPECS)
@pytest.mark.parametrize("name", sorted(SPECIAL_INPUTS))
def test_special_inputs_both_paths(spec, name):
    data = SPECIAL_INPUTS[name]
    fused = compress(data, spec, path="fused", progress=False)
    readable = compress(data, spec, path="readable", progress=False)
    assert fused == readable  # the fused kernel is the same model, bit for bit
    assert decompress(fused, path="fused", progress=False) == data
    assert decompress(fused, path="readable", progress=False) == data


@pytest.mark.parametrize("spec", ALL_SPECS)
@given(data=st.binary(max_size=400))
@settings(max_examples=15)
def test_readable_equals_fused(spec, data):
    blob = compress(data, spec, path="fused", progress=False)
    assert blob == compress(data, spec, path="readable", progress=False)
    assert decompress(blob, path="readable", progress=False) == data


@pytest.mark.parametrize("spec", ALL_SPECS)
@given(data=st.binary(max_size=1 << 16))
def test_fused_round_trip_arbitrary_bytes(spec, data):
    assert decompress(compress(data, spec, progress=False), progress=False) == data


@pytest.mark.parametrize("spec", ALL_SPECS)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(0, 1 << 16), alphabet=st.integers(1, 256))
@settings(max_examples=10)
def test_fused_round_trip_random_blocks(spec, seed, size, alphabet):
    data = np.random.default_rng(seed).integers(0, alphabet, size, dtype=np.uint8).tobytes()
    assert decompress(compress(data, spec, progress=False), progress=False) == data


def test_random_64k_round_trip():
    data = np.random.default_rng(64).integers(0, 256, 1 << 16, dtype=np.uint8).tobytes()
    blob = compress(data, "ngram", progress=False)
    assert decompress(blob, progress=False) == data
    # Random bytes cannot be compressed.  An adaptive model pays for the contexts it
    # learns in vain (about 5 % here); it must not blow up beyond that.
    assert len(blob) < len(data) * 1.06 + 100


def test_text_slice_readable_equals_fused(enwik8_head):
    data = enwik8_head[:6000]
    for spec in ("ngram", "ngram:order=8,mem=14"):
        predictor = make_predictor(spec)
        arr = np.frombuffer(data, np.uint8)
        payload = encode_readable(predictor, arr)
        assert payload == make_predictor(spec).fused_encode(arr)
        assert decode_readable(make_predictor(spec), payload, len(data)).tobytes() == data


@pytest.mark.parametrize("spec", ["ngram:order=2,mem=10", "ngram"])
def test_code_length_close_to_ideal(spec, enwik8_head):
    """Real length <= ideal length of the quantized model + 2 termination bits + 7 padding bits
    + the coder's rounding loss (< 1.44*256/2**30 bit per symbol, see coder.py); and the quantized
    model costs at most 0.1 % more than the float model."""
    from lmc_ref.quantize import quantize

    data = enwik8_head[:3000]
    predictor = make_predictor(spec)
    ideal_float = ideal_quantized = 0.0
    for byte in data:
        pdf = predictor.predict()
        cdf = quantize(pdf)
        ideal_float -= np.log2(pdf[byte] / pdf.sum())
        ideal_quantized -= np.log2((cdf[byte + 1] - cdf[byte]) / cdf[-1])
        predictor.update(byte)
    _, payload = unpack(compress(data, spec, progress=False))
    bits = 8 * len(payload)
    assert bits <= ideal_quantized + 9 + len(data) * 1.44 * 256 / 2**30
    assert bits >= ideal_quantized - 1  # a code cannot beat its model
    assert ideal_quantized <= ideal_float * 1.001
