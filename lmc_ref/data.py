"""The paper's four data sources, as streams of 2048-byte chunks.

* **Text** -- enwik8 / enwik9 (the Large Text Compression Benchmark files).
  :func:`find_enwik` looks for them; :func:`download_enwik` fetches them (never
  implicitly, never in tests).  When only a prefix such as ``enwik8_head`` is
  available it is returned with ``is_prefix=True`` so the caller can say so.
* **Images** -- any folder of PNG/JPEG files -> grayscale exactly as the paper's
  code (``np.mean(rgb, axis=-1).astype(np.uint8)``) -> non-overlapping patches of
  32 rows x 64 columns, each flattened row-major to 2048 bytes.
* **Audio** -- any folder of FLAC/WAV files at 16 kHz -> mono 16-bit -> 8-bit
  (high byte + 128, as the paper's ``audioop.bias(audioop.lin2lin(x, 2, 1), 1, 128)``)
  -> consecutive 2048-byte chunks.
* **Random** -- seeded uniform bytes.

Every loader validates its folder eagerly (missing folder: ``FileNotFoundError``;
no matching files: ``ValueError``) and then returns a lazy iterator of ``bytes``.
"""

import hashlib
import os
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .constants import CHUNK_SIZE
from .progress import progress_bar

# --------------------------------------------------------------------------- text

ENWIK_URL = "https://mattmahoney.net/dc/{name}.zip"  # the paper's code uses this https address
#: Sizes of the unzipped files (Large Text Compression Benchmark).
ENWIK_SIZES = {"enwik8": 100_000_000, "enwik9": 1_000_000_000}
#: SHA-256 of the unzipped files.  Deliberately ``None``: we could not confirm the
#: digests from two independent sources, and a wrong constant would reject good
#: files.  Until they are filled in, a download is verified by the ZIP's own
#: CRC-32 of every member (``ZipFile.testzip``) plus the exact size above, and the
#: SHA-256 we computed is written beside the file (``<name>.sha256``) and checked
#: by later :func:`find_enwik` calls that ask for ``verify=True``.
ENWIK_SHA256 = {"enwik8": None, "enwik9": None}
#: What may stand in for each file, best first; later entries are prefixes
#: (enwik8 is the first 10**8 bytes of enwik9; ``enwik8_head`` ships with the repo's data).
ENWIK_CANDIDATES = {"enwik8": ("enwik8", "enwik8_head"), "enwik9": ("enwik9", "enwik8", "enwik8_head")}


@dataclass(frozen=True)
class EnwikFile:
    """A located enwik file.  ``is_prefix`` is True when it is only a prefix of ``name``."""

    path: Path
    name: str
    size: int
    expected_size: int

    @property
    def is_prefix(self):
        return self.size < self.expected_size

    def describe(self):
        """One line for reports, e.g. ``enwik8_head (1,071,051 of 100,000,000 bytes of enwik8: a prefix)``."""
        if not self.is_prefix:
            return f"{self.path.name} ({self.size:,} bytes, full {self.name})"
        return f"{self.path.name} ({self.size:,} of {self.expected_size:,} bytes of {self.name}: a prefix)"


def cache_dir():
    """``$XDG_CACHE_HOME/lmc_ref`` or ``~/.cache/lmc_ref`` (not created here)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lmc_ref"


def _check_name(name):
    if name not in ENWIK_SIZES:
        raise ValueError(f"unknown text corpus {name!r} (expected one of {sorted(ENWIK_SIZES)})")


def find_enwik(name="enwik8", path=None, download=False, verify=False):
    """Locate enwik8/enwik9: ``path``, else ``$LMC_REF_DATA``, else the cache dir.

    The full file is preferred wherever it is; otherwise a prefix (``enwik8`` for
    enwik9, then ``enwik8_head``) is returned with ``is_prefix=True``.

    Args:
        name: ``"enwik8"`` or ``"enwik9"``.
        path: an explicit file; used as is (no search), flagged as a prefix if short.
        download: if nothing is found, call :func:`download_enwik` into the cache dir.
        verify: check a full file against ``<file>.sha256`` (written at download) if present.

    Raises:
        FileNotFoundError: nothing found (the message lists where it looked).
        ValueError: the file is larger than ``name`` can be, or fails verification.
    """
    _check_name(name)
    expected = ENWIK_SIZES[name]
    if path is not None:
        candidates = [Path(path)]
        if not candidates[0].is_file():
            raise FileNotFoundError(f"{path} does not exist or is not a file")
    else:
        folders = [Path(os.environ["LMC_REF_DATA"])] if os.environ.get("LMC_REF_DATA") else []
        folders.append(cache_dir())
        # a full file anywhere beats a prefix anywhere; within a kind, LMC_REF_DATA beats the cache
        candidates = [folder / cand for cand in ENWIK_CANDIDATES[name] for folder in folders]
    for cand in candidates:
        if cand.is_file():
            found = EnwikFile(cand, name, cand.stat().st_size, expected)
            if found.size > expected:
                raise ValueError(f"{cand} has {found.size:,} bytes, more than {name} ({expected:,}): not {name}")
            if verify and not found.is_prefix:
                _verify_digest(cand, name)
            return found
    if download:
        return EnwikFile(download_enwik(name, cache_dir()), name, expected, expected)
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"{name} not found (looked at {looked}); set LMC_REF_DATA to a folder holding {name} or its prefix "
        f"{name}_head, pass the file (--text PATH), or download it from {ENWIK_URL.format(name=name)} "
        f"(--download, or lmc_ref.data.download_enwik({name!r}))"
    )


def _verify_digest(path, name):
    want = ENWIK_SHA256[name]
    sidecar = path.with_name(path.name + ".sha256")
    if want is None and sidecar.is_file():
        want = sidecar.read_text().split()[0]
    if want is not None and _sha256_file(path) != want:
        raise ValueError(f"{path}: SHA-256 differs from the recorded {want}; delete it and download again")


def _sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _offline_message(name, url, err):
    return (
        f"could not download {name} from {url} ({err}). Without the network, put {name} (or its prefix "
        f"{name}_head) in a folder and set LMC_REF_DATA=that/folder, or pass the file with --text PATH"
    )


def _read(response, name, url):
    try:
        return response.read(1 << 20)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
        raise ConnectionError(_offline_message(name, url, err)) from err


def download_enwik(name="enwik8", dest_dir=None, progress=True, opener=None):
    """Download ``<name>.zip`` from the Large Text Compression Benchmark and unzip it.

    The zip is streamed to ``<dest>/<name>.zip.part`` (tqdm bar), tested with
    ``ZipFile.testzip`` (CRC-32 of the member), and the member is extracted to
    ``<name>.part``, checked for the exact size (and SHA-256 when known), then
    renamed to ``<dest>/<name>``: an interrupted download never leaves a file
    under the final name.  ``opener(url)`` returns a readable response
    (default ``urllib.request.urlopen``, looked up at call time; tests pass a fake).

    Returns:
        Path of the unzipped file.

    Raises:
        ValueError: corrupt zip, missing member, wrong size or digest.
        ConnectionError: the download failed (offline, refused, timed out);
            the message names the URL and the two ways to work without it
            (``LMC_REF_DATA``, ``--text``).
    """
    _check_name(name)
    opener = opener if opener is not None else urllib.request.urlopen
    dest = Path(dest_dir) if dest_dir is not None else cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    zip_part = dest / f"{name}.zip.part"
    out_part = dest / f"{name}.part"
    final = dest / name
    url = ENWIK_URL.format(name=name)
    try:
        try:
            response = opener(url)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            raise ConnectionError(_offline_message(name, url, err)) from err
        with response:
            total = getattr(response, "length", None)
            bar = progress_bar(total, progress, f"download {name}.zip", threshold=0, leave=True)
            try:
                with open(zip_part, "wb") as f:
                    for block in iter(lambda: _read(response, name, url), b""):
                        f.write(block)
                        if bar is not None:
                            bar.update(len(block))
            finally:
                if bar is not None:
                    bar.close()
        digest = hashlib.sha256()
        try:
            with zipfile.ZipFile(zip_part) as archive:
                if name not in archive.namelist():
                    raise ValueError(f"{name}.zip has no member {name!r} (members: {archive.namelist()})")
                bad = archive.testzip()
                if bad is not None:
                    raise ValueError(f"{name}.zip: CRC-32 check failed for {bad!r}")
                with archive.open(name) as src, open(out_part, "wb") as f:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        digest.update(block)
                        f.write(block)
        except zipfile.BadZipFile as err:
            raise ValueError(f"downloaded {name}.zip is not a valid zip file: {err}") from err
        size = out_part.stat().st_size
        if size != ENWIK_SIZES[name]:
            raise ValueError(f"{name} has {size:,} bytes, expected {ENWIK_SIZES[name]:,}")
        sha = digest.hexdigest()
        if ENWIK_SHA256[name] is not None and sha != ENWIK_SHA256[name]:
            raise ValueError(f"{name}: SHA-256 {sha} differs from the expected {ENWIK_SHA256[name]}")
        os.replace(out_part, final)
        final.with_name(name + ".sha256").write_text(f"{sha}  {name}\n")
    finally:
        for leftover in (zip_part, out_part):
            leftover.unlink(missing_ok=True)
    return final


def text_chunks(data, keep_tail=False):
    """Consecutive ``CHUNK_SIZE``-byte chunks of ``data``.

    A short last chunk is dropped unless ``keep_tail`` (the paper reads whole
    chunks only; enwik8_head gives 522 chunks).
    """
    data = bytes(data)
    end = len(data) if keep_tail else len(data) - len(data) % CHUNK_SIZE
    return (data[i : i + CHUNK_SIZE] for i in range(0, end, CHUNK_SIZE))


def random_chunks(n_chunks, seed=0):
    """``n_chunks`` chunks of uniform random bytes from ``np.random.default_rng(seed)``.

    Each chunk is drawn by its own ``rng.bytes`` call, so the first k chunks do
    not depend on ``n_chunks``.
    """
    rng = np.random.default_rng(seed)
    return (rng.bytes(CHUNK_SIZE) for _ in range(n_chunks))


# --------------------------------------------------------------- images and audio

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # compared case-insensitively (.JPEG too)
AUDIO_SUFFIXES = (".flac", ".wav")
#: Patch shape (rows, columns), as ``CHUNK_SHAPE_2D = (32, 64)`` in the paper's code.
PATCH_SHAPE = (32, 64)
AUDIO_RATE = 16_000


@dataclass
class LoadReport:
    """Filled in by the image/audio loaders: how many files were used and which were skipped."""

    files_read: int = 0
    skipped: list = field(default_factory=list)  # [(path, reason)]


def list_files(folder, suffixes):
    """Files under ``folder`` (recursively) with one of ``suffixes``, sorted by relative path."""
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise ValueError(f"no {'/'.join(suffixes)} files under {root}")
    return files


def _skip(report, path, err, kind):
    warnings.warn(f"skipping unreadable {kind} {path}: {err}", stacklevel=3)
    report.skipped.append((path, str(err)))


def to_grayscale(rgb):
    """The paper's rule: mean of R, G, B as float, truncated to uint8.  ``[H, W, 3] -> [H, W]``."""
    return np.mean(rgb, axis=-1).astype(np.uint8)


def patches_of(gray):
    """Non-overlapping 32x64 patches of a ``[H, W]`` uint8 image, each 2048 bytes row-major.

    Order: patch rows top to bottom, and within a patch row left to right (as the
    paper's ``itertools.product(range(H // 32), range(W // 64))``).  Pixels past
    the last whole patch (right and bottom margins) are dropped.
    """
    h, w = PATCH_SHAPE
    rows, cols = gray.shape[0] // h, gray.shape[1] // w
    for r in range(rows):
        for c in range(cols):
            yield np.ascontiguousarray(gray[r * h : (r + 1) * h, c * w : (c + 1) * w]).tobytes()


def image_patches(folder, report=None):
    """2048-byte grayscale patches of every image under ``folder`` (flat or ImageNet-style subfolders).

    Files (``.png``, ``.jpg``, ``.jpeg``, any case) are visited in sorted
    relative-path order.  Each is decoded with Pillow and converted to RGB
    (grayscale, palette and CMYK images too, as TensorFlow's 3-channel decode in
    the paper's pipeline; EXIF orientation is not applied), then
    :func:`to_grayscale` and :func:`patches_of`.  Unreadable files are skipped
    with a warning and recorded in ``report`` (a :class:`LoadReport`).

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: no image files, or none of them could be read.
    """
    from PIL import Image

    files = list_files(folder, IMAGE_SUFFIXES)
    report = report if report is not None else LoadReport()

    def generate():
        for path in files:
            try:
                with Image.open(path) as im:
                    rgb = np.asarray(im.convert("RGB"))  # [H, W, 3] uint8
            except Exception as err:  # Pillow raises many types for damaged files
                _skip(report, path, err, "image")
                continue
            report.files_read += 1
            yield from patches_of(to_grayscale(rgb))
        if report.files_read == 0:
            raise ValueError(f"none of the {len(files)} image files under {folder} could be read")

    return generate()


def to_8bit(samples):
    """16-bit signed samples -> the paper's 8-bit unsigned: high byte + 128.  ``[N] int16 -> [N] uint8``."""
    samples = np.asarray(samples, dtype=np.int16)
    return ((samples >> 8) + 128).astype(np.uint8)


def to_mono(frames):
    """``[N, C]`` int16 -> ``[N]`` int16: channel mean, rounded toward minus infinity."""
    if frames.shape[1] == 1:
        return frames[:, 0]
    return (frames.astype(np.int32).sum(axis=1) // frames.shape[1]).astype(np.int16)


def audio_chunks(folder, report=None, concatenate=False):
    """2048-byte chunks of 8-bit audio from every FLAC/WAV file under ``folder``.

    Files are visited in sorted relative-path order (LibriSpeech's nested
    ``speaker/chapter/`` layout or flat) and read with soundfile as 16-bit
    (libsndfile scales other bit depths to 16 bits), mixed to mono
    (:func:`to_mono`) and converted with :func:`to_8bit`.  The sample rate must
    be 16 kHz: other rates are **refused** (no resampling, which would change
    the data).  By default each file is cut on its own and its short tail is
    dropped, as the paper's code does per utterance; ``concatenate=True`` joins
    all files first and drops only the final tail.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: no audio files, none readable, or a file whose sample rate
            is not 16 kHz (the message names the file).
    """
    import soundfile as sf

    files = list_files(folder, AUDIO_SUFFIXES)
    report = report if report is not None else LoadReport()

    def generate():
        pending = b""
        for path in files:
            try:
                frames, rate = sf.read(path, dtype="int16", always_2d=True)  # [N, C]
            except Exception as err:  # soundfile.LibsndfileError and friends
                _skip(report, path, err, "audio file")
                continue
            if rate != AUDIO_RATE:
                raise ValueError(f"{path}: sample rate {rate} Hz, expected {AUDIO_RATE} Hz (resampling is not done)")
            report.files_read += 1
            data = to_8bit(to_mono(frames)).tobytes()
            if concatenate:
                data, pending = pending + data, b""
                whole = len(data) - len(data) % CHUNK_SIZE
                pending = data[whole:]
                data = data[:whole]
            yield from text_chunks(data)
        if report.files_read == 0:
            raise ValueError(f"none of the {len(files)} audio files under {folder} could be read")

    return generate()

