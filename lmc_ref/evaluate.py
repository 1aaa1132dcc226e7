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
from .compressors import CLASSICAL, compress, decompress
from .predictors import make_predictor


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


def classical_rate(name, chunks, chunked=True, verify=True):
    """Rate of the classical compressor ``name`` (a key of ``CLASSICAL``) on ``chunks``.

    ``chunked``: each chunk compressed alone, header counted once; otherwise the
    concatenation is compressed as one stream.
    """
    comp = CLASSICAL[name]
    chunks = [bytes(c) for c in chunks]
    raw = sum(len(c) for c in chunks)
    pieces = chunks if chunked else [b"".join(chunks)]
    sizes = []
    for piece in pieces:
        packed = comp.compress(piece)
        if verify and comp.decompress(packed) != piece:
            raise AssertionError(f"{name} did not round-trip a {len(piece)}-byte input")
        sizes.append(len(packed))
    total = header_once(sizes, len(comp.compress(b"\x00"))) if chunked else sizes[0]
    return Rate(name, chunked, len(pieces), raw, total, verified=verify)


def predictive_rate(spec, chunks, chunked=True, verify=True, ideal=True):
    """Rate of an lmc_ref predictor on ``chunks``, each coded from an empty context.

    Counts each chunk's payload plus one ``.lmc`` header; decodes and compares
    every chunk when ``verify``; adds the float model's ideal length when the
    predictor can report it (``ideal_bits``).
    """
    predictor = make_predictor(spec)
    chunks = [bytes(c) for c in chunks]
    pieces = chunks if chunked else [b"".join(chunks)]
    payload_total = 0
    header_size = 0
    ideal_bits = 0.0 if ideal else None
    for piece in pieces:
        blob = compress(piece, spec, progress=False)
        _, payload = container.unpack(blob)
        payload_total += len(payload)
        header_size = len(blob) - len(payload)
        if verify and decompress(blob, progress=False) != piece:
            raise AssertionError(f"{spec} did not round-trip a {len(piece)}-byte input")
        if ideal_bits is not None:
            bits = ideal_code_length(predictor, piece)
            ideal_bits = None if bits is None else ideal_bits + bits
    return Rate(
        predictor.spec,
        chunked,
        len(pieces),
        sum(len(c) for c in chunks),
        payload_total + header_size,
        model_bytes=predictor.model_bytes,
        ideal_bits=ideal_bits,
        verified=verify,
    )


def ideal_code_length(predictor, data):
    """Sum of -log2 p(x_i | x_<i) under the predictor's float model, from an empty context.

    Uses the predictor's fast ``ideal_bits`` when it has one; otherwise the
    readable predict/update loop (slow, fine for small inputs).
    """
    fast = getattr(predictor, "ideal_bits", None)
    arr = np.frombuffer(bytes(data), dtype=np.uint8)
    if fast is not None:
        return fast(arr)
    predictor.reset()
    bits = 0.0
    for symbol in arr:
        pdf = predictor.predict()
        bits -= float(np.log2(pdf[symbol] / pdf.sum()))
        predictor.update(int(symbol))
    return bits
