"""Classical baselines: every adapter round-trips any bytes; PNG/FLAC specifics; the paper's rates."""

import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmc_ref import data
from lmc_ref.baselines import CLASSICAL, ClassicalCompressor, closest_factors
from lmc_ref.constants import CHUNK_SIZE

NAMES = sorted(CLASSICAL)
_rng = np.random.default_rng(5)
SPECIAL = {
    "empty": b"",
    "one byte": b"\x00",
    "one high byte": b"\xff",
    "prime length": bytes(range(256))[:251],
    "all 256 values": bytes(range(256)),
    "zeros 2048": bytes(CHUNK_SIZE),
    "random 2048": _rng.bytes(CHUNK_SIZE),
    "random 2049": _rng.bytes(CHUNK_SIZE + 1),
    "long run": b"a" * 5000,
}


def test_registry():
    assert set(NAMES) == {"gzip", "lzma", "png_paper", "png", "flac", "bzip2", "brotli", "zstd", "ppmd"}
    for name, comp in CLASSICAL.items():
        assert isinstance(comp, ClassicalCompressor) and comp.name == name and comp.description


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", sorted(SPECIAL))
def test_special_inputs_round_trip(name, case):
    comp, blob = CLASSICAL[name], SPECIAL[case]
    packed = comp.compress(blob)
    assert isinstance(packed, bytes)
    assert comp.decompress(packed) == blob
    assert comp.compress(blob) == packed  # deterministic


@pytest.mark.parametrize("name", NAMES)
@given(blob=st.binary(max_size=3000))
def test_round_trip_arbitrary_bytes(name, blob):
    comp = CLASSICAL[name]
    assert comp.decompress(comp.compress(blob)) == blob


@pytest.mark.parametrize("name", NAMES)
@given(chunk=st.binary(min_size=CHUNK_SIZE, max_size=CHUNK_SIZE))
def test_round_trip_chunks(name, chunk):
    comp = CLASSICAL[name]
    assert comp.decompress(comp.compress(chunk)) == chunk


@pytest.mark.parametrize("name", NAMES)
def test_sizes_are_sane(name):
    comp = CLASSICAL[name]
    assert len(comp.compress(bytes(CHUNK_SIZE))) < 200
    # incompressible input costs a bounded overhead (bzip2's Huffman tables on random data: ~400 bytes)
    allowance = 450 if name == "bzip2" else 150
    assert len(comp.compress(SPECIAL["random 2048"])) <= CHUNK_SIZE + allowance


def test_closest_factors_is_the_papers():
    assert closest_factors(CHUNK_SIZE) == (32, 64)
    assert closest_factors(36) == (6, 6)
    assert closest_factors(251) == (1, 251)
    assert closest_factors(1) == (1, 1)


def test_png_shapes_paper_vs_true():
    from PIL import Image

    patch = (np.arange(32 * 64) % 256).astype(np.uint8).tobytes()  # [32 rows, 64 cols], row-major
    paper = Image.open(io.BytesIO(CLASSICAL["png_paper"].compress(patch)))
    true = Image.open(io.BytesIO(CLASSICAL["png"].compress(patch)))
    assert (paper.mode, paper.size) == ("L", (32, 64))  # (width, height): patch rows split in two
    assert (true.mode, true.size) == ("L", (64, 32))  # as the patch was cut
    assert np.array_equal(np.asarray(true), np.frombuffer(patch, dtype=np.uint8).reshape(32, 64))


def test_png_true_shape_helps_vertical_structure():
    """Noisy along each row, +1 from one row to the next: the true shape's "pixel above" filter
    sees the +1; the paper's (width 32) image compares pixels 32 columns apart instead."""
    row = np.random.default_rng(0).integers(0, 200, 64, dtype=np.uint8)
    patch = (row[None, :] + np.arange(32, dtype=np.uint8)[:, None]).tobytes()  # [32, 64]
    assert 2 * len(CLASSICAL["png"].compress(patch)) < len(CLASSICAL["png_paper"].compress(patch))


def test_flac_is_true_8bit_16khz_mono():
    import soundfile as sf

    chunk = (128 + 100 * np.sin(np.arange(CHUNK_SIZE) / 10)).astype(np.uint8).tobytes()
    packed = CLASSICAL["flac"].compress(chunk)
    info = sf.info(io.BytesIO(packed))
    assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == (
        "FLAC",
        "PCM_S8",
        16000,
        1,
        CHUNK_SIZE,
    )
    assert len(packed) < CHUNK_SIZE // 2  # a smooth signal is predictable
    assert CLASSICAL["flac"].decompress(packed) == chunk


def test_real_patches_and_audio_round_trip(data_dir):
    images, audio = data_dir / "images", data_dir / "audio"
    if not (images.is_dir() and audio.is_dir()):
        pytest.skip("images/ or audio/ missing under LMC_REF_DATA")
    patches = list(data.image_patches(images))[::200]
    sounds = list(data.audio_chunks(audio))[::100]
    for name in ("png", "png_paper", "flac", "gzip"):
        comp = CLASSICAL[name]
        for chunk in patches + sounds:
            packed = comp.compress(chunk)
            assert comp.decompress(packed) == chunk
            assert len(packed) < CHUNK_SIZE + 200


@pytest.mark.parametrize("name, expected", [("gzip", 47.76), ("lzma", 49.90)])
def test_paper_rates_on_enwik8_head(enwik8_head, name, expected):
    """The paper's chunked protocol: header counted once, i.e. subtract (n - 1) * len(compress(b"\\x00"))."""
    comp = CLASSICAL[name]
    chunks = list(data.text_chunks(enwik8_head))
    total = sum(len(comp.compress(c)) for c in chunks) - (len(chunks) - 1) * len(comp.compress(b"\x00"))
    assert 100 * total / (len(chunks) * CHUNK_SIZE) == pytest.approx(expected, abs=0.05)
