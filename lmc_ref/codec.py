"""The codec: ``compress`` / ``decompress``, the whole product in two functions.

A predictor plus the arithmetic coder, wrapped in the ``.lmc`` container:
``lmc_ref.blocks`` codes one block (the paper's predictive loop, readable or
fused), ``lmc_ref.streaming`` cuts larger inputs into independent blocks and
codes several at once, and these two functions run it on bytes in memory.

Two guards make it a compressor to trust with any input:

* ``compress(..., store=True)`` writes a *stored* block (``container.FLAG_STORED``:
  the original bytes, uncoded) when coding would not make the data smaller,
  so incompressible input grows by the header only (as gzip, xz and zstd
  store incompressible blocks).  The default, ``store=False``, always codes:
  evaluation measures what the model's code costs, which a stored file would hide.
* ``decompress`` refuses, before building the model or allocating the output,
  a header that claims more bytes than ``max_output`` or than its payload can
  code (``blocks.max_decodable_length``), and raises ``ValueError`` for every
  kind of bad input, whatever a loader or decoder underneath raised.

The readable loop and the block functions are reachable from here too
(``codec.encode_readable``, ``codec.decode_readable``, ...).  The classical
compressors it is measured against live in ``lmc_ref.baselines``.
"""

from .blocks import (  # noqa: F401  (the loop and block functions, public through codec too)
    decode_block,
    decode_readable,
    decoder_for,
    encode_block,
    encode_readable,
    encoder_for,
    max_decodable_length,
    min_bits_per_symbol,
)
from .levels import DEFAULT_SPEC
from .streaming import bytes_source, iter_compress, iter_decompress


def compress(data, spec=DEFAULT_SPEC, path="fused", progress="auto", backend="cpu", model_dirs=None,
             store=False, block_size=None, threads=1):
    """Compress ``data`` (bytes-like) with the predictor named by ``spec``; return ``.lmc`` bytes.

    ``store=True``: if the coded payload would not be smaller than ``data``
    (per block), write it stored instead (the original bytes; the header still
    names the predictor that was tried).  ``lmc-ref`` always asks for it.

    ``backend`` picks the numeric backend (``cpu``, or ``cuda`` for the
    transformer on a GPU); the file records it and decoding uses the same one.
    ``progress`` is the bar policy of ``lmc_ref.progress``: True, False, or
    "auto" (on a terminal, for inputs over 4 MiB); ``decompress`` takes the same.
    ``model_dirs``: folders searched first for a model named by hash
    (``transformer:model=HASH``); the header records the model's hash, not a path.
    ``block_size``: original bytes per independent block (default
    ``streaming.DEFAULT_BLOCK_SIZE``; an input that fits in one is a format-7 file);
    ``threads``: blocks coded at once (see ``iter_compress``).
    """
    data = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    return b"".join(iter_compress(bytes_source(data).take, spec, path, progress, backend, model_dirs, store,
                                  block_size, threads, size=len(data)))


def decompress(blob, path="fused", progress="auto", backend=None, model_dirs=None, max_output=None, threads=1):
    """Decode a ``.lmc`` file's bytes, verify length and CRC-32, and return the original bytes.

    The file's header names the backend to decode on; ``backend``, if given,
    must agree with it (floats on another backend round differently).
    Trained weights are found by the header's model hash, never by a path:
    in the folders ``model_dirs`` (searched first), ``LMC_REF_MODELS`` and the
    user model store (``lmc_ref.models``).  ``max_output``: refuse, before
    decoding, a file that would decode to more than this many bytes (a block
    file: before the block that would pass it).  ``threads``: blocks of a
    format-8 file decoded at once.

    Raises:
        ValueError: for every bad input -- the file is not a valid ``.lmc``
            file, claims more output than ``max_output`` or than its payload
            can code, names a predictor or backend this installation cannot
            rebuild, or fails its checksum.  Whatever a model loader or decoder
            underneath raises for a bad file is re-raised as ``ValueError``.
    """
    blob = memoryview(blob).cast("B") if not isinstance(blob, bytes) else blob
    return b"".join(iter_decompress(bytes_source(blob).take, path, progress, backend, model_dirs, max_output,
                                    threads))
