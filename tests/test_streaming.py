"""Block files (format 8): streaming, threads, per-block checks, and tables sized to the input.

Small inputs with small block sizes, so that every test runs in seconds.
"""

import os
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmc_ref import blocks, cli, codec, container, streaming

SMALL = "ngram:order=2,mem=10"


def text(n, seed=0):
    """``n`` bytes of compressible text."""
    rng = random.Random(seed)
    words = b"the of and to in a is that for it as was with be by on".split()
    out = b" ".join(rng.choice(words) for _ in range(n // 2))
    return out[:n]


def blocks_of(blob):
    """The (record, payload) of each block of a format-8 file, and the trailer bytes."""
    header, pos = container.unpack_stream_header(blob)
    out = []
    while blob[pos:pos + 4] != b"\0\0\0\0":
        block = container.unpack_block(blob[pos:pos + container.BLOCK_RECORD_SIZE], header.block_size)
        start = pos + container.BLOCK_RECORD_SIZE
        out.append((block, blob[start:start + block.payload_length]))
        pos = start + block.payload_length
    return header, out, blob[pos:]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=3000) | st.integers(0, 3000).map(text), block_size=st.integers(1, 1200),
       threads=st.sampled_from([1, 1, 2]), spec=st.sampled_from([SMALL, "cm:mem=10"]))
def test_blocks_and_threads_decode_to_the_input(data, block_size, threads, spec):
    blob = codec.compress(data, spec, store=True, progress=False, block_size=block_size, threads=threads)
    assert blob[4] == (container.VERSION if len(data) <= block_size else container.BLOCKS_VERSION)
    assert codec.decompress(blob, progress=False, threads=threads) == data
    if threads == 1:  # the streaming form yields the same bytes, piece by piece
        pieces = list(streaming.iter_decompress(streaming.bytes_source(blob).take, progress=False))
        assert b"".join(pieces) == data


def test_threads_write_the_same_file_as_one_thread_for_the_same_blocks():
    data = text(5000)
    one = codec.compress(data, SMALL, store=True, progress=False, block_size=1000)
    two = codec.compress(data, SMALL, store=True, progress=False, block_size=1000, threads=2)
    assert one == two
    assert codec.decompress(two, progress=False, threads=2) == data


def test_threads_cut_a_known_size_into_equal_blocks():
    assert streaming.block_size_for(20_000_000, 2) == 10_000_000
    assert streaming.block_size_for(50 << 20, 2) == -(-(50 << 20) // 4)
    assert streaming.block_size_for(None, 2) == streaming.DEFAULT_BLOCK_SIZE
    assert streaming.block_size_for(123, 1, 7) == 7
    with pytest.raises(ValueError, match="block size"):
        streaming.block_size_for(1, 1, 0)


def test_layout_records_and_trailer():
    data = text(2500)
    blob = codec.compress(data, SMALL, store=True, progress=False, block_size=1000)
    header, blocks, trailer = blocks_of(blob)
    assert header.block_size == 1000 and [b.length for b, _ in blocks] == [1000, 1000, 500]
    assert container.unpack_trailer(trailer) == (len(data), __import__("zlib").crc32(data))


def test_incompressible_blocks_are_stored_each():
    data = os.urandom(3000)
    blob = codec.compress(data, SMALL, store=True, progress=False, block_size=1000)
    header, blocks, _ = blocks_of(blob)
    assert all(b.stored and p == data[i * 1000:(i + 1) * 1000] for i, (b, p) in enumerate(blocks))
    overhead = len(blob) - len(data)
    assert overhead == len(container.pack_stream_header(header)) + 3 * container.BLOCK_RECORD_SIZE \
        + container.TRAILER_SIZE
    assert codec.decompress(blob) == data


def forge(blob, index, claim=None, payload=None):
    """``blob`` with block ``index`` replaced: its record claims ``claim`` bytes, its payload ``payload``
    (the record's checksum made valid, so that only the block's CRC can catch it)."""
    header, blocks, trailer = blocks_of(blob)
    out = [container.pack_stream_header(header)]
    for i, (block, data) in enumerate(blocks):
        if i == index:
            data = payload if payload is not None else data
            block = container.Block(claim or block.length, block.flags & container.FLAG_WORD_CODES, len(data),
                                    block.crc32)
        out += [container.pack_block(block), data]
    return b"".join(out + [trailer])


def test_a_bomb_stops_at_its_first_bad_block(monkeypatch):
    """A block claiming the whole block size from a few garbage bytes: decoded once, refused, nothing after it."""
    data = text(4000)
    blob = forge(codec.compress(data, SMALL, store=True, progress=False, block_size=1000), 1,
                 claim=1000, payload=b"\x55" * 8)
    calls = []
    real = blocks.decode_block
    monkeypatch.setattr(blocks, "decode_block", lambda *a: calls.append(a[4]) or real(*a))
    got = []
    with pytest.raises(ValueError, match="block at original bytes 1000..2000: CRC-32 mismatch"):
        for piece in streaming.iter_decompress(streaming.bytes_source(blob).take, progress=False):
            got.append(piece)
    assert got == [data[:1000]] and len(calls) == 2  # the good block, the bad one, nothing after


def test_a_bomb_is_refused_with_threads_too():
    data = text(4000)
    blob = forge(codec.compress(data, SMALL, store=True, progress=False, block_size=1000), 2,
                 payload=b"\xaa" * 5)
    with pytest.raises(ValueError, match="CRC-32 mismatch"):
        codec.decompress(blob, progress=False, threads=2)


def test_a_block_cannot_claim_more_than_the_block_size():
    blob = codec.compress(text(3000), SMALL, store=True, progress=False, block_size=1000)
    record = struct.pack("<IBII", 1001, 0, 8, 0)
    with pytest.raises(ValueError, match="outside 1..1000"):
        container.unpack_block(record + struct.pack("<I", __import__("zlib").crc32(record)), 1000)
    header, blocks, trailer = blocks_of(blob)
    cut = len(container.pack_stream_header(header))
    bad = bytearray(blob)
    bad[cut] ^= 1  # the first record's length: its checksum fails
    with pytest.raises(ValueError, match="record checksum"):
        codec.decompress(bytes(bad))


def test_max_output_refuses_before_the_block_that_passes_it(monkeypatch):
    data = text(3000)
    blob = codec.compress(data, SMALL, store=True, progress=False, block_size=1000)
    calls = []
    real = blocks.decode_block
    monkeypatch.setattr(blocks, "decode_block", lambda *a: calls.append(1) or real(*a))
    with pytest.raises(ValueError, match="limit of 1500"):
        codec.decompress(blob, max_output=1500)
    assert len(calls) == 1
    assert codec.decompress(blob, max_output=3000) == data


def test_lost_reordered_truncated_or_extended_files_are_refused():
    data = text(3000)
    blob = codec.compress(data, SMALL, store=True, progress=False, block_size=1000)
    header, blocks, trailer = blocks_of(blob)
    head = container.pack_stream_header(header)
    pieces = [container.pack_block(b) + p for b, p in blocks]
    for order in ([0, 2, 1], [0, 1]):
        with pytest.raises(ValueError, match="trailer's length and CRC-32 disagree"):
            codec.decompress(head + b"".join(pieces[i] for i in order) + trailer)
    for cut in range(0, len(blob), 37):
        with pytest.raises(ValueError):
            codec.decompress(blob[:cut])
    with pytest.raises(ValueError, match="trailing data"):
        codec.decompress(blob + b"x")


def test_tables_are_sized_to_the_input_and_recorded():
    for spec, small, big in (("ngram", "ngram:v=1,order=6,mem=10", "ngram:v=1,order=6,mem=20"),
                             ("cm:mem=22", "cm:v=7,mem=12", "cm:v=7,mem=22")):
        header = container.unpack(codec.compress(b"hello\n", spec, progress=False))[0]
        assert header.spec == small
    predictor = codec.encoder_for("ngram", "cpu", None, "fused", 1_000_000)
    assert predictor.spec == "ngram:v=1,order=6,mem=20"  # capped by mem, whatever the input
    assert codec.encoder_for("ngram:mem=12", "cpu", None, "fused", 10**6).spec == "ngram:v=1,order=6,mem=12"
    assert codec.encoder_for("cm:mem=22", "cpu", None, "fused", 3000).spec == "cm:v=7,mem=21"


def test_the_decoder_allocates_what_the_header_records(monkeypatch):
    blob = codec.compress(text(300), "ngram", progress=False)
    built = []
    real = blocks.make_predictor
    monkeypatch.setattr(blocks, "make_predictor", lambda spec, **kw: built.append(spec) or real(spec, **kw))
    assert codec.decompress(blob) == text(300)
    assert built == ["ngram:v=1,order=6,mem=15"]


def test_block_files_are_sized_to_the_block():
    blob = codec.compress(text(3000), "ngram", store=True, progress=False, block_size=1000)
    assert container.unpack_stream_header(blob)[0].spec == "ngram:v=1,order=6,mem=16"


def test_cli_streams_blocks_with_threads(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(streaming, "DEFAULT_BLOCK_SIZE", 1000)
    path = tmp_path / "f.txt"
    data = text(4500)
    path.write_bytes(data)
    assert cli.main(["-T", "2", "-k", "-1", str(path)]) == 0
    packed = (tmp_path / "f.txt.lmc").read_bytes()
    assert packed[4] == container.BLOCKS_VERSION
    assert cli.main(["info", "--json", str(tmp_path / "f.txt.lmc")]) == 0
    out = capsys.readouterr().out
    assert '"original_length": 4500' in out and '"format_version": 8' in out
    assert cli.main(["-t", "-T", "2", str(tmp_path / "f.txt.lmc")]) == 0
    path.unlink()
    assert cli.main(["-d", str(tmp_path / "f.txt.lmc")]) == 0
    assert path.read_bytes() == data


def test_cli_max_output_refuses_a_block_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(streaming, "DEFAULT_BLOCK_SIZE", 1000)
    path = tmp_path / "f.txt"
    path.write_bytes(text(3000))
    assert cli.main(["-k", "-1", str(path)]) == 0
    path.unlink()
    assert cli.main(["-d", "--max-output", "2k", str(tmp_path / "f.txt.lmc")]) == 1
    assert "limit of 2000" in capsys.readouterr().err
    assert not path.exists() and not list(tmp_path.glob(".f.txt.*"))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_damaged_block_files_raise_value_error_or_decode_right(data):
    """Whatever bytes change, the API raises ValueError or returns the original (never another error)."""
    original = text(2600, seed=3)
    blob = bytearray(codec.compress(original, SMALL, store=True, progress=False, block_size=1000))
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    try:
        assert codec.decompress(bytes(blob), progress=False) == original
    except ValueError:
        pass


def test_info_and_list_read_a_block_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "f.txt"
    path.write_bytes(text(3000))
    packed = tmp_path / "f.txt.lmc"
    packed.write_bytes(codec.compress(path.read_bytes(), SMALL, store=True, progress=False, block_size=1000))
    assert cli.main(["info", str(packed)]) == 0
    out = capsys.readouterr().out
    assert "format version:   8" in out and "3000 bytes" in out
    assert cli.main(["-l", str(packed)]) == 0
    assert f"{packed.stat().st_size:>14} {3000:>14}" in capsys.readouterr().out
    packed.write_bytes(packed.read_bytes()[:-1])
    assert cli.main(["info", str(packed)]) == 1
    assert "trailer" in capsys.readouterr().err


@pytest.mark.parametrize("threads", [1, 2])
def test_a_short_last_block_uses_the_tables_the_header_records(threads):
    """Tables are sized to the block size, recorded once: a short last block must not get smaller ones."""
    data = text(1100)
    blob = codec.compress(data, "ngram", store=False, progress=False, block_size=1000, threads=threads)
    assert container.unpack_stream_header(blob)[0].spec == "ngram:v=1,order=6,mem=16"
    assert blob == codec.compress(data, "ngram", progress=False, block_size=1000)
    for _ in range(3):  # whichever worker gets the short block first
        assert codec.decompress(blob, progress=False, threads=threads) == data
        assert codec.compress(data, "ngram", progress=False, block_size=1000, threads=threads) == blob
