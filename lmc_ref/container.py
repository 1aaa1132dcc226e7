"""The ``.lmc`` file format: a self-describing header followed by the coder's payload.

A decoder needs more than the payload: it must rebuild the *same* predictor
(spec string and, for trained models, the same weights), run it on the same
numeric backend, know how many symbols to decode, and be able to tell whether
the result is right.  The header records all of it::

    offset  size  field
    0       4     magic  b"\\x89LMC"   (the high byte catches 7-bit/text-mode damage, as PNG's does)
    4       1     format version (``VERSION``)
    5       1     flags: bit 0 = the payload starts with a word-code prefix (``word_codes``);
                  bit 1 = stored: the payload is the original bytes, uncoded; others 0
    6       2     S = length of the predictor spec, 1..1024            (little-endian)
    8       S     predictor spec, printable ASCII, e.g. "ngram:order=6,mem=20"
    .       1     H = length of the model hash: 0 (adaptive model) or 32 (SHA-256 of weights)
    .       H     model hash
    .       1     B = length of the backend name, 1..32
    .       B     numeric backend, ASCII identifier, e.g. "cpu"
    .       8     original length in bytes (<= MAX_ORIGINAL_LENGTH)
    .       4     CRC-32 of the original data
    .       8     payload length in bytes (must equal the bytes that follow the header)
    .       4     CRC-32 of every header byte above (any damage to the header is caught first)
    .       *     payload

Every field is checked, in order, before anything is allocated from it;
``unpack`` raises ``ValueError`` naming the first bad field.  ``unpack_header``
parses the header alone (at most ``MAX_HEADER_LENGTH`` bytes), so a tool that
only describes a file need not read its payload.

A *stored* file (flag bit 1) holds its original bytes as the payload: the
compressor writes one when coding would make the data larger (random or
already-compressed input), as gzip, xz and zstd store incompressible blocks.
The header still names the predictor that was tried, but decoding a stored
file needs no model.

Format 8 (``BLOCKS_VERSION``) holds the input as independently coded blocks,
so that a compressor can stream an input of any size in bounded memory and
code blocks side by side (``lmc-ref -T N``).  A file header, then block
records, each followed by its payload, then a trailer::

    file header
    0       4     magic  b"\x89LMC"
    4       1     format version 8
    5       1     flags: none defined yet, 0
    6       2     S, then S bytes of predictor spec    (as in format 7)
    .       1     H, then H bytes of model hash        (as in format 7)
    .       1     B, then B bytes of backend name      (as in format 7)
    .       4     block size: the most original bytes one block holds, 1..MAX_BLOCK_SIZE
    .       4     CRC-32 of every file-header byte above

    block record (BLOCK_RECORD_SIZE bytes), then its payload
    0       4     L = original bytes of this block, 1..block size (0 starts the trailer)
    4       1     flags: bit 0 word codes, bit 1 stored (as in format 7, for this block)
    5       4     P = payload bytes that follow (stored: P = L; coded: P <= max_block_payload(L))
    9       4     CRC-32 of the block's original bytes
    13      4     CRC-32 of the 13 bytes above

    trailer (TRAILER_SIZE bytes, the last of the file)
    0       4     0 (where a block record has L)
    4       8     total original length
    12      4     CRC-32 of all the original bytes
    16      4     CRC-32 of the 16 bytes above

Every record is checked before its payload is read, and a block's CRC
before the next block is decoded, so a damaged or forged file is refused at
its first bad block, having allocated one block.  The trailer lets a reader
that can seek (``lmc-ref info``) give the original length from the header and
the last 20 bytes alone.  A compressor writes format 7 for an input that fits
in one block (as before format 8 existed) and format 8 for larger inputs.
"""

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"\x89LMC"
# The version of the file *layout* above.  It changes only when the fields or
# their meaning change, never for a model change: a predictor's model version
# is part of its spec (``cm:v=7,mem=22``, see ``lmc_ref.predictors.base``).
# Format 7 files written before the spec carried a model version decode as
# that predictor's ``unversioned`` model.  Older formats are refused, not
# misread: up to 7, this number also counted model changes, so their bits
# cannot be rebuilt.
#
# The stored flag (bit 1) came later than the rest of format 7 without a new
# version: the flag bits were reserved, and every reader refuses a flag it does
# not know ("unknown flags 0x02"), so an older lmc_ref refuses a stored file
# and never misreads it, while every file it could read reads as before.
VERSION = 7
MAX_SPEC_LENGTH = 1024
HASH_LENGTHS = (0, 32)
MAX_BACKEND_LENGTH = 32
#: Largest original size a header may claim (1 TiB): bounds every allocation.
MAX_ORIGINAL_LENGTH = 1 << 40
MAX_PAYLOAD_LENGTH = 1 << 40
FLAG_WORD_CODES = 1       # the payload starts with ``word_codes.pack``'s prefix
FLAG_STORED = 2           # the payload is the original bytes, uncoded
KNOWN_FLAGS = FLAG_WORD_CODES | FLAG_STORED
#: Format of block files (see the module docstring); every version here is read.
BLOCKS_VERSION = 8
READ_VERSIONS = (VERSION, BLOCKS_VERSION)
#: Largest block a format-8 header may declare (bounds what decoding one block allocates).
MAX_BLOCK_SIZE = 1 << 30
BLOCK_RECORD_SIZE = 17
TRAILER_SIZE = 20
#: The longest header the layout allows: magic .. header checksum with the longest spec, hash and backend.
MAX_HEADER_LENGTH = 4 + 4 + MAX_SPEC_LENGTH + 1 + 32 + 1 + MAX_BACKEND_LENGTH + 8 + 4 + 8 + 4


@dataclass(frozen=True)
class Header:
    """Everything a decoder must know besides the payload."""

    spec: str
    backend: str
    length: int
    crc32: int
    model_hash: bytes = b""
    version: int = VERSION
    flags: int = 0

    def validate(self):
        """Raise ``ValueError`` if any field is out of range (used by pack and unpack)."""
        if self.version != VERSION:
            raise ValueError(f"unsupported format version {self.version} (this lmc_ref reads {VERSION})")
        spec = self.spec.encode("ascii", "replace")
        if not 1 <= len(spec) <= MAX_SPEC_LENGTH or not self.spec.isascii() or not self.spec.isprintable():
            raise ValueError("predictor spec must be 1..1024 printable ASCII characters")
        if len(self.model_hash) not in HASH_LENGTHS:
            raise ValueError(f"model hash must be 0 or 32 bytes, not {len(self.model_hash)}")
        if not (1 <= len(self.backend) <= MAX_BACKEND_LENGTH and self.backend.isascii()
                and self.backend.replace("-", "").replace("_", "").isalnum()):
            raise ValueError(f"backend name {self.backend[:40]!r} is not an ASCII identifier of 1..32 characters")
        if not 0 <= self.length <= MAX_ORIGINAL_LENGTH:
            raise ValueError(f"original length {self.length} exceeds the format limit {MAX_ORIGINAL_LENGTH}")
        if not 0 <= self.crc32 < 1 << 32:
            raise ValueError("CRC-32 must be a 32-bit unsigned value")
        if not 0 <= self.flags <= 255 or self.flags & ~KNOWN_FLAGS:
            raise ValueError(f"unknown flags 0x{self.flags:02x}")
        if self.flags & FLAG_STORED and self.flags & FLAG_WORD_CODES:
            raise ValueError("flags 0x03: a stored payload has no word-code prefix")

    @property
    def stored(self):
        """True if the payload is the original bytes, uncoded."""
        return bool(self.flags & FLAG_STORED)


def pack(header, payload):
    """Serialise ``header`` and ``payload`` into the bytes of a ``.lmc`` file."""
    return pack_header(header, len(payload)) + bytes(payload)


def pack_header(header, payload_len):
    """The header bytes of a file whose payload is ``payload_len`` bytes (the payload follows them)."""
    header.validate()
    if header.stored and payload_len != header.length:
        raise ValueError(f"a stored payload holds the original {header.length} bytes, not {payload_len}")
    if payload_len > MAX_PAYLOAD_LENGTH:
        raise ValueError("payload too large for the format")
    spec = header.spec.encode("ascii")
    backend = header.backend.encode("ascii")
    head = b"".join([
        MAGIC,
        struct.pack("<BBH", header.version, header.flags, len(spec)),
        spec,
        struct.pack("<B", len(header.model_hash)),
        header.model_hash,
        struct.pack("<B", len(backend)),
        backend,
        struct.pack("<QIQ", header.length, header.crc32, payload_len),
    ])
    return head + struct.pack("<I", zlib.crc32(head))


class _Reader:
    """Bounds-checked reads from a buffer; names the field that ran out."""

    def __init__(self, blob):
        self.blob = blob
        self.pos = 0

    def take(self, n, field):
        if n > len(self.blob) - self.pos:
            raise ValueError(f"truncated .lmc file: ends inside the {field}")
        chunk = self.blob[self.pos : self.pos + n]
        self.pos += n
        return bytes(chunk)

    def unpack(self, fmt, field):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), field))


def _model_fields(r, spec_len):
    """The fields both header layouts share after the version: ``(spec, model hash, backend)`` as bytes."""
    if not 1 <= spec_len <= MAX_SPEC_LENGTH:
        raise ValueError(f"predictor spec length {spec_len} outside 1..{MAX_SPEC_LENGTH}")
    spec_raw = r.take(spec_len, "predictor spec")
    (hash_len,) = r.unpack("<B", "model hash length")
    if hash_len not in HASH_LENGTHS:
        raise ValueError(f"model hash length {hash_len} is neither 0 nor 32")
    model_hash = r.take(hash_len, "model hash")
    (backend_len,) = r.unpack("<B", "backend length")
    if not 1 <= backend_len <= MAX_BACKEND_LENGTH:
        raise ValueError(f"backend name length {backend_len} outside 1..{MAX_BACKEND_LENGTH}")
    backend_raw = r.take(backend_len, "backend name")
    return spec_raw, model_hash, backend_raw


def unpack_header(blob):
    """Parse and check the header at the start of ``blob``; return ``(Header, header_length, payload_length)``.

    ``blob`` need hold only the header (``MAX_HEADER_LENGTH`` bytes are always
    enough); the payload length is the header's claim, which ``unpack``
    checks against the bytes that follow.

    Raises:
        ValueError: naming the first field that is missing, damaged or out of range.
    """
    blob = memoryview(blob).cast("B") if not isinstance(blob, bytes) else blob
    r = _Reader(blob)
    if r.take(len(MAGIC), "magic number") != MAGIC:
        raise ValueError("not an .lmc file (bad magic number)")
    version, flags, spec_len = r.unpack("<BBH", "version field")
    if version == BLOCKS_VERSION:
        raise ValueError("format version 8 is the block format: read it with unpack_stream_header or codec.decompress")
    if version != VERSION:
        raise ValueError(f"unsupported .lmc format version {version} (this lmc_ref reads {READ_VERSIONS})")
    if flags & ~KNOWN_FLAGS:
        raise ValueError(f"unknown flags 0x{flags:02x} in header")
    spec_raw, model_hash, backend_raw = _model_fields(r, spec_len)
    length, crc, payload_len = r.unpack("<QIQ", "length fields")
    head_end = r.pos
    (head_crc,) = r.unpack("<I", "header checksum")
    if zlib.crc32(blob[:head_end]) != head_crc:
        raise ValueError("corrupt .lmc header (header checksum mismatch)")
    try:
        spec = spec_raw.decode("ascii")
        backend = backend_raw.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("predictor spec or backend name is not ASCII") from None
    header = Header(spec=spec, backend=backend, length=length, crc32=crc, model_hash=model_hash, version=version,
                    flags=flags)
    header.validate()
    if header.stored and payload_len != length:
        raise ValueError(f"stored file: the payload must hold the original {length} bytes, "
                         f"the header says {payload_len}")
    return header, r.pos, payload_len


def unpack(blob):
    """Parse and check a ``.lmc`` file; return ``(Header, payload)``.

    Raises:
        ValueError: naming the first field that is missing, damaged or out of range.
    """
    blob = memoryview(blob).cast("B") if not isinstance(blob, bytes) else blob
    header, start, payload_len = unpack_header(blob)
    if payload_len != len(blob) - start:
        raise ValueError(
            f"payload length mismatch: header says {payload_len} bytes, file holds {len(blob) - start}"
            " (truncated or trailing data)"
        )
    return header, bytes(blob[start:])


# ------------------------------------------------------------ format 8 ---

def version_of(blob):
    """The format version of the file starting with ``blob`` (at least 5 bytes); ValueError if not .lmc."""
    if len(blob) < len(MAGIC) + 1 or bytes(blob[: len(MAGIC)]) != MAGIC:
        raise ValueError("not an .lmc file (bad magic number)" if len(blob) >= len(MAGIC)
                         else "truncated .lmc file: ends inside the magic number")
    version = blob[len(MAGIC)]
    if version not in READ_VERSIONS:
        raise ValueError(f"unsupported .lmc format version {version} (this lmc_ref reads {READ_VERSIONS})")
    return version


@dataclass(frozen=True)
class StreamHeader:
    """The file header of a format-8 (block) file: the model and the block size."""

    spec: str
    backend: str
    block_size: int
    model_hash: bytes = b""
    version: int = BLOCKS_VERSION

    def validate(self):
        """Raise ``ValueError`` if any field is out of range (the model fields as ``Header`` checks them)."""
        Header(spec=self.spec, backend=self.backend, length=0, crc32=0, model_hash=self.model_hash).validate()
        if not 1 <= self.block_size <= MAX_BLOCK_SIZE:
            raise ValueError(f"block size {self.block_size} outside 1..{MAX_BLOCK_SIZE}")


def pack_stream_header(header):
    """The file-header bytes of a format-8 file."""
    header.validate()
    spec, backend = header.spec.encode("ascii"), header.backend.encode("ascii")
    head = b"".join([MAGIC, struct.pack("<BBH", BLOCKS_VERSION, 0, len(spec)), spec,
                     struct.pack("<B", len(header.model_hash)), header.model_hash,
                     struct.pack("<B", len(backend)), backend, struct.pack("<I", header.block_size)])
    return head + struct.pack("<I", zlib.crc32(head))


def unpack_stream_header(blob):
    """Parse and check a format-8 file header at the start of ``blob``; return ``(StreamHeader, length)``."""
    blob = memoryview(blob).cast("B") if not isinstance(blob, bytes) else blob
    r = _Reader(blob)
    if r.take(len(MAGIC), "magic number") != MAGIC:
        raise ValueError("not an .lmc file (bad magic number)")
    version, flags, spec_len = r.unpack("<BBH", "version field")
    if version != BLOCKS_VERSION:
        raise ValueError(f"format version {version} is not the block format {BLOCKS_VERSION}")
    if flags:
        raise ValueError(f"unknown flags 0x{flags:02x} in header")
    spec_raw, model_hash, backend_raw = _model_fields(r, spec_len)
    (block_size,) = r.unpack("<I", "block size")
    head_end = r.pos
    (head_crc,) = r.unpack("<I", "header checksum")
    if zlib.crc32(blob[:head_end]) != head_crc:
        raise ValueError("corrupt .lmc header (header checksum mismatch)")
    try:
        spec, backend = spec_raw.decode("ascii"), backend_raw.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("predictor spec or backend name is not ASCII") from None
    header = StreamHeader(spec=spec, backend=backend, block_size=block_size, model_hash=model_hash)
    header.validate()
    return header, r.pos


@dataclass(frozen=True)
class Block:
    """One block record: original length, flags, payload length, CRC-32 of the original bytes."""

    length: int
    flags: int
    payload_length: int
    crc32: int

    @property
    def stored(self):
        return bool(self.flags & FLAG_STORED)


def max_block_payload(length):
    """The most payload bytes a coded block of ``length`` original bytes may declare: more than any
    model codes it to (18 bits a byte at worst, the word-code prefix, stream tables), bounded all the same."""
    return 4 * length + (1 << 16)


def pack_block(block):
    """The record bytes of ``block`` (its payload follows them)."""
    if not 1 <= block.length <= MAX_BLOCK_SIZE:
        raise ValueError(f"block length {block.length} outside 1..{MAX_BLOCK_SIZE}")
    Header(spec="x", backend="cpu", length=block.length, crc32=block.crc32, flags=block.flags).validate()
    if block.stored and block.payload_length != block.length:
        raise ValueError("a stored block's payload is its original bytes")
    if not 0 <= block.payload_length <= max_block_payload(block.length):
        raise ValueError(f"block payload of {block.payload_length} bytes is beyond the format's bound")
    head = struct.pack("<IBII", block.length, block.flags, block.payload_length, block.crc32)
    return head + struct.pack("<I", zlib.crc32(head))


def unpack_block(record, block_size):
    """Parse and check a ``BLOCK_RECORD_SIZE``-byte block record of a file with ``block_size``."""
    if len(record) != BLOCK_RECORD_SIZE:
        raise ValueError("truncated .lmc file: ends inside a block record")
    length, flags, payload_length, crc = struct.unpack("<IBII", record[:13])
    if zlib.crc32(record[:13]) != struct.unpack("<I", record[13:])[0]:
        raise ValueError("corrupt block record (record checksum mismatch)")
    if not 1 <= length <= block_size:
        raise ValueError(f"a block claims {length} bytes, outside 1..{block_size} (the file's block size)")
    if flags & ~KNOWN_FLAGS or flags == FLAG_STORED | FLAG_WORD_CODES:
        raise ValueError(f"unknown block flags 0x{flags:02x}")
    if flags & FLAG_STORED and payload_length != length:
        raise ValueError(f"a stored block of {length} bytes declares a {payload_length}-byte payload")
    if payload_length > max_block_payload(length):
        raise ValueError(f"a {length}-byte block declares a {payload_length}-byte payload, beyond the bound")
    return Block(length, flags, payload_length, crc)


def pack_trailer(total_length, crc32):
    """The trailer bytes: total original length and CRC-32 of all the original bytes."""
    head = struct.pack("<IQI", 0, total_length, crc32)
    return head + struct.pack("<I", zlib.crc32(head))


def unpack_trailer(trailer):
    """``(total length, CRC-32)`` of a ``TRAILER_SIZE``-byte trailer; ValueError if it is damaged."""
    if len(trailer) != TRAILER_SIZE:
        raise ValueError("truncated .lmc file: ends inside the trailer")
    marker, total, crc = struct.unpack("<IQI", trailer[:16])
    if marker != 0 or zlib.crc32(trailer[:16]) != struct.unpack("<I", trailer[16:])[0]:
        raise ValueError("corrupt .lmc trailer (checksum mismatch)")
    if total > MAX_ORIGINAL_LENGTH:
        raise ValueError(f"original length {total} exceeds the format limit {MAX_ORIGINAL_LENGTH}")
    return total, crc


# --8<-- [start:chunk_streams]
# Payload layout of predictors whose context restarts every ``chunk`` bytes
# (the transformer): each chunk is its own arithmetic-code stream, so chunks
# can be encoded and decoded side by side (threads, or GPU blocks)::
#
#     n x uint32 little-endian   byte length of each chunk's stream, n = ceil(length / chunk)
#     the n streams, concatenated

def chunk_lengths(length, chunk):
    """Lengths of the ``chunk``-byte pieces of ``length`` bytes (the last may be shorter)."""
    return [min(chunk, length - i) for i in range(0, length, chunk)]


STREAM_ENTRY = struct.calcsize("<I")  # bytes of one entry of the stream table


def chunk_stream_sizes(streams):
    """Bytes each stream takes in a chunk-stream payload: its table entry plus the stream."""
    return [STREAM_ENTRY + len(s) for s in streams]


def pack_chunk_streams(streams):
    """The payload for a list of per-chunk streams: the length table, then the streams."""
    return b"".join(struct.pack("<I", len(s)) for s in streams) + b"".join(streams)


def unpack_chunk_streams(payload, length, chunk, capacity):
    """Split a per-chunk payload for ``length`` original bytes into its streams.

    ``capacity`` bounds one stream (what a full chunk can need); the table must
    fit, its entries must respect the bound and sum to the bytes that follow.
    """
    n = len(chunk_lengths(length, chunk))
    table = STREAM_ENTRY * n
    if len(payload) < table:
        raise ValueError(f"payload of {len(payload)} bytes is too short for the stream table of {n} chunks")
    sizes = struct.unpack(f"<{n}I", bytes(payload[:table]))
    if any(s > capacity for s in sizes):
        raise ValueError(f"a chunk stream claims more than the {capacity} bytes a {chunk}-byte chunk can need")
    if sum(sizes) != len(payload) - table:
        raise ValueError(f"stream table sums to {sum(sizes)} bytes but {len(payload) - table} follow it")
    streams, pos = [], table
    for s in sizes:
        streams.append(bytes(payload[pos : pos + s]))
        pos += s
    return streams
# --8<-- [end:chunk_streams]
