"""Data loaders: text chunks, enwik lookup/download logic (no network), image patches, audio chunks."""

import hashlib
import io
import urllib.request
import warnings
import zipfile

import numpy as np
import pytest

from lmc_ref import data
from lmc_ref.constants import CHUNK_SIZE


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to open a URL in these tests is a bug."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted in a test")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


# ------------------------------------------------------------------ text / random


def test_text_chunks_drop_or_keep_tail():
    blob = bytes(range(256)) * 17  # 4352 bytes = 2 chunks + 256
    chunks = list(data.text_chunks(blob))
    assert [len(c) for c in chunks] == [CHUNK_SIZE, CHUNK_SIZE]
    assert b"".join(chunks) == blob[: 2 * CHUNK_SIZE]
    kept = list(data.text_chunks(blob, keep_tail=True))
    assert [len(c) for c in kept] == [CHUNK_SIZE, CHUNK_SIZE, 256]
    assert b"".join(kept) == blob
    assert list(data.text_chunks(b"")) == []
    assert list(data.text_chunks(b"abc")) == []


def test_enwik8_head_gives_522_chunks(enwik8_head):
    chunks = list(data.text_chunks(enwik8_head))
    assert len(chunks) == 522 and all(len(c) == CHUNK_SIZE for c in chunks)
    assert chunks[0] == enwik8_head[:CHUNK_SIZE]


def test_random_chunks_are_seeded_and_prefix_stable():
    a = list(data.random_chunks(5, seed=3))
    assert a == list(data.random_chunks(5, seed=3))
    assert list(data.random_chunks(2, seed=3)) == a[:2]
    assert a != list(data.random_chunks(5, seed=4))
    assert all(len(c) == CHUNK_SIZE for c in a) and len(set(a)) == 5
    values = np.frombuffer(b"".join(a), dtype=np.uint8)
    assert 100 < values.mean() < 155 and len(np.unique(values)) == 256


# ------------------------------------------------------------------ find_enwik


@pytest.fixture
def small_sizes(monkeypatch):
    monkeypatch.setitem(data.ENWIK_SIZES, "enwik8", 100)
    monkeypatch.setitem(data.ENWIK_SIZES, "enwik9", 1000)


@pytest.fixture
def places(tmp_path, monkeypatch):
    """An LMC_REF_DATA folder and a cache folder, both empty."""
    env, cache = tmp_path / "env", tmp_path / "xdg"
    env.mkdir()
    monkeypatch.setenv("LMC_REF_DATA", str(env))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    (cache / "lmc_ref").mkdir(parents=True)
    return env, cache / "lmc_ref"


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.cache_dir() == tmp_path / "lmc_ref"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.cache_dir().parts[-2:] == (".cache", "lmc_ref")


def test_find_prefers_full_file_then_prefix(small_sizes, places):
    env, cache = places
    (env / "enwik8_head").write_bytes(b"x" * 40)
    found = data.find_enwik("enwik8")
    assert found.path == env / "enwik8_head" and found.is_prefix and found.size == 40
    assert "prefix" in found.describe() and "40 of 100" in found.describe()
    (cache / "enwik8").write_bytes(b"x" * 100)
    full = data.find_enwik("enwik8")  # a full file in the cache beats a prefix in LMC_REF_DATA
    assert full.path == cache / "enwik8" and not full.is_prefix and "full enwik8" in full.describe()
    (env / "enwik8").write_bytes(b"x" * 100)
    assert data.find_enwik("enwik8").path == env / "enwik8"  # LMC_REF_DATA before the cache
    # enwik8 is a prefix of enwik9, preferred to enwik8_head
    nine = data.find_enwik("enwik9")
    assert nine.path == env / "enwik8" and nine.is_prefix and nine.expected_size == 1000
    (cache / "enwik9").write_bytes(b"x" * 1000)
    assert not data.find_enwik("enwik9").is_prefix


def test_find_explicit_path(small_sizes, tmp_path):
    f = tmp_path / "mytext"
    f.write_bytes(b"y" * 100)
    assert not data.find_enwik("enwik8", path=f).is_prefix
    assert data.find_enwik("enwik9", path=f).is_prefix
    with pytest.raises(FileNotFoundError, match="nope"):
        data.find_enwik("enwik8", path=tmp_path / "nope")
    f.write_bytes(b"y" * 101)
    with pytest.raises(ValueError, match="more than enwik8"):
        data.find_enwik("enwik8", path=f)


def test_find_missing_and_unknown(small_sizes, places):
    with pytest.raises(FileNotFoundError, match="download_enwik"):
        data.find_enwik("enwik8")
    with pytest.raises(ValueError, match="unknown"):
        data.find_enwik("enwik7")


def test_find_downloads_only_when_asked(small_sizes, places, monkeypatch):
    env, cache = places
    calls = []

    def fake_download(name, dest_dir):
        calls.append((name, dest_dir))
        (dest_dir / name).write_bytes(b"z" * 100)
        return dest_dir / name

    monkeypatch.setattr(data, "download_enwik", fake_download)
    with pytest.raises(FileNotFoundError):
        data.find_enwik("enwik8")
    assert calls == []
    found = data.find_enwik("enwik8", download=True)
    assert calls == [("enwik8", cache)] and found.path == cache / "enwik8" and not found.is_prefix


# ------------------------------------------------------------------ download_enwik (fake opener)


def _zip_of(name, payload):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, payload)
    return buf.getvalue()


def _opener(blob, seen=None):
    def opener(url):
        if seen is not None:
            seen.append(url)
        return io.BytesIO(blob)

    return opener


def test_download_verifies_and_renames(small_sizes, tmp_path):
    payload = bytes(range(100))
    seen = []
    out = data.download_enwik("enwik8", tmp_path, progress=False, opener=_opener(_zip_of("enwik8", payload), seen))
    assert seen == ["https://mattmahoney.net/dc/enwik8.zip"]
    assert out == tmp_path / "enwik8" and out.read_bytes() == payload
    sha = hashlib.sha256(payload).hexdigest()
    assert (tmp_path / "enwik8.sha256").read_text().split()[0] == sha
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enwik8", "enwik8.sha256"]  # no .part files left
    assert data.find_enwik("enwik8", path=out, verify=True).size == 100
    out.write_bytes(bytes(100))  # same size, different content
    with pytest.raises(ValueError, match="SHA-256"):
        data.find_enwik("enwik8", path=out, verify=True)


def test_download_with_progress_bar(small_sizes, tmp_path):
    out = data.download_enwik("enwik8", tmp_path, progress=True, opener=_opener(_zip_of("enwik8", b"p" * 100)))
    assert out.read_bytes() == b"p" * 100


def _corrupt_crc(blob, payload):
    """Flip one byte of the stored (uncompressed) member so its CRC-32 no longer matches."""
    at = blob.index(payload)
    return blob[:at] + bytes([blob[at] ^ 1]) + blob[at + 1 :]


@pytest.mark.parametrize(
    "make_blob, message",
    [
        (lambda: _zip_of("enwik8", b"a" * 99), "99 bytes, expected 100"),
        (lambda: _zip_of("other", b"a" * 100), "no member"),
        (lambda: b"this is not a zip file at all", "not a valid zip"),
    ],
    ids=["wrong size", "missing member", "not a zip"],
)
def test_download_rejects_bad_archives(small_sizes, tmp_path, make_blob, message):
    with pytest.raises(ValueError, match=message):
        data.download_enwik("enwik8", tmp_path, progress=False, opener=_opener(make_blob()))
    assert list(tmp_path.iterdir()) == []  # nothing under the final name, no partial files


def test_download_rejects_crc_and_digest_mismatch(small_sizes, tmp_path, monkeypatch):
    payload = bytes(range(100))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("enwik8", payload)
    with pytest.raises(ValueError, match="CRC"):
        data.download_enwik("enwik8", tmp_path, progress=False, opener=_opener(_corrupt_crc(buf.getvalue(), payload)))
    monkeypatch.setitem(data.ENWIK_SHA256, "enwik8", "0" * 64)
    with pytest.raises(ValueError, match="SHA-256"):
        data.download_enwik("enwik8", tmp_path, progress=False, opener=_opener(buf.getvalue()))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setitem(data.ENWIK_SHA256, "enwik8", hashlib.sha256(payload).hexdigest())
    assert data.download_enwik("enwik8", tmp_path, progress=False, opener=_opener(buf.getvalue())).is_file()


def test_download_default_opener_is_looked_up_at_call_time(small_sizes, tmp_path):
    with pytest.raises(AssertionError, match="network"):  # the autouse fixture's refusal
        data.download_enwik("enwik8", tmp_path, progress=False)


# ------------------------------------------------------------------ images


def _save(path, array, mode=None):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def test_grayscale_is_truncated_mean():
    rgb = np.array([[[1, 2, 4], [255, 255, 254], [0, 0, 2], [10, 20, 30]]], dtype=np.uint8)  # [1, 4, 3]
    assert data.to_grayscale(rgb).tolist() == [[2, 254, 0, 20]]
    assert data.to_grayscale(rgb).dtype == np.uint8


def test_patches_shape_and_order():
    gray = (np.arange(70 * 130) % 251).astype(np.uint8).reshape(70, 130)  # [70, 130]: 2 x 2 patches + margins
    patches = list(data.patches_of(gray))
    expected = [gray[r * 32 : r * 32 + 32, c * 64 : c * 64 + 64].tobytes() for r in range(2) for c in range(2)]
    assert patches == expected
    assert all(len(p) == CHUNK_SIZE for p in patches)
    # row-major inside a patch: the first 64 bytes are the patch's top row
    assert patches[1][:64] == gray[0, 64:128].tobytes() and patches[1][64:128] == gray[1, 64:128].tobytes()
    assert list(data.patches_of(gray[:31])) == [] and list(data.patches_of(gray[:, :63])) == []


def test_image_patches_exact_values_from_files(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(64, 130, 3), dtype=np.uint8)  # [H, W, 3]
    _save(tmp_path / "b" / "x.png", rgb)
    gray_img = rng.integers(0, 256, size=(32, 64), dtype=np.uint8)
    _save(tmp_path / "a.PNG", gray_img)  # L-mode: converting to RGB replicates, the mean is the value
    (tmp_path / "notes.txt").write_text("ignored")
    report = data.LoadReport()
    patches = list(data.image_patches(tmp_path, report))
    gray = np.mean(rgb, axis=-1).astype(np.uint8)
    expected = [gray_img.tobytes()]  # "a.PNG" sorts before "b/x.png"
    expected += [gray[r * 32 : r * 32 + 32, c * 64 : c * 64 + 64].tobytes() for r in range(2) for c in range(2)]
    assert patches == expected
    assert report.files_read == 2 and report.skipped == []


def test_image_patches_skips_unreadable_files(tmp_path):
    _save(tmp_path / "good.jpg", np.full((32, 64, 3), 77, dtype=np.uint8))
    (tmp_path / "bad.jpeg").write_bytes(b"not a jpeg")
    report = data.LoadReport()
    with pytest.warns(UserWarning, match="bad.jpeg"):
        patches = list(data.image_patches(tmp_path, report))
    assert len(patches) == 1 and report.files_read == 1
    assert [p.name for p, _ in report.skipped] == ["bad.jpeg"]
    # flat 77 survives JPEG's lossy coding closely enough to check the mean rule ran
    assert abs(int(np.frombuffer(patches[0], dtype=np.uint8).mean()) - 77) <= 1


def test_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        data.image_patches(tmp_path / "missing")
    with pytest.raises(ValueError, match="no .png"):
        data.image_patches(tmp_path)
    (tmp_path / "only.png").write_bytes(b"garbage")
    it = data.image_patches(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="none of the 1 image files"):
            list(it)


def test_real_images(data_dir):
    folder = data_dir / "images"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    report = data.LoadReport()
    patches = list(data.image_patches(folder, report))
    # 6 Kodak images of 768x512 (192 patches each) + 6 ImageNet JPEGs 500 px wide (7 patch columns)
    assert len(patches) == 1649 and report.files_read == 12 and not report.skipped
    assert all(len(p) == CHUNK_SIZE for p in patches)


# ------------------------------------------------------------------ audio


def test_to_8bit_is_high_byte_plus_128():
    x = np.array([-32768, -257, -256, -1, 0, 1, 255, 256, 32767], dtype=np.int16)
    assert data.to_8bit(x).tolist() == [0, 126, 127, 127, 128, 128, 128, 129, 255]


def test_to_8bit_matches_audioop():
    audioop = pytest.importorskip("audioop")  # removed in Python 3.13; the paper's code used it
    x = np.random.default_rng(1).integers(-32768, 32768, size=5000, dtype=np.int16)
    assert data.to_8bit(x).tobytes() == audioop.bias(audioop.lin2lin(x.tobytes(), 2, 1), 1, 128)


def test_to_mono_floors_channel_mean():
    frames = np.array([[1, 2], [-1, -2], [100, 100], [-32768, 32767]], dtype=np.int16)  # [N, 2]
    assert data.to_mono(frames).tolist() == [1, -2, 100, -1]


def _write_audio(path, samples, rate=16_000, subtype="PCM_16"):
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate, subtype=subtype)


def test_audio_chunks_exact_values(tmp_path):
    rng = np.random.default_rng(2)
    a = rng.integers(-32768, 32768, size=2 * CHUNK_SIZE + 100, dtype=np.int16)
    b = rng.integers(-32768, 32768, size=(CHUNK_SIZE + 1000, 2), dtype=np.int16)  # stereo
    _write_audio(tmp_path / "19" / "198" / "19-198-0000.flac", a)
    _write_audio(tmp_path / "z.wav", b)
    ua, ub = data.to_8bit(a).tobytes(), data.to_8bit(data.to_mono(b)).tobytes()
    report = data.LoadReport()
    per_file = list(data.audio_chunks(tmp_path, report))
    assert per_file == [ua[:CHUNK_SIZE], ua[CHUNK_SIZE : 2 * CHUNK_SIZE], ub[:CHUNK_SIZE]]
    assert report.files_read == 2
    joined = ua + ub
    glued = list(data.audio_chunks(tmp_path, concatenate=True))
    assert len(joined) == 3 * CHUNK_SIZE + 1100  # one more whole chunk than per file, across the boundary
    assert glued == [joined[i : i + CHUNK_SIZE] for i in range(0, 3 * CHUNK_SIZE, CHUNK_SIZE)]


def test_audio_refuses_other_sample_rates(tmp_path):
    _write_audio(tmp_path / "slow.wav", np.zeros(4096, dtype=np.int16), rate=8000)
    with pytest.raises(ValueError, match=r"slow\.wav.*8000 Hz"):
        list(data.audio_chunks(tmp_path))


def test_audio_skips_unreadable_and_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.audio_chunks(tmp_path / "missing")
    with pytest.raises(ValueError, match="no .flac"):
        data.audio_chunks(tmp_path)
    (tmp_path / "broken.flac").write_bytes(b"fLaC but not really")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="none of the 1 audio files"):
            list(data.audio_chunks(tmp_path))
    _write_audio(tmp_path / "ok.wav", np.arange(CHUNK_SIZE, dtype=np.int16) * 16)
    report = data.LoadReport()
    with pytest.warns(UserWarning, match="broken.flac"):
        chunks = list(data.audio_chunks(tmp_path, report))
    assert len(chunks) == 1 and report.files_read == 1 and len(report.skipped) == 1


def test_real_audio(data_dir):
    folder = data_dir / "audio"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    report = data.LoadReport()
    chunks = list(data.audio_chunks(folder, report))
    assert report.files_read == 8 and not report.skipped
    assert len(chunks) == 740 and all(len(c) == CHUNK_SIZE for c in chunks)
    # speech: the 8-bit samples sit around 128
    values = np.frombuffer(b"".join(chunks[:50]), dtype=np.uint8)
    assert 120 < values.mean() < 136
