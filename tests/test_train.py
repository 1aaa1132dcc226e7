"""Training loop, schedule, checkpoints (no pickle), resume and the model hash."""

import json
import math

import numpy as np
import pytest

from lmc_ref.transformer import train as tr
from lmc_ref.transformer import model as tf

TINY = {"d_model": 16, "num_heads": 2, "num_layers": 1}
REPETITIVE = b"abcabdabcabe the cat sat on the mat. " * 60


def run(steps, lr=3e-3, **kw):
    kw.setdefault("seq_len", 32)
    kw.setdefault("batch", 4)
    kw.setdefault("val_chunks", 1)
    kw.setdefault("val_every", 1000)
    kw.setdefault("train_bytes", 1800)
    return tr.train(TINY, REPETITIVE, steps=steps, progress=False, hparams={"lr": lr, "warmup": 5}, **kw)


def test_loss_decreases_on_repetitive_bytes():
    _, history = run(60, lr=1e-2, val_every=20)
    assert [h["step"] for h in history] == [20, 40, 60]
    assert history[0]["train_bpb"] < 8.5
    assert history[-1]["train_bpb"] < 0.5 * history[0]["train_bpb"]
    assert history[-1]["val_bpb"] < 0.6 * history[0]["val_bpb"]
    assert history[-1]["val_bpb"] < 2.5


def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "model.npz"
    params, _ = run(4, out=path)
    state = tr.load_checkpoint(path)
    assert state["step"] == 4
    assert state["meta"]["config"] == TINY
    assert state["meta"]["data_sha256"] == tr.data_sha256(REPETITIVE)
    assert set(state["param"]) == set(tf.param_shapes(TINY))
    for name, w in params.items():
        np.testing.assert_array_equal(state["param"][name], w)
        assert state["adam_m"][name].any() and state["adam_v"][name].any()
    assert tr.model_hash(state["param"]) == tr.model_hash(params)
    # saving the loaded state again gives the same content
    tr.save_checkpoint(tmp_path / "again.npz", state)
    again = tr.load_checkpoint(tmp_path / "again.npz")
    for prefix in ("param", "adam_m", "adam_v"):
        for name in params:
            np.testing.assert_array_equal(again[prefix][name], state[prefix][name])
    assert again["meta"] == state["meta"] and again["step"] == 4


def test_checkpoint_loads_without_pickle(tmp_path, monkeypatch):
    """Checkpoints are read by the bounded reader of ``checkpoint``: never np.load, never pickle."""
    import pickle

    path = tmp_path / "model.npz"
    run(2, out=path)
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)

    def forbidden(*args, **kwargs):
        raise AssertionError("checkpoints must not be read with np.load or pickle")

    monkeypatch.setattr(np, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    state = tr.load_checkpoint(path)
    assert state["step"] == 2
    # an object array where a weight should be is refused, not unpickled
    arrays = {"step": np.array(2), "meta": np.frombuffer(json.dumps(state["meta"]).encode(), np.uint8)}
    arrays.update({f"param/{k}": w for k, w in state["param"].items()})
    arrays["param/embed"] = np.array([{"x": 1}] * 3, dtype=object)
    monkeypatch.undo()
    np.savez(tmp_path / "pickled.npz", **arrays)
    with pytest.raises(ValueError, match="embed"):
        tr.load_checkpoint(tmp_path / "pickled.npz")


def test_load_rejects_foreign_npz(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not an lmc_ref"):
        tr.load_checkpoint(tmp_path / "x.npz")


def test_resume_continues_exactly(tmp_path):
    path = tmp_path / "model.npz"
    straight, _ = run(8)
    run(5, out=path)
    resumed, history = run(8, out=path, resume=path)
    assert tr.load_checkpoint(path)["step"] == 8
    assert history[-1]["step"] == 8
    for name in straight:
        np.testing.assert_allclose(resumed[name], straight[name], rtol=0, atol=1e-6)


def test_resume_rejects_other_data(tmp_path):
    path = tmp_path / "model.npz"
    run(2, out=path)
    with pytest.raises(ValueError, match="different data"):
        tr.train(TINY, REPETITIVE[::-1], steps=3, seq_len=32, batch=2, train_bytes=1800,
                 progress=False, resume=path)


def test_model_hash():
    a = tf.init_params(TINY, seed=1)
    h = tr.model_hash(a)
    assert isinstance(h, bytes) and len(h) == 32
    assert tr.model_hash(dict(reversed(list(a.items())))) == h
    b = {k: w.copy() for k, w in a.items()}
    b["out.b"][7] += np.float32(1e-3)
    assert tr.model_hash(b) != h
    assert tr.model_hash(tf.init_params(TINY, seed=2)) != h


def test_learning_rate_schedule():
    hp = dict(tr.HPARAMS, lr=1.0, warmup=10, final_lr_frac=0.1)
    assert tr.learning_rate(0, 0.0, hp) == pytest.approx(0.1)
    assert tr.learning_rate(9, 0.0, hp) == pytest.approx(1.0)
    assert tr.learning_rate(10, 0.0, hp) == pytest.approx(1.0)
    assert tr.learning_rate(50, 0.5, hp) == pytest.approx(0.55)
    assert tr.learning_rate(100, 1.0, hp) == pytest.approx(0.1)


def test_clip_by_global_norm():
    g = {"a": np.full(4, 3.0, np.float32), "b": np.full(9, 4.0 / 3.0, np.float32)}  # norm sqrt(36+16) ...
    norm = tr.clip_by_global_norm(g, 1.0)
    assert norm == pytest.approx(math.sqrt(36 + 16))
    assert math.sqrt(sum(float((x * x).sum()) for x in g.values())) == pytest.approx(1.0, rel=1e-6)
    small = {"a": np.full(2, 0.1, np.float32)}
    tr.clip_by_global_norm(small, 1.0)
    np.testing.assert_array_equal(small["a"], np.float32(0.1))


def test_split_never_overlaps():
    data = np.arange(1_000_000) % 251
    train, val = tr.split_data(data)
    assert len(train) == 900_000 and len(val) == 100_000
    assert len(tr.split_data(b"x" * 1000)[0]) == 900
    batch = tr.sample_batch(np.arange(100, dtype=np.uint8), 10, 50, 0, 0)
    assert batch.shape == (50, 10) and batch.max() < 100
    with pytest.raises(ValueError):
        tr.split_data(b"abc", train_bytes=3)


def test_validation_chunks_are_independent():
    params = tf.init_params(TINY, seed=5)
    val = np.frombuffer(bytes(range(256)) * 10, dtype=np.uint8)  # 2560 bytes: one full chunk + 512
    bpb = tr.validation_bpb(params, TINY, val)
    bits = 0.0
    for chunk in (val[:2048], val[2048:]):
        logp = tf.forward(params, TINY, chunk).astype(np.float64)
        bits -= logp[np.arange(len(chunk)), chunk].sum() / math.log(2)
    assert bpb == pytest.approx(bits / len(val), rel=1e-9)
    assert tr.validation_bpb(params, TINY, val, max_chunks=1) == pytest.approx(
        -tf.forward(params, TINY, val[:2048])[np.arange(2048), val[:2048]].astype(np.float64).mean()
        / math.log(2), rel=1e-9)


def test_main_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = tmp_path / "data.bin"
    data.write_bytes(REPETITIVE * 2)
    out = tmp_path / "ckpt.npz"
    args = ["--config", "200K", "--seq-len", "16", "--batch", "2", "--data", str(data), "--out", str(out),
            "--train-bytes", "3000", "--val-chunks", "1", "--no-progress"]
    assert tr.main(args + ["--steps", "2"]) == 0
    assert tr.main(args + ["--steps", "3", "--resume"]) == 0
    state = tr.load_checkpoint(out)
    assert state["step"] == 3 and state["meta"]["config"] == tf.get_config("200K")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "config 200K: 231,936 parameters"
    digest = tr.model_hash(state["param"]).hex()
    stored = tmp_path / "cache" / "lmc_ref" / "models" / f"{digest}.npz"
    assert lines[-2] == "model hash " + digest
    assert lines[-1].startswith("model store: copied") and str(stored) in lines[-1]  # a copy named by hash
    assert json.loads(lines[-3])["step"] == 3
    assert tr.model_hash(tr.load_checkpoint(stored)["param"]) == bytes.fromhex(digest)
    # --no-store leaves the store alone
    other = tmp_path / "other.npz"
    assert tr.main([a if a != str(out) else str(other) for a in args] + ["--steps", "1", "--no-store"]) == 0
    assert "model store" not in capsys.readouterr().out
    assert len(list(stored.parent.iterdir())) == 2  # the two copies made with --out above, not this one


def test_learning_curve_from_a_finished_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = tmp_path / "data.bin"
    data.write_bytes(REPETITIVE * 2)
    out, png = tmp_path / "ckpt.npz", tmp_path / "curve.png"
    args = ["--config", "200K", "--seq-len", "16", "--batch", "2", "--data", str(data), "--out", str(out),
            "--train-bytes", "3000", "--val-chunks", "1", "--val-every", "1", "--no-progress"]
    assert tr.main(args + ["--steps", "2"]) == 0
    before = tr.load_checkpoint(out)
    # resuming at the checkpoint's own step count trains nothing and only draws the curve
    assert tr.main(args + ["--steps", "2", "--resume", "--curve", str(png)]) == 0
    after = tr.load_checkpoint(out)
    assert after["step"] == 2 and after["meta"]["history"] == before["meta"]["history"]
    assert png.stat().st_size > 1000


def test_progress_bar_survives_validation_steps(capsys):
    """The bar's postfix shows the last training loss, also right after a validation
    (which starts a new averaging window): this crashed at step val_every once."""
    _, history = tr.train(TINY, REPETITIVE, steps=4, progress=True, seq_len=32, batch=2, val_chunks=1,
                          val_every=2, train_bytes=1800)
    assert [h["step"] for h in history] == [2, 4]
