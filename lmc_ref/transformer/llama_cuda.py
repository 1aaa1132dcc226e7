"""GPU coding with a Llama-family model: the host driver of ``llama_cuda_kernels`` on numba.cuda.

The ``llm:`` predictor's ``cuda`` backend (``lmc-ref compress --backend cuda``).
The division of labour is the byte transformer's (``infer_cuda``):

* **The GPU runs the model.**  ``_Lane.launch`` runs one position of every
  chunk in flight: the rows of one step are the live chunks, each in its own
  slot of a device KV cache, and the matrix products of the step read every
  weight once for all of them (``llama_cuda_kernels.matmul_kernel``).  The
  float32 logits over the whole vocabulary come back to the host.
* **The host codes.**  It turns each row's logits into a pdf with the CPU
  backend's own functions (``llama_cpu.row_pdf``: ``exp(logits - max)``),
  quantizes with ``lmc_ref.quantize`` -- still the only place floats become
  integers -- and runs the arithmetic coders, groups in parallel.  The chunks
  in flight form two *lanes* of whole groups that take turns, so the host codes
  one lane's step while the GPU computes the other's (``CudaLlama._lockstep``).

The payload is the CPU backend's: chunks form groups of ``group`` chunks, each
group one stream with its chunks' symbols interleaved step by step
(``llama_cpu.encode_group``).  The GPU simply has many groups in flight at
once (``batch`` chunks), all in lockstep.

Encoder and decoder compute bit-identical logits because they run the *same*
launches: the encoder does not run a prefill over whole chunks (whose
reductions would have other shapes) but the decoder's step loop with the
tokens it already knows.  Within a step a row's logits depend on its token,
position and cache only (see ``llama_cuda_kernels``), so neither the batch
size nor the other chunks in flight change a chunk's bits, which the tests
check.  The CPU backend rounds differently, so a file records backend
``cuda`` and decodes only there (``lmc_ref.blocks`` refuses the other way).

Tests run everything on the CPU in the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``
set before numba is imported; ``tests/test_llama_cuda.py``).
"""

import numpy as np
from numba import cuda, njit, prange

from ..coder import D_SIZE, decode_interval, decoder_init, decoder_target, encoder_finish, encoder_init, \
    max_stream_bytes
from ..quantize import quantize_search
from . import llama_cuda_kernels as K
from .llama import head_dim, rope_angles
from .llama_cpu import _BYTE_UNITS, _encode_lockstep, _intervals, _pdf_rows, model_inputs

#: Most chunks in flight by default: the two lanes' matrix products then have
#: half as many rows each.  Every chunk holds a KV cache slot (SmolLM2-135M:
#: 46 KB per position), so the default is also capped by the GPU's free memory.
MAX_DEFAULT_BATCH = 512
#: Positions a decoder's cache holds at first; it doubles when a chunk needs more.
FIRST_CAPACITY = 512


def _unpack(wp, n_out):
    """The ``[n_in, n_out]`` matrix that ``matmul_tiles.pack`` packed into ``wp`` ``[tiles, n_in, TILE]``."""
    return np.ascontiguousarray(wp.transpose(1, 0, 2).reshape(wp.shape[1], -1)[:, :n_out])


def check_config(config):
    """Raise ``ValueError`` if the kernels cannot run a model of ``config``."""
    hd = head_dim(config)
    if hd > K.THREADS or K.THREADS % hd:
        raise ValueError(f"the Llama CUDA kernels need a head size dividing {K.THREADS}, not {hd}")


# ------------------------------------------------------------- host coding ----

# --8<-- [start:decode_step]
@njit(parallel=True, cache=True)
def _decode_step(logits, row_start, dst, payload, starts, vocab, escape, out):
    """Decode one symbol for each row: group ``g``'s live chunks are rows ``row_start[g]..row_start[g+1]-1``
    (in chunk order) and its stream is ``payload[starts[g]:starts[g+1]]``.

    The pdfs are computed for all rows in parallel, then each group decodes
    its rows in order from its own stream, groups in parallel.  An escape
    token is followed by a byte under a uniform code (``llama_cpu``).
    """
    pdfs = _pdf_rows(logits)
    for g in prange(row_start.shape[0] - 1):
        stream = payload[starts[g]:starts[g + 1]]
        st = dst[g]
        for r in range(row_start[g], row_start[g + 1]):
            s, lo, hi = quantize_search(pdfs[r], decoder_target(st))
            decode_interval(st, stream, lo, hi)
            if s == escape:
                b = decoder_target(st) // _BYTE_UNITS
                decode_interval(st, stream, b * _BYTE_UNITS, (b + 1) * _BYTE_UNITS)
                s = vocab + b
            out[r] = s
# --8<-- [end:decode_step]


@njit(cache=True)
def _init_decoders(payload, starts, dst):
    for g in range(dst.shape[0]):
        dst[g, :] = decoder_init(payload[starts[g]:starts[g + 1]])


class CudaLlama:
    """A Llama-family model on the GPU, coding groups of chunks many at a time.

    Args:
        weights: the CPU backend's packed weights (``llama_cpu.pack_weights``); they
            are unpacked to ``[in, out]`` matrices and copied to the device.
        config: the model's config (``llama``).
        batch: chunks in flight at once (whole groups; at least one group).  Default: as many
            as half the free GPU memory holds at 1,024 positions each, at most ``MAX_DEFAULT_BATCH``.
    """

    def __init__(self, weights, config, batch=None):
        if not cuda.is_available():
            raise ValueError("the cuda backend needs a CUDA GPU (numba.cuda.is_available() is False)")
        check_config(config)
        self.config = config
        L, d, f, V = config["n_layers"], config["d_model"], config["d_ff"], config["vocab"]
        self.n_heads, self.n_kv, self.hd = config["n_heads"], config["n_kv_heads"], head_dim(config)
        kv = self.n_kv * self.hd
        embed, out, attn_norm, wqkv, wo, ffn_norm, wgu, wd, out_norm = weights
        self.embed_t = cuda.to_device(_unpack(embed, V))  # [d, V]
        self.out = self.embed_t if out is embed else cuda.to_device(_unpack(out, V))  # [d, V]
        self.layers = [tuple(cuda.to_device(a) for a in (
            attn_norm[i],  # [d]
            _unpack(wqkv[i], d + 2 * kv),  # [d, q | k | v]
            _unpack(wo[i], d),  # [d, d]
            ffn_norm[i],  # [d]
            _unpack(wgu[i], 2 * f),  # [d, gate | up]
            _unpack(wd[i], d),  # [f, d]
        )) for i in range(L)]
        self.out_norm = cuda.to_device(out_norm)  # [d]
        self.batch = batch or self._default_batch()

    def _default_batch(self):
        c = self.config
        per_chunk = 4 * (2 * c["n_layers"] * self.n_kv * self.hd * 1024 + 2 * c["vocab"])  # caches, logits
        try:
            free, _ = cuda.current_context().get_memory_info()
        except Exception:  # the simulator has no memory info
            free = 1 << 30
        return int(max(1, min(MAX_DEFAULT_BATCH, free // 2 // per_chunk)))

    def _angles(self, capacity):
        return tuple(cuda.to_device(a) for a in rope_angles(self.config, capacity))

    # --8<-- [start:lockstep]
    @staticmethod
    def _lockstep(lanes, rows_at, code):
        """Run the steps of one or two lanes, the host coding one lane while the GPU computes the other.

        ``rows_at(i, t)``: ``(tokens, slots)`` of lane ``i``'s rows at step ``t``
        (none: the lane is done, and stays done); ``code(i, t, logits)`` codes
        them (which tells ``rows_at`` the tokens of step ``t + 1``).  A lane's
        steps stay in order and are coded in order, so the overlap changes when
        things happen, never what is computed.
        """
        def launch(i, t):
            tokens, slots = rows_at(i, t)
            if len(tokens):
                lanes[i].launch(tokens, t, slots)
            return len(tokens) > 0

        first, second, t = launch(0, 0), len(lanes) == 2, 0
        while first or second:
            second = second and launch(1, t)  # runs on the GPU while the host codes the first lane
            if first:
                code(0, t, lanes[0].wait())
                first = launch(0, t + 1)  # runs while the host codes the second lane
            if second:
                code(1, t, lanes[1].wait())
            t += 1
    # --8<-- [end:lockstep]

    def _split(self, sizes):
        """Lanes of whole groups: the groups of ``sizes`` chunks cut into two runs of about equal chunks
        (one run for a single group): ``[(first group, end group)]``."""
        if len(sizes) < 2:
            return [(0, len(sizes))]
        ends = np.cumsum(sizes)
        cut = min(len(sizes) - 1, max(1, int(np.searchsorted(ends, ends[-1] / 2)) + 1))
        return [(0, cut), (cut, len(sizes))]

    def logits(self, chunks, bos):
        """Logits ``[B, T, V]`` of each chunk's positions (input: ``bos`` then the chunk's tokens but
        the last), all chunks in lockstep in one lane (for tests)."""
        n = max((len(c) for c in chunks), default=0)
        lane = _Lane(self, len(chunks), max(1, n), *self._angles(max(1, n)))
        out = np.zeros((len(chunks), n, self.config["vocab"]), np.float32)
        inputs = [np.concatenate([[bos], np.asarray(c, np.int64)[:-1]]) for c in chunks]
        for t in range(n):
            live = np.array([c for c in range(len(chunks)) if len(chunks[c]) > t], np.int64)
            lane.launch(np.array([inputs[c][t] for c in live]), t, live)
            out[live, t] = lane.wait()
        return out

    # ------------------------------------------------------------ batches ---
    def _batches(self, sizes):
        """Split groups of ``sizes`` chunks into runs of whole groups of at most ``batch`` chunks
        (at least one group each): ``[(first group, end group)]``."""
        out, start, n = [], 0, 0
        for g, size in enumerate(sizes):
            if n and n + size > self.batch:
                out.append((start, g))
                start, n = g, 0
            n += size
        if start < len(sizes):
            out.append((start, len(sizes)))
        return out

    # --------------------------------------------------------------- coding ---
    def encode_groups(self, groups, bos, escape, progress=None):
        """Code each group (a list of symbol arrays, as for ``llama_cpu.encode_group``) into one stream.

        Returns ``(streams, ideal bits)``; ``progress(k)`` is told when ``k`` more groups are done.
        """
        streams, bits = [], 0.0
        for g0, g1 in self._batches([len(gr) for gr in groups]):
            s, b = self._encode_batch(groups[g0:g1], bos, escape)
            streams += s
            bits += b
            if progress is not None:
                progress(g1 - g0)
        return streams, bits

    def _encode_batch(self, groups, bos, escape):
        """The streams of ``groups``, all in flight: the decoder's steps, with the tokens known."""
        vocab = self.config["vocab"]
        chunks = [np.asarray(c, np.int64) for gr in groups for c in gr]
        for c in chunks:
            if len(c) and (int(c.min()) < 0 or int(c.max()) >= vocab + 256 or np.any(c == escape)):
                raise ValueError(f"symbols must lie in [0, {vocab + 256}) and never be the escape token {escape}")
        lengths = np.array([len(c) for c in chunks], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        n = int(starts[-1])
        pairs = [model_inputs(c, vocab, bos, escape) for c in chunks]
        inputs = np.concatenate([p[0] for p in pairs] + [np.zeros(0, np.int64)])
        targets = np.concatenate([p[1] for p in pairs] + [np.zeros(0, np.int64)]).astype(np.int64)
        escaped = np.concatenate([np.where(c >= vocab, c - vocab, -1) for c in chunks] + [np.zeros(0, np.int64)])
        lo, hi, bits = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n)
        first = np.concatenate([[0], np.cumsum([len(gr) for gr in groups])])  # group -> its first chunk
        spans = [(int(first[g0]), int(first[g1])) for g0, g1 in self._split([len(gr) for gr in groups])]
        capacity = max(1, int(lengths.max(initial=1)))
        cos, sin = self._angles(capacity)
        lanes = [_Lane(self, c1 - c0, capacity, cos, sin) for c0, c1 in spans]
        at = [None] * len(lanes)  # each lane's rows of the step in flight: indices into the symbol arrays

        def rows_at(i, t):
            c0, c1 = spans[i]
            live = np.flatnonzero(lengths[c0:c1] > t)
            at[i] = starts[c0 + live] + t
            return inputs[at[i]], live

        def code(i, t, logits):
            k = len(at[i])
            lo_, hi_, bits_ = np.empty(k, np.int64), np.empty(k, np.int64), np.empty(k)
            _intervals(logits, targets[at[i]], lo_, hi_, bits_)
            lo[at[i]], hi[at[i]], bits[at[i]] = lo_, hi_, bits_

        self._lockstep(lanes, rows_at, code)
        streams = []
        for g in range(len(groups)):
            c0, c1 = int(first[g]), int(first[g + 1])
            a, b = int(starts[c0]), int(starts[c1])
            est = encoder_init()
            out = np.zeros(max_stream_bytes(2 * (b - a) + 1), np.uint8)
            _encode_lockstep(lo[a:b], hi[a:b], starts[c0:c1] - a, lengths[c0:c1], escaped[a:b], est, out)
            streams.append(out[:encoder_finish(est, out)].tobytes())
        return streams, float(bits.sum() + 8 * np.count_nonzero(escaped >= 0))

    def decode_groups(self, streams, sizes, finished, bos, escape, max_symbols, progress=None):
        """Inverse of ``encode_groups``: for group ``g`` of ``sizes[g]`` chunks, a list of symbol arrays.

        ``finished(g, c, symbol)`` is told every decoded symbol of chunk ``c`` of
        group ``g`` and says whether that chunk is complete; a chunk that reaches
        ``max_symbols`` without finishing is corrupt.
        """
        out = []
        for g0, g1 in self._batches(sizes):
            out += self._decode_batch(streams[g0:g1], sizes[g0:g1],
                                      lambda g, c, s, g0=g0: finished(g0 + g, c, s), bos, escape, max_symbols)
            if progress is not None:
                progress(g1 - g0)
        return out

    def _decode_batch(self, streams, sizes, finished, bos, escape, max_symbols):
        """The symbols of ``streams`` (groups of ``sizes`` chunks), all in flight."""
        vocab = self.config["vocab"]
        payload = np.frombuffer(b"".join(streams), np.uint8)
        starts = np.concatenate([[0], np.cumsum([len(s) for s in streams])]).astype(np.int64)
        dst = np.zeros((len(streams), D_SIZE), np.uint64)
        _init_decoders(payload, starts, dst)
        cos, sin = self._angles(max_symbols)
        spans = self._split(sizes)
        owners = [[(g, c) for g in range(g0, g1) for c in range(sizes[g])] for g0, g1 in spans]  # slot -> chunk
        lanes = [_Lane(self, len(o), min(max_symbols, FIRST_CAPACITY), cos, sin) for o in owners]
        symbols = [[[] for _ in o] for o in owners]
        last = [np.full(len(o), bos, np.int64) for o in owners]
        live = [np.arange(len(o)) for o in owners]  # each lane's live slots, in (group, chunk) order

        def rows_at(i, t):
            if not len(live[i]):
                return live[i], live[i]
            if t == max_symbols:
                raise ValueError(f"a chunk does not end within {max_symbols} symbols (corrupt payload)")
            if t == lanes[i].capacity:
                lanes[i].grow(min(max_symbols, 2 * t))
            return last[i][live[i]], live[i]

        def code(i, t, logits):
            g0, g1 = spans[i]
            groups = np.array([owners[i][s][0] for s in live[i]], np.int64)
            row_start = np.searchsorted(groups, np.arange(g0, g1 + 1)).astype(np.int64)
            got = np.empty(len(live[i]), np.int64)
            _decode_step(logits, row_start, dst[g0:g1], payload, starts[g0:g1 + 1], vocab, escape, got)
            still = []
            for s, sym in zip(live[i].tolist(), got.tolist()):
                symbols[i][s].append(sym)
                last[i][s] = escape if sym >= vocab else sym
                if not finished(*owners[i][s], sym):
                    still.append(s)
            live[i] = np.array(still, np.int64)

        self._lockstep(lanes, rows_at, code)
        out = []
        for i, (g0, g1) in enumerate(spans):
            k = 0
            for g in range(g0, g1):
                out.append([np.array(symbols[i][k + c], np.int64) for c in range(sizes[g])])
                k += sizes[g]
        return out


class _Lane:
    """Some chunks on their own CUDA stream: KV caches, work buffers, the logits' host buffer.

    ``launch`` queues one step of the model for some of the lane's chunks
    (tokens up, the kernels, logits down) and returns at once; ``wait`` waits
    for it and returns the logits.  Slots are the lane's own, ``0..n-1``.
    """

    def __init__(self, model, n, capacity, cos, sin):
        c = model.config
        d, f, V = c["d_model"], c["d_ff"], c["vocab"]
        kv = model.n_kv * model.hd
        self.m, self.n, self.cos, self.sin = model, n, cos, sin
        self.stream = cuda.stream()
        self.capacity = capacity
        self.kc, self.vc = self._cache(capacity)
        self.x = cuda.device_array((n, d), np.float32)  # the residual stream
        self.h = cuda.device_array((n, d), np.float32)  # normalised
        self.qkv = cuda.device_array((n, d + 2 * kv), np.float32)  # [q | k | v]
        self.att = cuda.device_array((n, d), np.float32)  # attention output, all heads
        self.gu = cuda.device_array((n, 2 * f), np.float32)  # [gate | up]
        self.g = cuda.device_array((n, f), np.float32)  # SwiGLU
        self.scores = cuda.device_array((n, model.n_heads, capacity), np.float32)  # [R, H, T] attention
        self.logits_d = cuda.device_array((n, V), np.float32)
        self.logits_h = cuda.pinned_array((n, V), np.float32)
        self.io_h = cuda.pinned_array((3, n), np.int64)  # the rows' tokens, positions, slots
        self.io_d = cuda.device_array((3, n), np.int64)
        self.rows = 0

    def _cache(self, capacity):
        """Device caches, keys ``[n, L, KV, hd, T]`` and values ``[n, L, KV, T, hd]``, not zeroed:
        a row attends over positions ``0..pos`` only, all written before it reads them."""
        m = self.m
        L = m.config["n_layers"]
        return (cuda.device_array((self.n, L, m.n_kv, m.hd, capacity), np.float32, stream=self.stream),
                cuda.device_array((self.n, L, m.n_kv, capacity, m.hd), np.float32, stream=self.stream))

    def grow(self, capacity):
        """Room for ``capacity`` positions, the positions so far copied (on the device)."""
        S, L, KV, hd, T = self.kc.shape
        k2, v2 = self._cache(capacity)
        blocks, st = min(1024, -(-self.kc.size // K.THREADS)), self.stream
        K.copy_columns_kernel[blocks, K.THREADS, st](self.kc.reshape(S * L * KV * hd, T),
                                                     k2.reshape(S * L * KV * hd, capacity))
        K.copy_columns_kernel[blocks, K.THREADS, st](self.vc.reshape(S * L * KV, T * hd),
                                                     v2.reshape(S * L * KV, capacity * hd))
        self.kc, self.vc, self.capacity = k2, v2, capacity
        self.scores = cuda.device_array((self.n, self.m.n_heads, capacity), np.float32, stream=st)

    def _matmul(self, x, w, y, accumulate):
        grid = ((w.shape[1] + K.TILE_N - 1) // K.TILE_N, (x.shape[0] + K.TILE_M - 1) // K.TILE_M)
        K.matmul_kernel[grid, K.matmul_threads(), self.stream](x, w, y, accumulate)

    # --8<-- [start:step]
    def launch(self, tokens, t, slots):
        """Queue position ``t`` of the chunks in ``slots`` (input ``tokens``): each row's key and value
        go into the caches before it attends; its float32 logits come back to ``logits_h``."""
        m, st, R = self.m, self.stream, len(tokens)
        T = K.THREADS  # read at launch: the simulator tests lower it
        self.rows = R
        x, h, qkv, att, gu, g = (a[:R] for a in (self.x, self.h, self.qkv, self.att, self.gu, self.g))
        self.io_h[0, :R], self.io_h[1, :R], self.io_h[2, :R] = tokens, t, slots  # the lane is idle: safe to write
        self.io_d.copy_to_device(self.io_h, stream=st)
        tok_d, pos_d, slot_d = self.io_d[0, :R], self.io_d[1, :R], self.io_d[2, :R]
        eps = float(m.config["rms_eps"])
        K.embed_kernel[R, T, st](m.embed_t, tok_d, x)
        for layer, (attn_norm, wqkv, wo, ffn_norm, wgu, wd) in enumerate(m.layers):
            K.rms_norm_kernel[R, T, st](x, attn_norm, eps, h)
            self._matmul(h, wqkv, qkv, False)
            K.rope_store_kernel[R, T, st](qkv, m.n_heads, m.hd, pos_d, slot_d, self.cos, self.sin, layer,
                                          self.kc, self.vc)
            K.attention_kernel[(R, m.n_heads), T, st](qkv, m.hd, pos_d, slot_d, layer, self.kc, self.vc,
                                                      self.scores[:R], att)
            self._matmul(att, wo, x, True)
            K.rms_norm_kernel[R, T, st](x, ffn_norm, eps, h)
            self._matmul(h, wgu, gu, False)
            K.swiglu_kernel[R, T, st](gu, g)
            self._matmul(g, wd, x, True)
        K.rms_norm_kernel[R, T, st](x, m.out_norm, eps, h)
        self._matmul(h, m.out, self.logits_d[:R], False)
        self.logits_d[:R].copy_to_host(self.logits_h[:R], stream=st)
    # --8<-- [end:step]

    def wait(self):
        """The logits ``[R, V]`` of the step last launched, once it is done."""
        self.stream.synchronize()
        return self.logits_h[:self.rows]
