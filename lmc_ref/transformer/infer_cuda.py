"""GPU inference for the transformer: the host driver that codes many chunks at once on numba.cuda.

The division of labour keeps the lossless contract simple:

* **The GPU runs the model.**  ``cuda_kernels.step_kernel`` is the CUDA twin of the CPU
  kernel ``infer_cpu._step``: for one position ``t`` of every chunk
  in a batch (one thread block per chunk) it reads the input token, appends
  this position's keys and values to the chunk's KV cache in device memory,
  attends over positions ``0..t`` and writes the 256 log-probabilities.
* **The host codes.**  The float32 log-probabilities come back to the CPU,
  where ``_code_position`` turns them into a pdf (``exp`` in float64, exactly
  as the CPU backend does), quantizes them with ``lmc_ref.quantize`` -- still
  the only place floats become integers -- and runs each chunk's own
  arithmetic coder, chunks in parallel (``prange``).  The batch runs as two
  halves that take turns, so the host codes one half while the GPU computes
  the other (``CudaTransformer._run``).

Encoder and decoder both run ``step_kernel`` one position at a time with the
same inputs, so they compute the same bits: every sum inside the kernel has a
fixed order (a thread's own loop, or a reduction tree whose shape is set by
``THREADS``, a constant of the file format), there are no atomics, and a
block never looks at another block's chunk, so batch size and GPU model do
not enter the result.  The encoder *could* run all positions at once, but
only through this same per-position kernel, so it simply runs the decoder's
loop with known tokens.

What is not promised: equality with the CPU backend.  The GPU's ``expf`` and
``tanhf`` and its reduction trees round differently from the CPU kernel's
sequential float64 sums, so a file records its backend (``cuda``) and the
CPU backend refuses to decode it (and the reverse).

Each 2048-byte chunk has its own arithmetic-code stream, so the chunks can be
decoded side by side: the payload is a table of stream lengths, then the
streams (``container.pack_chunk_streams``), as for the CPU backend.

Tests run these kernels on the CPU with the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1`` set before numba is imported; see
``tests/test_transformer_cuda.py``).
"""

import math

import numpy as np
from numba import cuda, njit, prange

from .. import container
from ..coder import (D_SIZE, E_SIZE, decode_interval, decoder_init, decoder_target, encode_interval,
                     encoder_finish, encoder_init)
from ..constants import CHUNK_SIZE
from ..quantize import quantize_interval, quantize_search
from . import cuda_kernels
from .cuda_kernels import T_MAX, check_config, pack_flat, step_kernel
from .infer_cpu import stream_capacity
from .model import VOCAB

#: Largest default batch (chunks coded together): two halves of 1,024 blocks, each
#: about what an H100 or H200 runs at once at 64 registers per thread.
MAX_DEFAULT_BATCH = 2048


# ------------------------------------------------------------- host coding ----

# --8<-- [start:code_position]
@njit(parallel=True, cache=True)
def _code_position(logp, t, lengths, hist, tokens, decode, est, ebuf, dst, payload, starts, bits):
    """Code position ``t`` of every chunk still that long, chunks in parallel.

    ``pdf = exp(logp)`` in float64 and ``quantize`` exactly as the CPU backend;
    the symbol (known when encoding, decoded otherwise) becomes the chunk's
    next input token.  ``bits[b]`` accumulates the ideal ``-log2 p``.
    """
    for b in prange(logp.shape[0]):
        if t >= lengths[b]:
            continue
        pdf = np.empty(VOCAB, np.float64)
        for j in range(VOCAB):
            pdf[j] = math.exp(np.float64(logp[b, j]))
        if decode:
            st = dst[b]
            symbol, lo, hi = quantize_search(pdf, decoder_target(st))
            decode_interval(st, payload[starts[b]:starts[b + 1]], lo, hi)
            hist[b, t] = symbol
        else:
            lo, hi = quantize_interval(pdf, np.int64(hist[b, t]))
            encode_interval(est[b], ebuf[b], lo, hi)
        bits[b] -= np.float64(logp[b, hist[b, t]]) / math.log(2.0)
        tokens[b] = hist[b, t]
# --8<-- [end:code_position]


@njit(cache=True)
def _init_states(n, payload, starts, est, dst):
    """Fresh encoder states, and decoder states at the start of each chunk's stream."""
    for b in range(n):
        est[b, :] = encoder_init()
        dst[b, :] = decoder_init(payload[starts[b]:starts[b + 1]])


@njit(cache=True)
def _finish_all(n, est, ebuf, sizes):
    for b in range(n):
        sizes[b] = encoder_finish(est[b], ebuf[b])


class CudaTransformer:
    """The model's weights on the GPU, coding lists of chunks in batches.

    Args:
        params, config: weights and configuration (as for ``TransformerPredictor``).
        batch: chunks coded together (default: as many as fit in a quarter of free GPU memory,
            at most ``MAX_DEFAULT_BATCH``).  The batch runs as two halves that take turns
            with the host, so each half should fill the GPU on its own: about 1,000 blocks
            of this kernel fit at once on an H100 or H200.
    """

    def __init__(self, params, config, batch=None):
        cfg = check_config(config)
        if not cuda.is_available():
            raise ValueError("the cuda backend needs a CUDA GPU (numba.cuda.is_available() is False)")
        self.cfg = cfg
        self.n_layers, self.n_heads = cfg["num_layers"], cfg["num_heads"]
        self.hd = cfg["d_model"] // cfg["num_heads"]
        flat, offs = pack_flat(params, cfg)
        self._w = cuda.to_device(flat)
        self._offs = cuda.to_device(offs)
        self.batch = batch or self._default_batch()

    def cache_bytes_per_chunk(self):
        return 2 * 4 * self.n_layers * self.cfg["d_model"] * T_MAX

    def _default_batch(self):
        try:
            free, _ = cuda.current_context().get_memory_info()
        except Exception:  # the simulator has no memory info
            free = 1 << 30
        return int(max(1, min(MAX_DEFAULT_BATCH, free // 4 // self.cache_bytes_per_chunk())))

    def _run(self, hist, lengths, decode, payload, starts, record=None):
        """Code one batch: ``hist [B, T_max]`` (filled in when decoding); returns (streams, bits).

        ``record [B, T, 256]``, if given, receives every position's log-probabilities.

        The batch is split into two halves that take turns: while the GPU
        computes position ``t`` for one half, the host codes the other half's
        previous position (each half has its own CUDA stream, caches and
        buffers).  A chunk's steps stay in order, so this changes when things
        happen, never what is computed.
        """
        n = hist.shape[0]
        est = np.zeros((n, E_SIZE), np.uint64)
        dst = np.zeros((n, D_SIZE), np.uint64)
        ebuf = np.zeros((n, stream_capacity() if not decode else 0), np.uint8)
        bits = np.zeros(n, np.float64)
        _init_states(n, payload, starts, est, dst)
        cut = [0, n] if n < 2 else [0, n // 2, n]
        halves = [_Half(self, lo, hi) for lo, hi in zip(cut[:-1], cut[1:])]

        def finish(half, t):
            """Wait for ``half``'s position ``t`` and code it (this writes the half's next tokens)."""
            half.stream.synchronize()
            lo, hi = half.lo, half.hi
            if record is not None:
                record[lo:hi, t] = half.logp
            _code_position(half.logp, t, lengths[lo:hi], hist[lo:hi], half.tokens, decode, est[lo:hi],
                           ebuf[lo:hi], dst[lo:hi], payload, starts[lo:hi + 1], bits[lo:hi])

        steps = int(lengths.max(initial=0))
        if steps:
            halves[0].launch(0)
        for t in range(steps):
            if len(halves) == 2:
                halves[1].launch(t)  # runs on the GPU while the host codes the first half
            finish(halves[0], t)
            if t + 1 < steps:
                halves[0].launch(t + 1)  # runs while the host codes the second half
            if len(halves) == 2:
                finish(halves[1], t)
        if decode:
            return None, bits
        sizes = np.zeros(n, np.int64)
        _finish_all(n, est, ebuf, sizes)
        return [ebuf[b, :sizes[b]].tobytes() for b in range(n)], bits

    def encode_chunks(self, chunks, progress=None):
        """Arithmetic-code each chunk (≤ 2048 bytes) from an empty context; return (streams, ideal bits)."""
        streams, bits = [], []
        empty = np.zeros(0, np.uint8)
        for i in range(0, len(chunks), self.batch):
            group = chunks[i:i + self.batch]
            hist, lengths = _stack(group)
            s, b = self._run(hist, lengths, False, empty, np.zeros(len(group) + 1, np.int64))
            streams += s
            bits += list(b)
            if progress is not None:
                progress(int(lengths.sum()))
        return streams, bits

    def logprobs(self, chunks):
        """Log-probabilities ``[B, T, 256]`` of each chunk from an empty context (for tests)."""
        hist, lengths = _stack(chunks)
        record = np.zeros((len(chunks), int(lengths.max(initial=0)), VOCAB), np.float32)  # [B, T, 256]
        self._run(hist, lengths, False, np.zeros(0, np.uint8), np.zeros(len(chunks) + 1, np.int64), record)
        return record

    def decode_chunks(self, streams, lengths, progress=None):
        """Decode chunk ``i`` of ``lengths[i]`` bytes from ``streams[i]``; return the chunks."""
        out = []
        for i in range(0, len(streams), self.batch):
            group = streams[i:i + self.batch]
            lens = np.asarray(lengths[i:i + self.batch], np.int64)
            hist = np.zeros((len(group), T_MAX), np.uint8)
            starts = np.concatenate([[0], np.cumsum([len(s) for s in group])]).astype(np.int64)
            payload = np.frombuffer(b"".join(group), np.uint8)
            self._run(hist, lens, True, payload, starts)
            out += [hist[b, :lens[b]].tobytes() for b in range(len(group))]
            if progress is not None:
                progress(int(lens.sum()))
        return out


class _Half:
    """Chunks ``lo..hi-1`` of a batch on their own CUDA stream: KV caches, input tokens, output buffer."""

    def __init__(self, model, lo, hi):
        self.model, self.lo, self.hi = model, lo, hi
        n = hi - lo
        L, H, hd = model.n_layers, model.n_heads, model.hd
        self.stream = cuda.stream()
        self.kc = cuda.device_array(n * L * H * hd * T_MAX, np.float32)  # [n, L, H, hd, T] flat
        self.vc = cuda.device_array(n * L * H * T_MAX * hd, np.float32)  # [n, L, H, T, hd] flat
        self.tokens = cuda.pinned_array(n, np.int32)  # [n] input of the next position
        self.tokens[:] = 0
        self.tokens_d = cuda.device_array(n, np.int32)
        self.logp = cuda.pinned_array((n, VOCAB), np.float32)  # [n, 256]
        self.logp_d = cuda.device_array((n, VOCAB), np.float32)

    def launch(self, t):
        """Queue position ``t`` on this half's stream: tokens up, the step kernel, log-probabilities down."""
        m, st = self.model, self.stream
        self.tokens_d.copy_to_device(self.tokens, stream=st)
        # THREADS is read at launch, from its module: the simulator tests lower it.
        step_kernel[self.hi - self.lo, cuda_kernels.THREADS, st](m._w, m._offs, m.n_layers, m.n_heads, m.hd, t,
                                                     self.tokens_d, self.kc, self.vc, self.logp_d)
        self.logp_d.copy_to_host(self.logp, stream=st)


def _stack(chunks):
    """``[B, T_max]`` uint8 array of the chunks (zero-padded) and their lengths."""
    hist = np.zeros((len(chunks), T_MAX), np.uint8)
    lengths = np.zeros(len(chunks), np.int64)
    for b, chunk in enumerate(chunks):
        if len(chunk) > T_MAX:
            raise ValueError(f"chunk of {len(chunk)} bytes exceeds the context of {T_MAX}")
        hist[b, :len(chunk)] = np.frombuffer(bytes(chunk), np.uint8)
        lengths[b] = len(chunk)
    return hist, lengths


# ------------------------------------------------------------ file payload ----
# The payload layout (a stream-length table, then one stream per chunk) lives in
# ``lmc_ref.container``; the CPU backend of the transformer uses it too.

def chunk_lengths(length):
    """Lengths of the 2048-byte chunks (the last may be shorter) of ``length`` bytes."""
    return container.chunk_lengths(length, CHUNK_SIZE)


pack_streams = container.pack_chunk_streams


def unpack_streams(payload, length):
    """Split a payload for ``length`` original bytes into its per-chunk streams (validated)."""
    return container.unpack_chunk_streams(payload, length, CHUNK_SIZE, stream_capacity())
