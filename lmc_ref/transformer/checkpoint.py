"""Checkpoints of the byte transformer: ``.npz`` files without pickle, and the weights' hash.

A checkpoint holds the weights, the Adam moments, the step count and a JSON
``meta`` (config, hyper-parameters, SHA-256 of the training data, history)
stored as a uint8 array.  The *model hash* is what a ``.lmc`` header records to
name the weights: the decoder finds them by it (``lmc_ref.models``), never by a
path.

A checkpoint may come from anywhere (a model folder, a download), so it is
read as hostile input, never with pickle and never with ``np.load``: only a
regular file is opened (``open_regular``), the zip directory and every ``.npy``
header are checked against the shapes the declared config implies *before*
any array is read, and only those bytes are read.  Anything malformed -- an
empty or foreign file, ``meta`` that is not a JSON object, a config out of
bounds, a member larger than its shape, a zip bomb -- raises ``ValueError``.
"""

import ast
import hashlib
import json
import math
import os
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .model import MAX_VOCAB, get_config, param_count, param_shapes

#: File name suffix of a checkpoint (and of its copy in the model store).
SUFFIX = ".npz"
#: Largest model a checkpoint may declare, in parameters (512 MiB of float32 per array).
MAX_PARAMS = 1 << 27
MAX_D_MODEL = 1 << 14
MAX_LAYERS = 1 << 10
#: Largest ``meta`` JSON, in bytes.
MAX_META_BYTES = 4 << 20
#: Bytes an ``.npy`` header may take (numpy writes 128).
MAX_NPY_HEADER = 4096
#: Bytes of zip bookkeeping allowed per member (local and central headers, zip64 extras, name).
MEMBER_OVERHEAD = 1024
#: Largest checkpoint file read at all: weights and two Adam moments of ``MAX_PARAMS``, plus meta.
MAX_FILE_BYTES = 3 * 4 * MAX_PARAMS + MAX_META_BYTES + (64 << 20)
PARTS = ("param", "adam_m", "adam_v")

_F32 = np.dtype("<f4")
#: What reading a crafted zip or .npy header may raise besides ValueError.
_MALFORMED = (ValueError, TypeError, KeyError, IndexError, SyntaxError, OverflowError, EOFError,
              RecursionError, struct.error, zlib.error, zipfile.BadZipFile, zipfile.LargeZipFile,
              NotImplementedError, RuntimeError, OSError)


def model_hash(params):
    """SHA-256 (32 bytes) over every weight: name, shape and float32 little-endian bytes, names sorted."""
    h = hashlib.sha256()
    for name in sorted(params):
        w = np.ascontiguousarray(params[name], dtype="<f4")
        h.update(name.encode() + b"\0" + json.dumps(list(w.shape)).encode() + b"\0")
        h.update(w.tobytes())
    return h.digest()


def save_checkpoint(path, state):
    """Write ``state`` (see ``train``) to ``path`` as an ``.npz`` (atomically: temp file + rename)."""
    arrays = {"step": np.array(state["step"], dtype=np.int64),
              "meta": np.frombuffer(json.dumps(state["meta"]).encode(), dtype=np.uint8)}
    for prefix in PARTS:
        for name, w in state[prefix].items():
            arrays[f"{prefix}/{name}"] = w
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _file_type(mode):
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _check_regular(path, st, max_bytes, what):
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path}: not a regular file ({_file_type(st.st_mode)}); a model file must be one")
    if max_bytes is not None and st.st_size > max_bytes:
        raise ValueError(f"{path}: {st.st_size:,} bytes, more than {what} may hold ({max_bytes:,})")


def open_regular(path, max_bytes=None, what="a model file"):
    """Open ``path`` for binary reading only if it is a regular file of at most ``max_bytes``.

    A symbolic link to a regular file is followed; a FIFO, device, socket or
    directory (or a link to one) is refused with ``ValueError`` before it is
    opened, and checked again on the open descriptor, so nothing blocks and
    nothing is read without bound.  Missing or unreadable files raise ``OSError``.
    This is how every model file is opened (``lmc_ref.models`` uses it for all kinds).
    """
    st = os.stat(path)  # follows symlinks: a link to a regular file is fine
    _check_regular(path, st, max_bytes, what)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        now = os.fstat(fd)
        _check_regular(path, now, max_bytes, what)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise ValueError(f"{path}: replaced while it was being opened")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def load_checkpoint(path, parts=PARTS):
    """Read a checkpoint written by ``save_checkpoint`` (no pickle, bounded reads).

    ``parts``: which weight sets to read, of ``param``, ``adam_m``, ``adam_v``
    (decoding needs only ``("param",)``).  Returns ``{"step", "meta", prefix: {name: array}}``.

    Raises:
        ValueError: anything that is not a well-formed checkpoint (see the module docstring).
        OSError: the file cannot be opened or read.
    """
    with open_regular(path, MAX_FILE_BYTES, "a transformer checkpoint") as f:
        return read_checkpoint(f, path, parts)


def _malformed(name, err):
    return ValueError(f"{name}: malformed transformer checkpoint ({type(err).__name__}: {err})"[:300])


def read_checkpoint(f, name="checkpoint", parts=PARTS):
    """``load_checkpoint`` on an open binary file ``f`` (seekable; ``name`` is used in messages)."""
    try:
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        if size > MAX_FILE_BYTES:
            raise ValueError(f"{name}: {size:,} bytes, more than a transformer checkpoint may hold")
        try:
            zf = zipfile.ZipFile(f)
        except _MALFORMED as err:
            raise ValueError(f"{name}: not an lmc_ref transformer checkpoint (not an .npz file: {err})") from None
        with zf:
            return _read_members(zf, {i.filename: i for i in zf.infolist()}, name, size, parts)
    except ValueError:
        raise
    except _MALFORMED as err:
        raise _malformed(name, err) from None


def _read_members(zf, members, name, size, parts):
    if "meta.npy" not in members or "step.npy" not in members:
        raise ValueError(f"{name}: not an lmc_ref transformer checkpoint (no meta/step)")
    meta_raw = _read_array(zf, members["meta.npy"], np.dtype("u1"), None, name, max_items=MAX_META_BYTES)
    meta = _parse_meta(meta_raw.tobytes(), name)
    config = meta["config"]
    shapes = param_shapes(config)
    bound = (len(shapes) * len(PARTS) + 2) * (MEMBER_OVERHEAD + MAX_NPY_HEADER)
    bound += 4 * len(PARTS) * param_count(config) + MAX_META_BYTES + 65536
    if size > bound:
        raise ValueError(f"{name}: {size:,} bytes, more than a checkpoint of config {config} may hold ({bound:,})")
    step = _read_array(zf, members["step.npy"], np.dtype("<i8"), (), name)
    state = {"step": int(step), "meta": meta}
    if state["step"] < 0:
        raise ValueError(f"{name}: negative step count")
    for prefix in parts:
        if prefix not in PARTS:
            raise ValueError(f"unknown checkpoint part {prefix!r} (expected one of {PARTS})")
        state[prefix] = {}
        for key, shape in shapes.items():
            info = members.get(f"{prefix}/{key}.npy")
            if info is None:
                raise ValueError(f"{name}: {prefix}/{key} missing or not float32 of shape {shape}")
            state[prefix][key] = _read_array(zf, info, _F32, shape, name)
    return state


def _parse_meta(raw, name):
    """The checkpoint's ``meta``: a JSON object whose ``config`` is a valid, bounded transformer config."""
    try:
        meta = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise ValueError(f"{name}: meta is nested too deeply") from None
    except ValueError as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"{name}: meta is not JSON ({err})"[:300]) from None
    if not isinstance(meta, dict):
        raise ValueError(f"{name}: meta is a JSON {type(meta).__name__}, not an object")
    config = meta.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{name}: meta has no config object")
    limits = {"d_model": MAX_D_MODEL, "num_heads": MAX_D_MODEL, "num_layers": MAX_LAYERS, "vocab": MAX_VOCAB}
    for key, value in config.items():
        if key not in limits:
            raise ValueError(f"{name}: unknown config key {str(key)[:40]!r}")
        if type(value) is not int or not 0 <= value <= limits[key]:
            raise ValueError(f"{name}: config {key} must be an integer in [0, {limits[key]}], not {repr(value)[:40]}")
    try:
        cfg = get_config(config)
    except KeyError as err:
        raise ValueError(f"{name}: config has no {err}") from None
    if param_count(cfg) > MAX_PARAMS:
        raise ValueError(f"{name}: config {cfg} has {param_count(cfg):,} parameters, more than {MAX_PARAMS:,}")
    meta["config"] = cfg
    return meta


def _read_npy_header(fp, name, member):
    """``(shape, fortran_order, descr)`` of an ``.npy`` stream; its length is checked before it is read."""
    prefix = fp.read(8)
    if len(prefix) < 8 or prefix[:6] != b"\x93NUMPY":
        raise ValueError(f"{name}: {member} is not an .npy array")
    version = (prefix[6], prefix[7])
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"{name}: {member} has .npy format version {version[0]}.{version[1]}")
    size_field = fp.read(2 if version == (1, 0) else 4)
    if len(size_field) < (2 if version == (1, 0) else 4):
        raise ValueError(f"{name}: {member} is truncated")
    length = int.from_bytes(size_field, "little")
    if length > MAX_NPY_HEADER:
        raise ValueError(f"{name}: {member} has a {length:,}-byte .npy header (at most {MAX_NPY_HEADER})")
    header = fp.read(length)
    if len(header) < length:
        raise ValueError(f"{name}: {member} is truncated")
    try:  # a Python dict literal; read by ast.literal_eval (no names, no calls), never by numpy's eval
        fields = ast.literal_eval(header.decode("latin1"))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
        raise ValueError(f"{name}: {member} has a malformed .npy header ({type(err).__name__})") from None
    if not isinstance(fields, dict) or set(fields) != {"descr", "fortran_order", "shape"}:
        raise ValueError(f"{name}: {member} has a malformed .npy header")
    descr, fortran, shape = fields["descr"], fields["fortran_order"], fields["shape"]
    if (not isinstance(descr, str) or not isinstance(fortran, bool) or not isinstance(shape, tuple)
            or len(shape) > 8 or not all(type(n) is int and n >= 0 for n in shape)):
        raise ValueError(f"{name}: {member} has a malformed .npy header")
    return shape, fortran, descr


def _read_array(zf, info, dtype, shape, name, max_items=None):
    """One ``.npy`` member, its zip entry and header checked against ``dtype``/``shape`` before reading.

    ``shape=None`` accepts any 1-D array of at most ``max_items`` items.
    """
    member = info.filename[:-4]
    if info.flag_bits & 0x1:
        raise ValueError(f"{name}: {member} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ValueError(f"{name}: {member} uses zip compression method {info.compress_type} (not an .npz)")
    most = dtype.itemsize * (max_items if shape is None else math.prod(shape))
    if info.file_size > most + MAX_NPY_HEADER:
        raise ValueError(f"{name}: {member} holds {info.file_size:,} bytes, more than its shape allows")
    with zf.open(info) as fp:
        got_shape, fortran, got_dtype = _read_npy_header(fp, name, member)
        if got_dtype != dtype.str or (shape is None and len(got_shape) != 1) or (shape is not None and got_shape != shape):
            want = f"{dtype} of shape {shape}" if shape is not None else f"1-D {dtype}"
            raise ValueError(f"{name}: {member} missing or not {want} (found {got_dtype} of shape {got_shape})")
        count = math.prod(got_shape)
        if max_items is not None and count > max_items:
            raise ValueError(f"{name}: {member} has {count:,} items, more than {max_items:,}")
        nbytes = count * dtype.itemsize
        buf = bytearray(nbytes)
        view, got = memoryview(buf), 0
        while got < nbytes:
            piece = fp.read1(min(nbytes - got, 1 << 20))
            if not piece:
                raise ValueError(f"{name}: {member} is truncated")
            view[got:got + len(piece)] = piece
            got += len(piece)
    arr = np.frombuffer(buf, dtype)
    if fortran and len(got_shape) > 1:
        return arr.reshape(got_shape[::-1]).T
    return arr.reshape(got_shape)
