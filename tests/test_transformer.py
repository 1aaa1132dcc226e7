"""The transformer as a compressor: readable and fused paths, chunking, model-hash checks."""

import dataclasses

import numpy as np
import pytest

from lmc_ref import codec, container
from lmc_ref.transformer import train as tr
from lmc_ref.coder import ArithmeticDecoder
from lmc_ref.constants import CHUNK_SIZE
from lmc_ref.predictors import make_predictor
from lmc_ref.predictors import base
from lmc_ref.transformer import model as tf
from lmc_ref.quantize import quantize

TINY = {"d_model": 16, "num_heads": 2, "num_layers": 2}
TEXT = b"It was the best of times, it was the worst of times, it was the age of wisdom. " * 40


def test_registered_as_a_predictor_needing_a_model_file():
    from lmc_ref import predictors  # the package loads predictor modules by name, on first use

    assert "transformer" in predictors.available()
    assert predictors.predictor_class("transformer").needs_model_file
    assert "transformer" in base.available()  # registered once loaded


def write_ckpt(path, params, config=TINY):
    meta = {"config": tf.get_config(config), "hparams": tr.HPARAMS, "data_sha256": "", "history": []}
    zeros = {k: np.zeros_like(w) for k, w in params.items()}
    tr.save_checkpoint(path, {"step": 0, "meta": meta, "param": params, "adam_m": zeros, "adam_v": zeros})
    return f"transformer:ckpt={path}"


@pytest.fixture(scope="module")
def random_spec(tmp_path_factory):
    rng = np.random.default_rng(0)
    params = {k: (w + 0.2 * rng.standard_normal(w.shape)).astype(np.float32)
              for k, w in tf.init_params(TINY, seed=0).items()}
    return write_ckpt(tmp_path_factory.mktemp("ckpt") / "random.npz", params)


@pytest.fixture(scope="module")
def trained_spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "trained.npz"
    tr.train(TINY, TEXT, steps=40, seq_len=64, batch=4, train_bytes=2800, val_chunks=1, progress=False,
             out=path, hparams={"lr": 1e-2, "warmup": 5})
    return f"transformer:ckpt={path}"


def cdfs(spec, data, decode_payload=None):
    """Quantized CDFs seen by the readable encoder (or by the decoder of ``decode_payload``)."""
    pred = make_predictor(spec)
    pred.reset()
    seen = []
    for s in data:
        seen.append(quantize(pred.predict()))
        pred.update(int(s))
    return np.stack(seen)


@pytest.mark.parametrize("which", ["random_spec", "trained_spec"])
@pytest.mark.parametrize("length", [0, 1, 2, 300, CHUNK_SIZE, CHUNK_SIZE + 5])
def test_round_trip_fused_equals_readable(request, which, length):
    spec = request.getfixturevalue(which)
    data = (TEXT * 2)[:length]
    fused = codec.compress(data, spec, path="fused", progress=False)
    if length <= 300:
        assert codec.compress(data, spec, path="readable", progress=False) == fused
        assert codec.decompress(fused, path="readable", progress=False) == data
    assert codec.decompress(fused, progress=False) == data


def test_encoder_and_decoder_cdfs_equal(random_spec, trained_spec):
    data = np.frombuffer(TEXT[:200], np.uint8)
    for spec in (random_spec, trained_spec):
        pred = make_predictor(spec)
        blob = codec.compress(bytes(data), spec, progress=False)
        # the decoder's readable loop, recording its CDFs
        header, payload = container.unpack(blob)
        (stream,) = container.unpack_chunk_streams(payload, len(data), CHUNK_SIZE, len(payload))  # one chunk
        dec, pred2, seen = ArithmeticDecoder(stream), make_predictor(spec), []
        pred2.reset()
        for _ in range(len(data)):
            seen.append(quantize(pred2.predict()))
            pred2.update(dec.decode(seen[-1]))
        np.testing.assert_array_equal(np.stack(seen), cdfs(spec, data))
        assert pred.model_bytes == 2 * tf.param_count(TINY)


def test_context_restarts_every_chunk(random_spec):
    pred = make_predictor(random_spec)
    data = np.frombuffer((TEXT * 2)[: CHUNK_SIZE + 3], np.uint8)
    pred.reset()
    pdfs = []
    for s in data:
        pdfs.append(pred.predict())
        pred.update(int(s))
    pred.reset()
    first = pred.predict()
    np.testing.assert_array_equal(pdfs[CHUNK_SIZE], first)
    ideal = pred.ideal_bits(data)
    want = -sum(np.log2(p[s]) for p, s in zip(pdfs, data))
    assert ideal == pytest.approx(want, rel=1e-12)


def test_trained_model_compresses_its_text(trained_spec):
    blob = codec.compress(TEXT[:1000], trained_spec, progress=False)
    assert len(blob) < 0.6 * 1000


def test_header_names_the_model_by_hash_not_path(tmp_path, random_spec):
    blob = codec.compress(TEXT[:50], random_spec, progress=False)
    header, payload = container.unpack(blob)
    path = random_spec.split("=", 1)[1]
    assert header.spec == "transformer:v=1" and "ckpt" not in header.spec
    assert header.model_hash == tr.model_hash(tr.load_checkpoint(path)["param"])
    assert make_predictor(random_spec).spec == "transformer:v=1"
    # a path written into the header is ignored: the weights are found by the hash
    state = tr.load_checkpoint(path)
    state["param"]["out.b"][0] += np.float32(0.5)
    other = tmp_path / "other.npz"
    tr.save_checkpoint(other, state)
    forged = container.pack(dataclasses.replace(header, spec=f"transformer:ckpt={other}"), payload)
    assert codec.decompress(forged, progress=False) == TEXT[:50]
    # the header's hash is what counts: naming the other model's hash finds the other weights
    renamed = container.pack(dataclasses.replace(header, model_hash=tr.model_hash(state["param"])), payload)
    with pytest.raises(ValueError, match="CRC-32 mismatch"):
        codec.decompress(renamed, progress=False, model_dirs=[tmp_path])
    with pytest.raises(ValueError, match="no model hash"):
        codec.decompress(container.pack(dataclasses.replace(header, model_hash=b""), payload), progress=False)


def test_bad_specs(tmp_path, random_spec):
    with pytest.raises(ValueError, match="needs ckpt"):
        make_predictor("transformer")
    with pytest.raises(ValueError, match="cannot load"):
        make_predictor(f"transformer:ckpt={tmp_path / 'missing.npz'}")
    with pytest.raises(ValueError, match="unknown parameter"):
        make_predictor(random_spec + ",foo=1")
    with pytest.raises(ValueError, match="not both"):
        make_predictor(random_spec + ",model=5d582d94")
    with pytest.raises(ValueError, match="at least 8 hex"):
        make_predictor("transformer:model=5d58")
    with pytest.raises(ValueError, match="model version 2"):
        make_predictor(random_spec.replace("transformer:", "transformer:v=2,"))
    assert make_predictor(random_spec.replace("transformer:", "transformer:v=1,")).spec == "transformer:v=1"
