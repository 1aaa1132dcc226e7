"""The trained byte transformer as a ``Predictor`` (``transformer:ckpt=PATH``).

The model itself lives in ``lmc_ref.transformer`` (configs and the readable
forward in ``model``, checkpoints in ``checkpoint``, the coding kernels in
``infer_cpu`` and ``infer_cuda``); this module only adapts it to the predictor
protocol and to the chunked payload layout.
"""

import numpy as np

from .. import container
from ..constants import CHUNK_SIZE
from ..transformer import infer_cpu
from ..transformer.checkpoint import load_checkpoint, model_hash
from ..transformer.model import VOCAB, get_config, param_count
from .base import Predictor, register, reject_unknown


@register("transformer")
class TransformerPredictor(Predictor):
    """A trained checkpoint as a predictor (``transformer:ckpt=PATH``).

    The context restarts every ``CHUNK_SIZE`` (2048) bytes: each chunk is coded
    from an empty context, as in the paper, with the KV cache of the chunk so far.
    Probabilities come from the Numba kernel ``lmc_ref.transformer.infer_cpu.pdf_at``
    (no BLAS, no fast-math) on every path, so encoder and decoder agree exactly.
    """

    @classmethod
    def help_text(cls):
        return ("transformer:ckpt=PATH  the paper's byte transformer, weights from a checkpoint "
                "written by `lmc-ref train`; the .lmc header records the weights' SHA-256 and "
                "decoding with another checkpoint is refused")

    backend = "cpu"
    backends = ("cpu", "cuda")
    needs_model_file = True

    def __init__(self, ckpt):
        try:
            state = load_checkpoint(ckpt)
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(f"cannot load transformer checkpoint {ckpt}: {err}") from err
        self.ckpt = str(ckpt)
        self.config = get_config(state["meta"]["config"])
        if "vocab" in self.config:
            raise ValueError(f"{ckpt} is a token model (vocabulary {self.config['vocab']}); "
                             "a byte compressor needs a byte model (vocabulary 256)")
        self.params = state["param"]
        self.model_hash = model_hash(self.params)
        self.model_bytes = 2 * param_count(self.config)  # the paper counts 2 bytes per parameter
        self._tk = infer_cpu
        self._weights = infer_cpu.pack_weights(self.params, self.config, CHUNK_SIZE)
        self._kc, self._vc = infer_cpu.new_cache(self.config, CHUNK_SIZE)
        self._logp = np.empty(VOCAB, np.float32)  # [256]
        self.reset()

    @classmethod
    def from_params(cls, **params):
        ckpt = params.pop("ckpt", None)
        if not ckpt:
            raise ValueError("transformer needs ckpt=PATH (a checkpoint written by `lmc-ref train`)")
        reject_unknown("transformer", params)
        return cls(ckpt)

    @property
    def spec(self):
        return f"transformer:ckpt={self.ckpt}"

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

