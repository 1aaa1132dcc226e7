"""The trained byte transformer as a ``Predictor`` (``transformer:ckpt=PATH`` or ``transformer:model=HASH``).

The model itself lives in ``lmc_ref.transformer`` (configs and the readable
forward in ``model``, checkpoints in ``checkpoint``, the coding kernels in
``infer_cpu`` and ``infer_cuda``); this module only adapts it to the predictor
protocol and to the chunked payload layout.

The canonical spec carries no path (``transformer:v=1``): the ``.lmc`` header
records the weights' SHA-256, and decoding finds the weights by it
(``lmc_ref.models``: ``--model-dir`` folders, ``LMC_REF_MODELS``, the user model
store).  A path in a stored spec (files of format 7 carry ``ckpt=PATH``) is
ignored, never opened.
"""

import numpy as np

from .. import container, models
from ..constants import CHUNK_SIZE
from ..transformer import infer_cpu
from ..transformer.model import VOCAB, param_count
from .base import Predictor, register, reject_unknown


@register("transformer")
class TransformerPredictor(Predictor):
    """A trained checkpoint as a predictor (``transformer:ckpt=PATH`` or ``transformer:model=HASH``).

    The context restarts every ``CHUNK_SIZE`` (2048) bytes: each chunk is coded
    from an empty context, as in the paper, with the KV cache of the chunk so far.
    Probabilities come from the Numba kernel ``lmc_ref.transformer.infer_cpu.pdf_at``
    (no BLAS, no fast-math) on every path, so encoder and decoder agree exactly.
    """

    @classmethod
    def help_text(cls):
        return ("transformer:ckpt=PATH  the paper's byte transformer, weights from a checkpoint "
                "written by `lmc-ref train`; transformer:model=HASH picks a model of the store "
                "(`lmc-ref models list`) by its hash or a unique prefix of 8+ hex digits.\n"
                "The .lmc header records the weights' SHA-256, not the path: decompression finds "
                "the weights by that hash in --model-dir DIR, then LMC_REF_MODELS, then the user "
                "model store (~/.cache/lmc_ref/models), where `lmc-ref train --out` and "
                "`lmc-ref models add FILE` put a copy")

    backend = "cpu"
    backends = ("cpu", "cuda")
    needs_model_file = True

    #: The kind of model file (``lmc_ref.models.KINDS``) its weights come from.
    model_kind = "transformer"

    def __init__(self, model):
        """``model``: a ``lmc_ref.models.Model`` of kind ``transformer`` (see ``from_model_params``)."""
        state = model.payload
        self.source = str(model.entry.path)
        self.config = state["meta"]["config"]
        if "vocab" in self.config:
            raise ValueError(f"{self.source} is a token model (vocabulary {self.config['vocab']}); "
                             "a byte compressor needs a byte model (vocabulary 256)")
        self.params = state["param"]
        self.model_hash = model.hash
        self.model_bytes = 2 * param_count(self.config)  # the paper counts 2 bytes per parameter
        self._tk = infer_cpu
        self._weights = infer_cpu.pack_weights(self.params, self.config, CHUNK_SIZE)
        self._kc, self._vc = infer_cpu.new_cache(self.config, CHUNK_SIZE)
        self._logp = np.empty(VOCAB, np.float32)  # [256]
        self.reset()

    @classmethod
    def from_params(cls, **params):
        return cls.from_model_params(params)

    @classmethod
    def from_model_params(cls, params, stored=False, model_hash=b"", model_dirs=None):
        """Build from spec parameters (``v=`` already taken by ``make_predictor``).

        A new spec names the weights by ``ckpt=PATH`` or ``model=HASH`` (looked
        up like a decoder does, ``model_dirs`` first).  A ``stored`` spec (from
        a file header) is found by the header's ``model_hash`` alone: a
        ``ckpt=`` in it is ignored, never opened.
        """
        params = dict(params)
        if stored:
            params.pop("ckpt", None)  # a path in a header is never opened (format-7 files carry one)
            reject_unknown("transformer", params)
            if len(model_hash) != 32:
                raise ValueError("the header names no model hash for the transformer (it cannot be decoded)")
            return cls(models.find(model_hash, [cls.model_kind], model_dirs))
        ckpt, prefix = params.pop("ckpt", None), params.pop("model", None)
        reject_unknown("transformer", params)
        if ckpt and prefix:
            raise ValueError("transformer: give ckpt=PATH or model=HASH, not both")
        if prefix:
            return cls(models.find_prefix(prefix, [cls.model_kind], model_dirs))
        if not ckpt:
            raise ValueError("transformer needs ckpt=PATH (a checkpoint written by `lmc-ref train`) "
                             "or model=HASH (a model in the store: `lmc-ref models list`)")
        try:
            model = models.open_path(ckpt, [cls.model_kind])
        except (OSError, ValueError) as err:
            reason = str(err).removeprefix(f"{ckpt}: ")  # name the file once
            raise ValueError(f"cannot load transformer checkpoint {ckpt}: {reason}") from err
        return cls(model)

    @property
    def spec(self):
        return self.versioned_spec()

    def use_backend(self, name):
        """``cpu`` (the Numba kernel) or ``cuda`` (``lmc_ref.transformer.infer_cuda``: batched chunks on a GPU)."""
        if name == self.backend:
            return
        if name != "cuda":
            super().use_backend(name)
        from ..transformer.infer_cuda import CudaTransformer

        self.gpu = CudaTransformer(self.params, self.config)
        self.backend = "cuda"

    def reset(self):
        self._t, self._prev, self._pdf = 0, 0, None

    def predict(self):
        if self._pdf is None:
            self._pdf = np.empty(VOCAB, np.float64)  # [256]
            self._tk.pdf_at(self._weights, self._kc, self._vc, self._t, self._prev, self._logp, self._pdf)
        return self._pdf.copy()

    def update(self, symbol):
        self._t, self._prev, self._pdf = self._t + 1, int(symbol), None
        if self._t == CHUNK_SIZE:  # next chunk: empty context
            self._t, self._prev = 0, 0

    # Each chunk is its own arithmetic-code stream (``container.pack_chunk_streams``),
    # so chunks are coded side by side: threads on the CPU, thread blocks on a GPU.
    chunk_streams = CHUNK_SIZE

    def encode_chunks(self, chunks, progress=None):
        """Each chunk (<= 2048 bytes) from an empty context as its own stream: ``(streams, ideal bits)``."""
        if self.backend == "cuda":
            return self.gpu.encode_chunks(chunks, progress)
        return self._tk.encode_chunks(self._weights, self.config["num_heads"], chunks, progress)

    def decode_chunks(self, streams, lengths, progress=None):
        """Inverse of ``encode_chunks``: one uint8 array of all chunks, in order."""
        if self.backend == "cuda":
            return np.frombuffer(b"".join(self.gpu.decode_chunks(streams, lengths, progress)), np.uint8)
        return self._tk.decode_chunks(self._weights, self.config["num_heads"], streams, lengths, progress)

    def fused_encode(self, data, progress=None):
        chunks = [data[i:i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
        return container.pack_chunk_streams(self.encode_chunks(chunks, progress)[0])

    def fused_decode(self, payload, length, progress=None):
        streams = container.unpack_chunk_streams(payload, length, CHUNK_SIZE, self._tk.stream_capacity())
        return self.decode_chunks(streams, container.chunk_lengths(length, CHUNK_SIZE), progress)

    def ideal_bits(self, data):
        """``-log2 p`` of ``data`` under the float model (chunks of 2048 from empty contexts)."""
        data = np.asarray(data, dtype=np.uint8)
        chunks = [data[i:i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
        return float(sum(self.encode_chunks(chunks)[1]))

