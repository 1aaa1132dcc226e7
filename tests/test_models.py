"""The model store: models found by hash, never by path (``lmc_ref.models``).

What a user relies on: a file compressed with ``transformer:ckpt=PATH`` decodes
after the checkpoint moved, given ``--model-dir`` or after ``lmc-ref models
add``; a missing model is one line naming the hash, the places searched and how
to add it; the decoder never opens a path a header names, opens only regular
files, and reads no more than a model file may hold; a crafted checkpoint is a
``ValueError``, quickly.  No test here touches the real ``~/.cache``.
"""

import dataclasses
import hashlib
import io
import json
import os
import signal
import struct
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from lmc_ref import codec, container, models
from lmc_ref.cli import main
from lmc_ref.transformer import checkpoint as ck
from lmc_ref.transformer import model as tf
from lmc_ref.transformer import train as tr
from test_old_files import fixture_text

FIXTURES = Path(__file__).parent / "fixtures"
TINY = {"d_model": 16, "num_heads": 2, "num_layers": 1}
#: The model of ``fixtures/v7_transformer_tiny.lmc``: ``init_params(TINY, seed=0)``.
FIXTURE_HASH = "5d582d94394cd4a39e60d77ee79604a8128475944a1376ec8bed7e01733dea57"
TEXT = b"the store names models by the hash of their weights. " * 30


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private user cache, no LMC_REF_MODELS, and a fresh in-process memory of opened paths."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("LMC_REF_MODELS", raising=False)
    monkeypatch.setattr(models, "_remembered", {})
    monkeypatch.setattr(models, "_seen", {})


@contextmanager
def deadline(seconds=1.0):
    """Fail (instead of hanging) if the block takes longer than ``seconds``."""
    def expired(signum, frame):
        raise AssertionError(f"took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, 10 * seconds)  # the hard stop; the soft limit is checked below
    t0 = time.perf_counter()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert time.perf_counter() - t0 < seconds


def save(path, params=None, config=TINY, meta_extra=None):
    params = tf.init_params(config, seed=0) if params is None else params
    meta = {"config": tf.get_config(config), "hparams": tr.HPARAMS, "data_sha256": "", "history": []}
    meta.update(meta_extra or {})
    zeros = {k: np.zeros_like(w) for k, w in params.items()}
    ck.save_checkpoint(path, {"step": 0, "meta": meta, "param": params, "adam_m": zeros, "adam_v": zeros})
    return ck.model_hash(params)


@pytest.fixture
def ckpt(tmp_path):
    """A checkpoint of random weights (not the fixture's) and its hash."""
    rng = np.random.default_rng(1)
    params = {k: (w + 0.1 * rng.standard_normal(w.shape)).astype(np.float32)
              for k, w in tf.init_params(TINY, seed=3).items()}
    path = tmp_path / "work" / "ck.npz"
    path.parent.mkdir()
    return path, save(path, params)


def one_line(message, *fragments):
    assert "\n" not in message, message
    for fragment in fragments:
        assert str(fragment) in message, (fragment, message)


# ------------------------------------------------------------------ store ---

def test_store_is_under_xdg_cache_home_or_home(tmp_path, monkeypatch):
    assert models.store_dir() == tmp_path / "xdg" / "lmc_ref" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.store_dir() == tmp_path / "home" / ".cache" / "lmc_ref" / "models"


def test_add_list_and_find_by_hash(tmp_path, ckpt):
    path, digest = ckpt
    entry, added = models.add(path)
    store = tmp_path / "xdg" / "lmc_ref" / "models"
    assert added and entry.path == store / f"{digest.hex()}.npz" and entry.hash == digest
    assert entry.path.read_bytes() == path.read_bytes()
    assert [p.name for p in store.iterdir()] == [f"{digest.hex()}.npz"]  # no temporary file left
    assert models.add(path)[1] is False  # already there
    found, problems = models.entries()
    assert problems == [] and len(found) == 1
    e = found[0]
    assert (e.hash, e.kind, e.parameters, e.size) == (digest, "transformer", tf.param_count(TINY),
                                                      path.stat().st_size)
    model = models.find(digest)
    assert model.entry.path == entry.path and model.hash == digest
    np.testing.assert_array_equal(model.payload["param"]["embed"], tr.load_checkpoint(path)["param"]["embed"])
    assert models.find_prefix(digest.hex()[:10]).hash == digest
    # a corrupt store entry is replaced by the next add
    entry.path.write_bytes(b"PK\x03\x04 damaged")
    assert models.add(path)[1] is True and models.find(digest).hash == digest


def test_lmc_ref_models_path_list_and_search_order(tmp_path, ckpt, monkeypatch):
    path, digest = ckpt
    a, b, c = (tmp_path / n for n in "abc")
    for d in (a, b, c):
        d.mkdir()
    (b / "renamed.npz").write_bytes(path.read_bytes())
    path.unlink()
    monkeypatch.setenv("LMC_REF_MODELS", os.pathsep.join([str(a), "", str(b)]))
    places = models.search_places([c])
    assert places == [("--model-dir", c), ("LMC_REF_MODELS", a), ("LMC_REF_MODELS", b),
                      ("the model store", models.store_dir())]
    assert models.find(digest).entry.path == b / "renamed.npz"
    (c / "first.npz").write_bytes((b / "renamed.npz").read_bytes())
    assert models.find(digest, model_dirs=[c]).entry.path == c / "first.npz"  # --model-dir comes first


# ------------------------------------------------------------- decoding ---

def test_decodes_after_the_checkpoint_moved(tmp_path, ckpt):
    path, digest = ckpt
    blob = codec.compress(TEXT, f"transformer:ckpt={path}", progress=False)
    header = container.unpack(blob)[0]
    assert header.spec == "transformer:v=1" and header.model_hash == digest
    assert codec.decompress(blob, progress=False) == TEXT  # same process: the path it was given
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    path.rename(moved / "any-name.npz")
    with pytest.raises(models.ModelNotFound):
        codec.decompress(blob, progress=False)
    assert codec.decompress(blob, progress=False, model_dirs=[moved]) == TEXT
    models.add(moved / "any-name.npz")
    (moved / "any-name.npz").unlink()
    assert codec.decompress(blob, progress=False) == TEXT  # from the store


def test_compress_with_a_stored_model_by_hash(ckpt):
    path, digest = ckpt
    models.add(path)
    path.unlink()
    blob = codec.compress(TEXT, f"transformer:model={digest.hex()[:12]}", progress=False)
    assert container.unpack(blob)[0].model_hash == digest
    assert codec.decompress(blob, progress=False) == TEXT
    with pytest.raises(models.ModelNotFound, match="no model with a hash starting"):
        codec.compress(TEXT, "transformer:model=00000000", progress=False)


def test_format7_fixture_decodes_by_hash_and_its_path_is_never_opened(tmp_path, monkeypatch):
    blob = (FIXTURES / "v7_transformer_tiny.lmc").read_bytes()
    header = container.unpack(blob)[0]
    assert header.spec == "transformer:ckpt=/tmp/lmc_fixture/tiny.npz" and header.model_hash.hex() == FIXTURE_HASH
    folder = tmp_path / "models"
    folder.mkdir()
    assert save(folder / "tiny.npz").hex() == FIXTURE_HASH
    opened, real_open = [], models.open_regular

    def spy(path, *args, **kwargs):
        opened.append(Path(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(models, "open_regular", spy)
    text = fixture_text()
    assert hashlib.sha256(text).hexdigest() == "53d6ca5f46e20232b835c8b585e9da3d9d1f040004100ba7cd565266b469dc58"
    assert codec.decompress(blob, progress=False, model_dirs=[folder]) == text[:5000]  # CRC-32 checked too
    assert opened == [folder / "tiny.npz"]


def test_missing_model_is_one_line_naming_hash_places_and_remedy(tmp_path, ckpt, monkeypatch):
    path, digest = ckpt
    blob = codec.compress(TEXT, f"transformer:ckpt={path}", progress=False)
    path.unlink()
    extra = tmp_path / "extra"
    extra.mkdir()
    monkeypatch.setenv("LMC_REF_MODELS", str(tmp_path / "env"))
    with pytest.raises(models.ModelNotFound) as info:
        codec.decompress(blob, progress=False, model_dirs=[extra])
    one_line(str(info.value), digest.hex(), f"--model-dir {extra}", f"LMC_REF_MODELS {tmp_path / 'env'}",
             f"the model store {models.store_dir()}", "lmc-ref models add")
    assert isinstance(info.value, ValueError)


def test_special_files_in_a_model_dir_are_skipped_without_opening(tmp_path, ckpt):
    path, digest = ckpt
    blob = codec.compress(TEXT, f"transformer:ckpt={path}", progress=False)
    weights = path.read_bytes()
    path.unlink()
    folder = tmp_path / "hostile"
    folder.mkdir()
    os.mkfifo(folder / f"{digest.hex()}.npz")  # a FIFO named by the hash
    os.mkfifo(folder / "fifo.npz")
    (folder / "dir.npz").mkdir()
    os.symlink("/dev/zero", folder / "zero.npz")
    with deadline(), pytest.raises(models.ModelNotFound) as info:
        codec.decompress(blob, progress=False, model_dirs=[folder])
    one_line(str(info.value), "a FIFO", "a directory", "a device", "lmc-ref models add")
    (folder / "real.npz").write_bytes(weights)  # a model beside them is still found
    with deadline():
        assert codec.decompress(blob, progress=False, model_dirs=[folder]) == TEXT


@pytest.mark.parametrize("target", ["fifo", "dir", "/dev/zero", "link-to-device", "/dev/null"])
def test_load_and_add_refuse_special_files_fast(tmp_path, target):
    path = tmp_path / "x.npz"
    if target == "fifo":
        os.mkfifo(path)
    elif target == "dir":
        path.mkdir()
    elif target == "link-to-device":
        os.symlink("/dev/zero", path)
    else:
        path = Path(target)
    with deadline():
        for call in (models.load, models.add, tr.load_checkpoint):
            with pytest.raises(ValueError, match="not a regular file"):
                call(path)
        with pytest.raises(ValueError, match="cannot load"):
            codec.compress(b"x", f"transformer:ckpt={path}", progress=False)
    assert not models.store_dir().exists() or not any(models.store_dir().iterdir())


@pytest.mark.parametrize("named", ["/dev/zero", "FIFO", "/etc/passwd"])
def test_a_header_naming_a_special_file_is_ignored(tmp_path, ckpt, named):
    path, _ = ckpt
    if named == "FIFO":
        named = str(tmp_path / "fifo.npz")
        os.mkfifo(named)
    blob = codec.compress(TEXT[:100], f"transformer:ckpt={path}", progress=False)
    header, payload = container.unpack(blob)
    crafted = container.pack(dataclasses.replace(header, spec=f"transformer:ckpt={named}"), payload)
    with deadline():
        assert codec.decompress(crafted, progress=False) == TEXT[:100]  # found by hash
    path.unlink()
    with deadline(), pytest.raises(models.ModelNotFound) as info:
        codec.decompress(crafted, progress=False)
    assert named not in str(info.value)


def test_a_file_too_large_for_its_kind_is_not_read(tmp_path):
    path = tmp_path / "huge.npz"
    with open(path, "wb") as f:
        f.write(b"PK\x03\x04")
        f.truncate(ck.MAX_FILE_BYTES + 1)  # sparse: nothing is written
    with deadline():
        with pytest.raises(ValueError, match="more than"):
            models.load(path)
        with pytest.raises(ValueError, match="more than"):
            models.add(path)


# ------------------------------------------------------- crafted files ---

def npy(arr):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def npy_header(dtype, shape, body=b""):
    """An ``.npy`` member declaring ``dtype``/``shape``, followed by ``body`` (maybe far too short)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                "shape": shape})
    return buf.getvalue() + body


def write_zip(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def tiny_members(meta=None, params=None):
    params = tf.init_params(TINY, seed=0) if params is None else params
    meta = {"config": TINY} if meta is None else meta
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    members = {"step.npy": npy(np.array(0, np.int64)), "meta.npy": npy(np.frombuffer(raw, np.uint8))}
    members.update({f"param/{k}.npy": npy(w) for k, w in params.items()})
    return members


CRAFTED = {
    "empty file": lambda p: p.write_bytes(b"") or p,
    "garbage": lambda p: p.write_bytes(b"PK\x03\x04" + os.urandom(200)) or p,
    "empty zip": lambda p: write_zip(p, {}),
    "foreign npz": lambda p: np.savez(p, a=np.zeros(3)) or p,
    "meta null": lambda p: write_zip(p, tiny_members(meta=b"null")),
    "meta list": lambda p: write_zip(p, tiny_members(meta=[1, 2])),
    "meta string": lambda p: write_zip(p, tiny_members(meta="config")),
    "meta not utf-8": lambda p: write_zip(p, tiny_members(meta=b"\xff\xfe{")),
    "meta nested deeply": lambda p: write_zip(p, tiny_members(meta=b"[" * 200_000 + b"]" * 200_000)),
    "config null": lambda p: write_zip(p, tiny_members(meta={"config": None})),
    "config list": lambda p: write_zip(p, tiny_members(meta={"config": [16, 2, 1]})),
    "config strings": lambda p: write_zip(p, tiny_members(meta={"config": {**TINY, "d_model": "16"}})),
    "config bool": lambda p: write_zip(p, tiny_members(meta={"config": {**TINY, "num_layers": True}})),
    "config float": lambda p: write_zip(p, tiny_members(meta={"config": {**TINY, "d_model": 1e300}})),
    "config missing key": lambda p: write_zip(p, tiny_members(meta={"config": {"d_model": 16}})),
    "config huge layers": lambda p: write_zip(p, tiny_members(meta={"config": {**TINY, "num_layers": 10**12}})),
    "config huge model": lambda p: write_zip(p, tiny_members(
        meta={"config": {"d_model": 8192, "num_heads": 8, "num_layers": 200}})),
    "weight missing": lambda p: write_zip(p, {k: v for k, v in tiny_members().items() if "embed" not in k}),
    "weight wrong shape": lambda p: write_zip(p, {**tiny_members(), "param/embed.npy": npy(np.zeros((3, 3), "<f4"))}),
    "weight float64": lambda p: write_zip(p, {**tiny_members(), "param/embed.npy": npy(np.zeros((256, 16)))}),
    "weight big-endian": lambda p: write_zip(p, {**tiny_members(), "param/embed.npy": npy(np.zeros((256, 16), ">f4"))}),
    "weight truncated": lambda p: write_zip(p, {**tiny_members(), "param/embed.npy": npy(np.zeros((256, 16), "<f4"))[:-7]}),
    "step pickled": lambda p: write_zip(p, {**tiny_members(), "step.npy": npy_header("|O", (), b"\x80\x04K\x00.")}),
    "npy header garbage": lambda p: write_zip(p, {**tiny_members(), "step.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': os.sys}"}),
    "meta declares 1 TB": lambda p: write_zip(p, {**tiny_members(), "meta.npy": npy_header("u1", (1 << 40,), b"{}")}),
    "weight declares 1 TB": lambda p: write_zip(p, {**tiny_members(), "param/embed.npy": npy_header("<f4", (1 << 38,))}),
    "npy header huge": lambda p: write_zip(p, {**tiny_members(), "meta.npy": b"\x93NUMPY\x02\x00" + struct.pack("<I", 1 << 30) + b"{"}),
    "zip bomb": lambda p: write_zip(p, {**tiny_members(), "param/embed.npy": npy(np.zeros((256, 16), "<f4")) + bytes(32 << 20)},
                                    zipfile.ZIP_DEFLATED),
    "meta zip bomb": lambda p: write_zip(p, {**tiny_members(), "meta.npy": npy(np.frombuffer(b" " * (64 << 20), np.uint8))},
                                         zipfile.ZIP_DEFLATED),
}


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_crafted_checkpoints_give_value_error_quickly(tmp_path, kind):
    path = tmp_path / "crafted.npz"
    CRAFTED[kind](path)
    with deadline(2.0):
        for call in (tr.load_checkpoint, models.load, models.add):
            with pytest.raises(ValueError):
                call(path)
        with pytest.raises(ValueError, match="cannot load"):
            codec.compress(b"x", f"transformer:ckpt={path}", progress=False)
    # in a model folder it is skipped, not fatal
    with pytest.raises(models.ModelNotFound):
        models.find(bytes(32), model_dirs=[tmp_path])
    assert not models.store_dir().exists() or not any(models.store_dir().iterdir())


def test_a_valid_handmade_checkpoint_loads(tmp_path):
    """The crafted-file builders above make loadable files when nothing is wrong."""
    path = write_zip(tmp_path / "ok.npz", tiny_members(), zipfile.ZIP_DEFLATED)
    model = models.load(path)
    assert model.hash.hex() == FIXTURE_HASH and model.entry.parameters == tf.param_count(TINY)


# ------------------------------------------------------------------- CLI ---

def test_cli_models_add_list_and_decompress_with_model_dir(tmp_path, ckpt, capsys):
    path, digest = ckpt
    sample = tmp_path / "sample.txt"
    sample.write_bytes(TEXT)
    # --no-store: code even though this untrained model makes TEXT larger (else the file is stored
    # and decodes without any model)
    assert main(["compress", "--no-store", "--model", f"transformer:ckpt={path}", str(sample)]) == 0
    err = capsys.readouterr().err
    one_line(err.strip(), "not in the model store", f"lmc-ref models add {path}")
    moved = tmp_path / "moved"
    moved.mkdir()
    path.rename(moved / "ck.npz")
    packed = tmp_path / "sample.txt.lmc"
    # missing: one line, exit status 1
    assert main(["decompress", "-c", str(packed)]) == 1
    out, err = capsys.readouterr()
    one_line(err.strip(), "lmc-ref: ", digest.hex(), "lmc-ref models add", str(models.store_dir()))
    assert main(["info", str(packed)]) == 0
    assert "model file:       not found" in capsys.readouterr().out
    # --model-dir
    assert main(["decompress", "--model-dir", str(moved), "-k", str(packed)]) == 0
    assert sample.read_bytes() == TEXT
    assert main(["info", "--model-dir", str(moved), str(packed)]) == 0
    assert f"model file:       {moved / 'ck.npz'}" in capsys.readouterr().out
    assert main(["decompress", "--model-dir", str(tmp_path / "nowhere"), str(packed)]) == 2
    capsys.readouterr()
    # models add / list
    assert main(["models", "list"]) == 0
    assert "no models found" in capsys.readouterr().out
    assert main(["models", "add", str(moved / "ck.npz")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"added {digest.hex()} (transformer, {tf.param_count(TINY):,} parameters) as ")
    assert main(["models", "add", str(moved / "ck.npz")]) == 0
    assert capsys.readouterr().out.startswith("already in the store")
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["HASH", "KIND", "PARAMETERS", "SIZE", "FILE"]
    assert lines[1].split()[:3] == [digest.hex(), "transformer", f"{tf.param_count(TINY):,}"]
    assert lines[1].endswith(f"{digest.hex()}.npz") and len(lines) == 2
    (moved / "ck.npz").unlink()
    sample.unlink()
    assert main(["decompress", str(packed)]) == 0  # from the store
    assert sample.read_bytes() == TEXT
    # compressing with a stored model: no note
    assert main(["compress", "--model", f"transformer:model={digest.hex()[:8]}", str(sample)]) == 0
    assert capsys.readouterr().err == ""


def test_cli_models_errors(tmp_path, capsys):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a checkpoint")
    with deadline():
        assert main(["models", "add", str(fifo), str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith(f"lmc-ref: {fifo}: not a regular file (a FIFO)")
    assert err[1].startswith(f"lmc-ref: {bad}: ")
    assert main(["models"]) == 2
    assert "model store" in capsys.readouterr().err
    assert main(["models", "--help"]) == 0
    text = capsys.readouterr().out
    for fragment in ("--model-dir", "LMC_REF_MODELS", "~/.cache/lmc_ref/models", "models add", "train --out"):
        assert fragment in text
    # list reports invalid files in a folder on stderr and keeps going
    assert main(["models", "list", "--model-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "no models found" in out and "fifo.npz" in err and "bad.npz" in err


def test_compressed_and_fortran_order_checkpoints_load_as_np_load_reads_them(tmp_path):
    params = tf.init_params(TINY, seed=0)
    arrays = {"step": np.array(3), "meta": np.frombuffer(json.dumps({"config": TINY}).encode(), np.uint8)}
    arrays.update({f"{part}/{k}": np.asfortranarray(w) for part in ck.PARTS for k, w in params.items()})
    np.savez_compressed(tmp_path / "f.npz", **arrays)
    state = tr.load_checkpoint(tmp_path / "f.npz")
    assert state["step"] == 3 and ck.model_hash(state["param"]).hex() == FIXTURE_HASH
    with np.load(tmp_path / "f.npz", allow_pickle=False) as z:
        for part in ck.PARTS:
            for k in params:
                np.testing.assert_array_equal(state[part][k], z[f"{part}/{k}"])
    assert state["param"]["embed"].flags.writeable  # training resumes in place
