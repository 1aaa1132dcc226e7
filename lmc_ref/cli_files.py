"""What ``lmc-ref`` does to each FILE: compress, decompress, test, list, info.

``cli`` parses the arguments; this module carries them out, one file at a
time, through ``safe_io`` (complete writes, no clobbering, regular files
only).  A file's failure is one line on stderr and exit status 1; the other
files go on.  Only what codes data imports ``streaming`` and ``codec`` (and,
once a block is coded, NumPy and Numba): ``info`` and ``--list`` read headers
alone, ``container`` only.  Inputs are read, and outputs written, a block at
a time (``streaming``).
"""

import json
import os
import sys

from . import container, safe_io
from .safe_io import STDIO

SUFFIX = ".lmc"


def display(name):
    return "(stdin)" if name == STDIO else name


def report(name, exc):
    """Print ``lmc-ref: FILE: message`` on one line of stderr."""
    if isinstance(exc, OSError):
        message = exc.strerror or str(exc)
        if exc.filename is not None and exc.filename != name:
            message = f"{exc.filename}: {message}"
    elif isinstance(exc, MemoryError):
        message = "out of memory"
    else:
        message = str(exc)
    message = " ".join(message.split()) or type(exc).__name__
    print(f"lmc-ref: {display(name)}: {message}", file=sys.stderr)


def output_name(name, decompress, force):
    """Default output path: ``FILE.lmc`` when compressing, ``FILE`` minus ``.lmc`` when decompressing."""
    if decompress:
        if not name.endswith(SUFFIX) or os.path.basename(name) == SUFFIX:
            raise ValueError(f"name does not end in {SUFFIX}; use -o PATH or -c to choose the output")
        return name[: -len(SUFFIX)]
    if name.endswith(SUFFIX) and not force:
        raise ValueError(f"already has the {SUFFIX} suffix; use -f to compress it again")
    return name + SUFFIX


class _Counted:
    """The chunks of an output, counted as they pass (``n``: bytes so far; ``first``: the first chunk)."""

    def __init__(self, chunks):
        self.chunks, self.n, self.first = chunks, 0, None

    def __iter__(self):
        for chunk in self.chunks:
            if self.first is None:
                self.first = bytes(chunk)
            self.n += len(chunk)
            yield chunk


def code_one(name, args):
    """Compress, decompress or test one input as ``args`` say, a block at a time; raise ValueError/OSError
    on failure.  Output goes out as it is made: to a hidden temporary file that gets its name only once
    complete, or to standard output."""
    from . import streaming

    from_stdin = name == STDIO
    to_stdout = args.stdout or args.output == STDIO or (from_stdin and args.output is None)
    out_path = None
    if args.test:
        to_stdout = False
    elif not to_stdout:
        out_path = args.output or output_name(name, args.decompress, args.force)
        if os.path.lexists(out_path):
            if not from_stdin and os.path.exists(name) and os.path.samefile(name, out_path):
                raise ValueError(f"output {out_path} is the input file itself")
            if not args.force:
                raise ValueError(f"output {out_path} already exists; use -f to overwrite")
    elif not args.decompress and not args.force and safe_io.stdout_is_terminal():
        raise ValueError("refusing to write compressed data to a terminal; use -f to force")

    progress = "auto" if args.progress is None else args.progress
    threads = getattr(args, "threads", 1) or 1
    st, deletable = None, False
    with (safe_io.open_input(name, args.force) if not from_stdin else _nothing()) as inp:
        if inp is not None:
            st, deletable = inp.stat, inp.regular
            reader = os.fdopen(os.dup(inp.fd), "rb")
        else:
            reader = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin
        counted_in = _CountedReader(reader.read)
        if args.decompress:
            chunks = streaming.iter_decompress(counted_in.read, path=args.path, progress=progress, backend=args.backend,
                                           model_dirs=args.model_dirs, max_output=args.max_output, threads=threads)
        else:
            chunks = streaming.iter_compress(counted_in.read, spec=args.model, path=args.path, progress=progress,
                                         backend=args.backend or "cpu", model_dirs=args.model_dirs, store=args.store,
                                         threads=threads, size=st.st_size if deletable else None)
        out = _Counted(chunks)
        try:
            if args.test:
                for _ in out:
                    pass
            elif to_stdout:
                for chunk in out:
                    safe_io.write_stdout(chunk)
            else:
                safe_io.write_new_file(out_path, out, args.force, like=st)
        finally:
            if inp is not None:
                reader.close()
    if not args.decompress and not args.quiet:
        _store_hint(name, out.first, args)
    if args.test:
        if args.verbose:
            print(f"{display(name)}: OK ({out.n} bytes)", file=sys.stderr)
        return
    if args.verbose:
        coded, plain = (counted_in.n, out.n) if args.decompress else (out.n, counted_in.n)
        rate = f"{100 * coded / plain:.2f} %" if plain else "n/a"
        print(f"{display(name)}: {rate} ({counted_in.n} -> {out.n} bytes) -> "
              f"{'(stdout)' if to_stdout else out_path}", file=sys.stderr)
    if deletable and not (args.keep or to_stdout):
        os.unlink(name)


class _CountedReader:
    """``read(n)`` of an input, counting the bytes it returns."""

    def __init__(self, read):
        self._read, self.n = read, 0

    def read(self, size):
        piece = self._read(size)
        self.n += len(piece)
        return piece


class _nothing:
    """A context manager that gives None (standard input needs no opening)."""

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _store_hint(name, first, args):
    """After compressing with a model the store does not hold: one note on stderr saying how to keep it."""
    if not first:
        return
    if container.version_of(first) == container.VERSION:
        header = container.unpack_header(first)[0]
        if header.stored:  # a stored file decodes without its model
            return
    else:
        header = container.unpack_stream_header(first)[0]
    if not header.model_hash:
        return
    from . import models

    seen = getattr(args, "hinted", set())
    if header.model_hash in seen or models.findable(header.model_hash, model_dirs=args.model_dirs):
        return
    seen.add(header.model_hash)
    args.hinted = seen
    source = next(iter(models.remembered(header.model_hash)), "CKPT")
    print(f"lmc-ref: note: {display(name)}: the model (hash {header.model_hash.hex()[:16]}...) is not in the "
          f"model store; to decode the file after {source} moves, or elsewhere, run "
          f"`lmc-ref models add {source}` (or decompress with --model-dir DIR)", file=sys.stderr)


# ------------------------------------------------------------ headers only ---

def read_header(name):
    """``(Header, header bytes, file size)`` of ``.lmc`` file ``name``, reading the header only
    (and, of a format-8 block file, its 20-byte trailer, which holds the original length and CRC-32).

    A regular file's size comes from ``fstat``; standard input is read on to
    its end in pieces (bounded memory) to learn it.  Raises ValueError if the
    size disagrees with the header (format 7) or the trailer is damaged (format 8).
    """
    limit = container.MAX_HEADER_LENGTH
    if name == STDIO:
        head = safe_io.read_stdin(limit)
        tail, size = head[-container.TRAILER_SIZE:], len(head)
        while True:
            piece = safe_io.read_stdin(1 << 20)
            if not piece:
                break
            size += len(piece)
            tail = (tail + piece)[-container.TRAILER_SIZE:]
    else:
        with safe_io.open_input(name, force=False) as f:
            head = f.read(limit)
            size = f.stat.st_size
            tail = os.pread(f.fd, container.TRAILER_SIZE, max(0, size - container.TRAILER_SIZE))
    if container.version_of(head) == container.BLOCKS_VERSION:
        stream, start = container.unpack_stream_header(head)
        if size < start + container.TRAILER_SIZE:
            raise ValueError("truncated .lmc file: ends before its trailer")
        total, crc = container.unpack_trailer(tail)
        header = container.Header(spec=stream.spec, backend=stream.backend, length=total, crc32=crc,
                                  model_hash=stream.model_hash, version=stream.version)
        return header, start, size
    header, start, payload_len = container.unpack_header(head)
    if size - start != payload_len:
        raise ValueError(f"payload length mismatch: header says {payload_len} bytes, file holds "
                         f"{size - start} (truncated or trailing data)")
    return header, start, size


def header_fields(name, header, header_len, file_size):
    """The ``info`` fields of one file, as (key, value) pairs of plain values."""
    return {
        "file": display(name),
        "format_version": header.version,
        "predictor_spec": header.spec,
        "model_hash": header.model_hash.hex(),
        "backend": header.backend,
        "stored": header.stored,
        "original_length": header.length,
        "crc32": f"0x{header.crc32:08x}",
        "header_length": header_len,
        "payload_length": file_size - header_len,
        "file_length": file_size,
        "rate_percent": round(100 * file_size / header.length, 4) if header.length else None,
    }


def describe(fields):
    """The ``info`` text of one container, from ``header_fields``."""
    n = fields["original_length"]
    if n:
        rate = (f"{100 * fields['file_length'] / n:.2f} % ({8 * fields['file_length'] / n:.3f} bits/byte,"
                f" whole file incl. {fields['header_length']}-byte header)")
    else:
        rate = "n/a (empty original)"
    payload = f"{fields['payload_length']} bytes"
    if fields["stored"]:
        payload += " (stored: the original bytes, since coding them would not make them smaller)"
    rows = [
        ("file", fields["file"]),
        ("format version", fields["format_version"]),
        ("predictor spec", fields["predictor_spec"]),
        ("model hash", fields["model_hash"] or "(none: adaptive model)"),
        ("backend", fields["backend"]),
        ("original length", f"{n} bytes"),
        ("CRC-32", fields["crc32"]),
        ("payload length", payload if fields["format_version"] == container.VERSION
         else f"{fields['payload_length']} bytes in independently coded blocks, with their records and trailer"),
        ("compression rate", rate),
    ]
    return "\n".join(f"{key + ':':<18}{value}" for key, value in rows)


def model_file(header, model_dirs):
    """Where the file's model is found: a path, a not-found hint, or None for adaptive models."""
    if not header.model_hash or header.stored:
        return None
    from . import models
    from .predictors import parse_spec, predictor_class

    try:
        kind = getattr(predictor_class(parse_spec(header.spec)[0]), "model_kind", None)
        if kind is None:
            return None
        return str(models.find(header.model_hash, [kind], model_dirs).entry.path)
    except models.ModelNotFound:
        return "not found (add it with `lmc-ref models add FILE`, or give --model-dir DIR)"
    except ValueError:
        return None


def info_one(name, args, first):
    """``lmc-ref info FILE``: the header's fields, as text or (``--json``) one JSON object per line."""
    header, header_len, size = read_header(name)
    fields = header_fields(name, header, header_len, size)
    where = model_file(header, args.model_dirs)
    if args.json:
        print(json.dumps({**fields, "model_file": where}))
        return
    text = describe(fields)
    if where is not None:
        text += f"\n{'model file:':<18}{where}"
    print(("" if first else "\n") + text)


def list_files(names):
    """``lmc-ref -l FILE...``: compressed and original sizes, rate and name, like ``gzip -l``; returns status."""
    status, rows = 0, []
    for name in names:
        try:
            header, _, size = read_header(name)
        except (ValueError, OSError) as exc:
            report(name, exc)
            status = 1
            continue
        plain = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else display(name)
        rows.append((size, header.length, plain, header.stored))
    if rows:
        print(f"{'compressed':>14} {'uncompressed':>14} {'rate':>9}  uncompressed_name")
        for coded, length, plain, stored in rows:
            print(_list_row(coded, length, plain + (" (stored)" if stored else "")))
        if len(rows) > 1:
            print(_list_row(sum(r[0] for r in rows), sum(r[1] for r in rows), "(totals)"))
    return status


def _list_row(coded, length, name):
    rate = f"{100 * coded / length:.2f} %" if length else "n/a"
    return f"{coded:>14} {length:>14} {rate:>9}  {name}"


def run_files(args):
    """Run the parsed file command over every FILE; return 0, or 1 if any file failed."""
    if getattr(args, "list", False):
        return list_files(args.files)
    status = 0
    for i, name in enumerate(args.files):
        try:
            if args.command == "info":
                info_one(name, args, first=i == 0)
            else:
                code_one(name, args)
        except (ValueError, OSError, MemoryError) as exc:
            report(name, exc)
            status = 1
    return status
