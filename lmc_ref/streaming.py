"""Streaming in blocks: any input in bounded memory, and several blocks coded at once.

Inputs larger than one block (``DEFAULT_BLOCK_SIZE``, or ``block_size=``) are
coded as independent blocks in a format-8 file (``container``):
``iter_compress`` / ``iter_decompress`` read a block at a time and yield the
output as it is made, so memory stays at the model's tables plus a few
blocks, whatever the input's size; ``threads=N`` codes N blocks at once in N
processes (``xz -T`` style).  Each block starts from a fresh model: carrying
the adaptive state across blocks would save what a restart costs, but blocks
could then be neither coded side by side nor decoded alone.  What a restart
costs, measured on ``enwik8_head`` (1,071,051 bytes), whole file vs. the
same file cut into independent blocks (``codec.compress(data, spec, store=True, block_size=N)``)::

    block size   ngram (order 6, mem 20)      cm:mem=22
    whole file   25.500 %                     20.934 %
    512 KiB      26.522 %  (+4.0 %)           22.237 %  (+6.2 %)
    256 KiB      27.528 %  (+8.0 %)           23.499 %  (+12.3 %)
    128 KiB      28.653 %  (+12.4 %)          24.892 %  (+18.9 %)

A restart costs about 11 KB (ngram) to 14 KB (cm) of output on text, what
the model pays to learn again; with 16 MiB blocks that is under 0.5 % of a
block's output, the price of bounded memory and of ``-T``.  So blocks restart.

An input that fits in one block is written in format 7, one coded payload,
exactly as before format 8 existed.
"""

import zlib

from . import blocks, container
from .levels import DEFAULT_SPEC
from .predictors import parse_spec, predictor_class
from .progress import close, progress_bar, tick

#: Original bytes per block of a format-8 file: an input up to this size is one
#: format-7 file; a larger one is cut into blocks of this size.
DEFAULT_BLOCK_SIZE = 16 << 20


# ------------------------------------------------------------- reading ---

class _Source:
    """``read(n)`` of a file or buffer, taken in exact amounts, with bytes read too far put back."""

    def __init__(self, read):
        self._read = read
        self._back = b""

    def take(self, n):
        """Exactly ``n`` bytes, or fewer at the end of the input."""
        parts, have = [], 0
        if self._back:
            parts.append(self._back[:n])
            have = len(parts[0])
            self._back = self._back[have:]
        while have < n:
            piece = self._read(n - have)
            if not piece:
                break
            parts.append(piece)
            have += len(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def unread(self, data):
        self._back = bytes(data) + self._back


def bytes_source(data):
    """A ``_Source`` over a bytes-like object."""
    view = memoryview(data).cast("B")
    pos = 0

    def read(n):
        nonlocal pos
        piece = view[pos:pos + n].tobytes()
        pos += len(piece)
        return piece

    return _Source(read)


# ------------------------------------------------------ blocks in parallel ---

_WORKER_MODELS = {}  # in a worker process: the predictor of each (direction, spec, ...) it has built


def _worker_model(key, build):
    if key not in _WORKER_MODELS:
        _WORKER_MODELS.clear()  # one model at a time: a worker's memory is one model's tables
        _WORKER_MODELS[key] = build()
    return _WORKER_MODELS[key]


def _encode_job(spec, backend, path, store, data):
    """In a worker: code one block with the canonical ``spec`` (its tables already sized to the block size:
    sized again to a short last block, they would differ from what the header records)."""
    predictor = _worker_model(("encode", spec, backend, path), lambda: blocks.encoder_for(spec, backend, None, path))
    return blocks.encode_block(predictor, data, path, None, store)


def _decode_job(spec, model_hash, backend, path, flags, payload, length, crc):
    """In a worker: decode one block and check its CRC-32; ValueError if it fails."""
    if flags & container.FLAG_STORED:
        return payload
    try:
        cls = predictor_class(parse_spec(spec)[0])
        codes, coded_length, payload = blocks.checked_capacity(cls, flags, payload, length, spec)
        predictor = _worker_model(("decode", spec, model_hash, backend, path),
                                  lambda: blocks.decoder_for(spec, model_hash, backend, None, path))
        out = blocks.decode_block(predictor, codes, payload, coded_length, length, path, None)
    except Exception as exc:
        raise blocks.as_value_error(exc, length) from None
    if zlib.crc32(out) != crc:
        raise ValueError("CRC-32 mismatch")
    return out


def _worker_init():
    """A worker leaves signals to its parent: Ctrl-C is ignored (the parent stops the pool), SIGTERM
    and SIGHUP end it at once (``safe_io.signals_interrupt``'s handler is the parent's business)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)


def _in_order(function, jobs, threads):
    """``function(*job)`` for each job, run by ``threads`` processes, yielded in the jobs' order.

    At most ``2 * threads`` jobs are in flight, so memory holds a few blocks
    whatever the input's size.  The workers are forked from this process (the
    modules it imported come with them); a job's arguments and result are
    plain bytes, strings and numbers.  If the caller stops early (an error, a
    bad block, Ctrl-C, SIGTERM), the workers are terminated, not waited for.
    """
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=threads, mp_context=multiprocessing.get_context("fork"),
                               initializer=_worker_init)
    pending = deque()
    finished = False
    try:
        for job in jobs:
            pending.append(pool.submit(function, *job))
            if len(pending) >= 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
        finished = True
    finally:
        if not finished:  # a worker may be in the middle of a block: stop it rather than wait
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def parallel_ok(cls, backend):
    """Whether blocks of predictor class ``cls`` on ``backend`` may be coded in worker processes:
    adaptive models on the CPU (a model file or a GPU is loaded once, in this process)."""
    return not cls.needs_model_file and backend == "cpu"


def block_size_for(size, threads, block_size=None):
    """The block size to cut an input of ``size`` bytes (None: unknown) into.

    ``block_size`` if given; otherwise ``DEFAULT_BLOCK_SIZE``, except that with
    ``threads`` > 1 and a known size, the blocks are made equal and a multiple
    of ``threads`` in number (so every worker codes as much as the others).
    """
    if block_size is not None:
        if not 1 <= block_size <= container.MAX_BLOCK_SIZE:
            raise ValueError(f"block size {block_size} outside 1..{container.MAX_BLOCK_SIZE}")
        return block_size
    if threads > 1 and size:
        count = threads * -(-size // (threads * DEFAULT_BLOCK_SIZE))
        return max(1, -(-size // count))
    return DEFAULT_BLOCK_SIZE


# -------------------------------------------------------------- compress ---

def iter_compress(read, spec=DEFAULT_SPEC, path="fused", progress="auto", backend="cpu", model_dirs=None,
                  store=False, block_size=None, threads=1, size=None):
    """Compress the input that ``read(n)`` returns, yielding the ``.lmc`` file's bytes as they are made.

    An input that fits in one block is one format-7 file (as ``compress`` has
    always written); a larger one a format-8 file of independent blocks, read
    a block at a time, ``threads`` of them coded at once in worker processes
    (adaptive models on the CPU; others code one block at a time).  ``size``:
    the input's size if known (a regular file's), for the progress bar and
    for blocks of equal size with ``threads`` > 1.  Other arguments as ``compress``.
    """
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, not {threads!r}")
    block_size = block_size_for(size, threads, block_size)
    source = _Source(read)
    first = source.take(block_size)
    more = source.take(1) if len(first) == block_size else b""
    predictor = blocks.encoder_for(spec, backend, model_dirs, path, block_size if more else len(first))
    bar = progress_bar(size if size is not None else (None if more else len(first)), progress, "compress")
    try:
        if not more:
            flags, payload = blocks.encode_block(predictor, first, path, tick(bar), store)
            yield container.pack_header(container.Header(
                spec=predictor.spec, backend=predictor.backend, length=len(first), crc32=zlib.crc32(first),
                model_hash=predictor.model_hash, flags=flags), len(payload))
            yield payload
            return
        source.unread(more)
        yield container.pack_stream_header(container.StreamHeader(
            spec=predictor.spec, backend=predictor.backend, block_size=block_size, model_hash=predictor.model_hash))

        def read_blocks():
            block = first
            while block:
                yield block
                block = source.take(block_size)

        sums, running = [], [0]  # (length, CRC-32) of each block read and not yet written; CRC of all read

        def remembered():
            for block in read_blocks():
                sums.append((len(block), zlib.crc32(block)))
                running[0] = zlib.crc32(block, running[0])
                yield block

        if threads > 1 and parallel_ok(type(predictor), predictor.backend):
            spec_, backend_ = predictor.spec, predictor.backend
            del predictor  # the workers build their own
            coded = _in_order(_encode_job, ((spec_, backend_, path, store, b) for b in remembered()), threads)
        else:
            coded = (blocks.encode_block(predictor, b, path, None, store) for b in remembered())
        total = 0
        for flags, payload in coded:
            length, block_crc = sums.pop(0)
            yield container.pack_block(container.Block(length, flags, len(payload), block_crc))
            yield payload
            total += length
            if bar is not None:
                bar.update(length)
        yield container.pack_trailer(total, running[0])
    finally:
        close(bar)


# ------------------------------------------------------------ decompress ---

def iter_decompress(read, path="fused", progress="auto", backend=None, model_dirs=None, max_output=None,
                    threads=1):
    """Decompress the ``.lmc`` file that ``read(n)`` returns, yielding the original bytes block by block.

    A format-8 file is read a block at a time: each block's record is checked
    before its payload is read, ``max_output`` before it is decoded, and its
    CRC-32 before the next block is; the first bad block raises ``ValueError``
    (the blocks before it have been yielded).  ``threads`` > 1 decodes that many
    blocks at once in worker processes.  A format-7 file is decoded whole, as
    ``decompress`` always has.  Arguments and errors as ``decompress``.
    """
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, not {threads!r}")
    source = _Source(read)
    head = source.take(container.MAX_HEADER_LENGTH)
    if container.version_of(head) == container.VERSION:
        header, start, payload_len = container.unpack_header(head)
        blocks.check_limits(header.length, max_output, backend, header.backend)
        rest = source.take(payload_len - (len(head) - start) + 1) if payload_len >= len(head) - start else b""
        yield blocks.decompress_whole(head + rest, path, progress, model_dirs)
        return
    header, start = container.unpack_stream_header(head)
    source.unread(head[start:])
    blocks.check_limits(0, max_output, backend, header.backend)
    yield from _decode_blocks(source, header, path, progress, model_dirs, max_output, threads)


def _records(source, header, max_output):
    """``(Block, payload)`` of each block of a format-8 file, checked; then ``(None, (total, CRC))``."""
    total = 0
    while True:
        first = source.take(4)
        if first == b"\0\0\0\0":
            trailer = container.unpack_trailer(first + source.take(container.TRAILER_SIZE - 4))
            if source.take(1):
                raise ValueError("trailing data after the .lmc trailer")
            yield None, trailer
            return
        if len(first) < 4:
            raise ValueError("truncated .lmc file: ends before its trailer")
        block = container.unpack_block(first + source.take(container.BLOCK_RECORD_SIZE - 4), header.block_size)
        total += block.length
        if max_output is not None and total > max_output:
            raise ValueError(f"would decode to more than the limit of {max_output} bytes (--max-output)")
        if total > container.MAX_ORIGINAL_LENGTH:
            raise ValueError(f"the blocks claim more than the format limit of {container.MAX_ORIGINAL_LENGTH} bytes")
        payload = source.take(block.payload_length)
        if len(payload) < block.payload_length:
            raise ValueError("truncated .lmc file: ends inside a block's payload")
        yield block, payload


def _decode_blocks(source, header, path, progress, model_dirs, max_output, threads):
    """The original bytes of a format-8 file's blocks, in order, each checked (see ``iter_decompress``)."""
    model = {}  # the predictor class and (built at the first coded block) the predictor

    def model_class():
        if "cls" not in model:
            model["cls"] = predictor_class(parse_spec(header.spec)[0])
        return model["cls"]

    def decode_here(block, payload):
        if block.stored:
            return payload
        try:
            codes, coded_length, coded = blocks.checked_capacity(model_class(), block.flags, payload, block.length,
                                                           header.spec)
            if "predictor" not in model:
                model["predictor"] = blocks.decoder_for(header.spec, header.model_hash, header.backend, model_dirs, path)
            return blocks.decode_block(model["predictor"], codes, coded, coded_length, block.length, path, None)
        except Exception as exc:
            raise blocks.as_value_error(exc, block.length) from None

    order, ends = [], []  # records of the blocks handed out and not yet checked; the trailer's (total, CRC)

    def taken():
        for block, payload in _records(source, header, max_output):
            if block is None:
                ends.append(payload)
                return
            order.append(block)
            yield block, payload

    if threads > 1 and parallel_ok(model_class(), header.backend):
        outputs = _in_order(_decode_job, ((header.spec, header.model_hash, header.backend, path, b.flags, p,
                                           b.length, b.crc32) for b, p in taken()), threads)
    else:
        outputs = (decode_here(b, p) for b, p in taken())
    bar = progress_bar(None, progress, "decompress")
    total, crc = 0, 0
    try:
        while True:
            try:
                out = next(outputs)
            except StopIteration:
                break
            except ValueError as exc:
                raise ValueError(f"{_where(order, total)}: {exc}") from None
            block = order.pop(0)
            if len(out) != block.length or zlib.crc32(out) != block.crc32:
                raise ValueError(f"{_where([block], total)}: CRC-32 mismatch: the payload is corrupt "
                                 "(decoded data differs from the original)")
            yield out
            total += len(out)
            crc = zlib.crc32(out, crc)
            if bar is not None:
                bar.update(len(out))
    finally:
        close(bar)
        outputs.close()
    if not ends or ends[0] != (total, crc):
        raise ValueError("the trailer's length and CRC-32 disagree with the blocks (blocks lost or reordered)")


def _where(order, total):
    """Names the block that starts at original byte ``total``."""
    if not order:
        return f"after original byte {total}"
    return f"the block at original bytes {total}..{total + order[0].length}"
