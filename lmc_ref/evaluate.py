"""Evaluation: compression rates measured the way the paper measures them, verified by decoding.

The paper's Table 1 codes each modality in independent 2048-byte chunks
(``chunked``) and, for classical compressors, also as one whole stream.  Two
conventions of the paper's code are kept because its figures depend on them:

* **Header counted once.**  A classical compressor run on ``n`` chunks pays its
  container header ``n`` times; the paper subtracts ``(n - 1)`` headers,
  estimated as the size of compressing a single zero byte
  (``len(compress(b"\\x00"))``).  ``header_once`` is that arithmetic.  Our own
  predictive compressors are treated alike: each chunk's arithmetic-coded
  payload is counted, plus one ``.lmc`` header for the whole set.
* **Adjusted rate.**  A decoder needs the model too, so the *adjusted* rate adds
  the model's size to the compressed size: 2 bytes per parameter for neural
  models (the paper's rule), the stored table bytes for pretrained count
  models, and nothing for purely adaptive ones (``Predictor.model_bytes``).

Differences from the paper, stated where they matter: every figure here comes
from bytes that were decoded and compared (``verify=True`` by default), and our
models see all 256 byte values (the paper's language models masked text to 7
bits and rescaled the size).
"""

from dataclasses import dataclass

import numpy as np

from . import container
from .constants import CHUNK_SIZE
from .baselines import CLASSICAL
from .codec import compress, decompress
from .predictors import make_predictor, parse_spec, predictor_class
from .progress import close, progress_bar, tick


@dataclass(frozen=True)
class Rate:
    """One row of a rate table: what was compressed, how, and how big it got."""

    compressor: str
    chunked: bool
    n_chunks: int
    raw_bytes: int
    compressed_bytes: int  # under the protocol above (header once)
    model_bytes: int = 0  # added by the adjusted rate
    ideal_bits: float | None = None  # sum of -log2 p under the float model, where known
    verified: bool = False  # every chunk decoded back to the original bytes

    @property
    def rate(self):
        """Compressed size over raw size, in percent (the paper's raw rate)."""
        return 100.0 * self.compressed_bytes / self.raw_bytes

    @property
    def adjusted_rate(self):
        """(compressed size + model size) over raw size, in percent."""
        return 100.0 * (self.compressed_bytes + self.model_bytes) / self.raw_bytes

    @property
    def ideal_rate(self):
        """The float model's ideal code length over raw size, in percent (None if unknown)."""
        return None if self.ideal_bits is None else 100.0 * self.ideal_bits / 8 / self.raw_bytes


# --8<-- [start:header_once]
def header_once(sizes, header_size):
    """Total size of ``n`` separately compressed chunks with the header counted once:
    ``sum(sizes) - (n - 1) * header_size`` (the paper's arithmetic)."""
    sizes = list(sizes)
    return sum(sizes) - max(len(sizes) - 1, 0) * header_size
# --8<-- [end:header_once]


def _measure(name, chunks, verify, ideal):
    """Per-chunk sizes for one compressor: ``(sizes, header_size, ideal_bits or None)``.

    ``name`` is a key of ``CLASSICAL`` or a predictor spec.  For predictors a
    size is the chunk's arithmetic-coded payload and ``header_size`` the
    ``.lmc`` header; for classical compressors ``header_size`` is the paper's
    estimate ``len(compress(b"\x00"))``.  Runs in worker processes.
    """
    sizes = []
    if name in CLASSICAL:
        comp = CLASSICAL[name]
        for chunk in chunks:
            packed = comp.compress(chunk)
            if verify and comp.decompress(packed) != chunk:
                raise AssertionError(f"{name} did not round-trip a {len(chunk)}-byte input")
            sizes.append(len(packed))
        return sizes, len(comp.compress(b"\x00")), None
    predictor = make_predictor(name)
    header_size = 0
    bits = 0.0 if ideal else None
    for chunk in chunks:
        blob = compress(chunk, name, progress=False)
        _, payload = container.unpack(blob)
        sizes.append(len(payload))
        header_size = len(blob) - len(payload)
        if verify and decompress(blob, progress=False) != chunk:
            raise AssertionError(f"{name} did not round-trip a {len(chunk)}-byte input")
        if bits is not None:
            chunk_bits = ideal_code_length(predictor, chunk)
            bits = None if chunk_bits is None else bits + chunk_bits
    return sizes, header_size, bits


def _measure_job(job):
    return _measure(*job)


def _codes_chunk_streams(spec):
    return predictor_class(parse_spec(spec)[0]).chunk_streams > 0


def _evaluate_batched(name, chunks, chunked, verify, backend, progress=False):
    """``evaluate`` for a predictor that codes each chunk as its own stream (the transformer).

    All chunks are coded side by side in this process (threads on the CPU,
    thread blocks on a GPU), and the ideal code length comes from the same
    pass.  A chunk's size is what ``compress(chunk, backend=backend)`` would
    store as payload: its stream plus its 4-byte entry in the stream table.
    """
    predictor = make_predictor(name)
    predictor.use_backend(backend)
    pieces = chunks if chunked else [b"".join(chunks)]
    if any(len(p) > CHUNK_SIZE for p in pieces):  # whole-data rows: the ordinary file path
        blobs = [compress(p, name, progress=False, backend=backend) for p in pieces]
        sizes = [len(container.unpack(b)[1]) for b in blobs]
        if verify and any(decompress(b, progress=False) != p for b, p in zip(blobs, pieces)):
            raise AssertionError(f"{name} did not round-trip on {backend}")
        bits = None
    else:
        bar = progress_bar((1 + verify) * sum(map(len, pieces)), progress, name[:40], threshold=0)
        streams, chunk_bits = predictor.encode_chunks(pieces, tick(bar))
        decoded = predictor.decode_chunks(streams, [len(p) for p in pieces], tick(bar)) if verify else None
        close(bar)
        if verify and decoded.tobytes() != b"".join(pieces):
            raise AssertionError(f"{name} did not round-trip on {backend}")
        sizes, bits = container.chunk_stream_sizes(streams), float(sum(chunk_bits))
    header_size = len(compress(b"", name, progress=False, backend=backend))  # an empty file is its header
    return Rate(predictor.spec, chunked, len(pieces), sum(len(c) for c in chunks), sum(sizes) + header_size,
                model_bytes=predictor.model_bytes, ideal_bits=bits, verified=verify)


def evaluate(name, chunks, chunked=True, verify=True, ideal=True, workers=1, progress=False, backend="cpu"):
    """The rate of compressor ``name`` (a ``CLASSICAL`` key or a predictor spec) on ``chunks``.

    ``chunked``: each chunk coded alone (predictors from an empty context), the
    header counted once; otherwise the concatenation as one stream.  Chunks are
    spread over ``workers`` processes; every chunk is decoded and compared
    unless ``verify`` is false.  ``backend="cuda"`` codes a predictor's chunks
    side by side on the GPU (the transformer), in this process.  ``progress``:
    a bar on stderr, True, False or "auto" (on a terminal; ``lmc_ref.progress``).
    """
    chunks = [bytes(c) for c in chunks]
    if name not in CLASSICAL and (backend != "cpu" or _codes_chunk_streams(name)):
        return _evaluate_batched(name, chunks, chunked, verify, backend, progress)
    pieces = chunks if chunked else [b"".join(chunks)]
    batch = max(1, min(64, -(-len(pieces) // (4 * max(workers, 1)))))
    jobs = [(name, pieces[i : i + batch], verify, ideal) for i in range(0, len(pieces), batch)]
    bar = progress_bar(len(pieces), progress, name, unit="chunk", threshold=0)
    results = []
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            for result in pool.imap(_measure_job, jobs):
                results.append(result)
                if bar is not None:
                    bar.update(len(result[0]))
    else:
        for job in jobs:
            results.append(_measure_job(job))
            if bar is not None:
                bar.update(len(results[-1][0]))
    close(bar)
    sizes = [size for result in results for size in result[0]]
    header_size = results[0][1] if results else 0
    bits = [result[2] for result in results]
    ideal_bits = None if (not results or any(b is None for b in bits)) else float(sum(bits))
    if name in CLASSICAL:
        label, model_bytes = name, 0
        total = header_once(sizes, header_size) if chunked else sum(sizes)
    else:
        predictor = make_predictor(name)
        label, model_bytes = predictor.spec, predictor.model_bytes
        total = sum(sizes) + header_size  # every payload, one .lmc header
    return Rate(label, chunked, len(pieces), sum(len(c) for c in chunks), total,
                model_bytes=model_bytes, ideal_bits=ideal_bits, verified=verify)


def classical_rate(name, chunks, chunked=True, verify=True, workers=1):
    """``evaluate`` for a classical compressor (a key of ``CLASSICAL``)."""
    if name not in CLASSICAL:
        raise ValueError(f"unknown classical compressor {name!r}; available: {', '.join(CLASSICAL)}")
    return evaluate(name, chunks, chunked, verify, ideal=False, workers=workers)


def predictive_rate(spec, chunks, chunked=True, verify=True, ideal=True, workers=1):
    """``evaluate`` for an lmc_ref predictor spec, each chunk from an empty context."""
    return evaluate(make_predictor(spec).spec, chunks, chunked, verify, ideal, workers)


def ideal_code_length(predictor, data):
    """Sum of -log2 p(x_i | x_<i) under the predictor's float model, from an empty context.

    ``Predictor.ideal_bits``: a compiled loop where the predictor has one,
    otherwise the readable predict/update loop (slow, fine for small inputs).
    """
    return predictor.ideal_bits(np.frombuffer(bytes(data), dtype=np.uint8))
