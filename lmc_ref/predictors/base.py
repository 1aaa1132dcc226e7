"""The Predictor protocol and the registry of spec strings.

A *predictor* is a sequential probability model over an alphabet of symbols
(bytes, for every predictor in lmc_ref so far).  It is the only thing a
compressor needs besides the arithmetic coder:

* ``predict()`` gives the distribution of the next symbol given everything seen;
* ``update(symbol)`` tells the model which symbol actually came;
* ``reset()`` forgets everything (adaptive models then start from scratch).

The encoder and the decoder run exactly the same sequence of calls, so they see
exactly the same distributions; ``lmc_ref.quantize`` turns each one into
integers the same way on both sides.

Predictors are named by *spec strings* such as ``ngram:order=5,mem=20``: a
registered name, then ``key=value`` parameters.  A predictor's ``spec``
property returns its canonical spec with every parameter explicit, which is
what the container records, so a file decodes with the configuration it was
made with even if defaults change later.

A canonical spec starts with the predictor's *model version*, ``v=N``
(``cm:v=7,mem=22``): the version of the model's arithmetic, which decides the
coded bits.  A model change raises it, so the file layout's version
(``container.VERSION``) never moves for a model change; a decoder that meets a
version it does not implement says so, naming it.  Files written before the
version moved into the spec carry no ``v=``; for them, ``unversioned`` names
the version they were made with.
"""

from abc import ABC, abstractmethod

import numpy as np

from ..container import MAX_SPEC_LENGTH  # a spec must fit the file header

_REGISTRY = {}


# --8<-- [start:protocol]
class Predictor(ABC):
    """A sequential model: ``predict`` -> pdf over the next symbol, ``update`` with the truth."""

    #: Number of distinct symbols (256 for byte models).
    alphabet_size = 256
    #: Hash of trained weights; empty for purely adaptive models.
    model_hash = b""
    #: Numeric backend whose outputs this model's files depend on.
    backend = "cpu"
    #: Backends this predictor can run on (``use_backend``).
    backends = ("cpu",)
    #: True for predictors whose weights come from a model file: named by ``ckpt=PATH``
    #: when compressing, found by ``model_hash`` when decoding (``lmc_ref.models``).
    needs_model_file = False
    #: Bytes a decoder must hold besides the file (the adjusted rate adds them):
    #: 2 per parameter for neural models, stored tables for pretrained count
    #: models, 0 for purely adaptive ones.
    model_bytes = 0
    #: True if the compressor codes this model's input through ``lmc_ref.word_codes``
    #: (frequent words replaced by unused byte values; the file holds the words);
    #: such a predictor implements ``use_word_codes(code_bytes)``, called before coding.
    word_codes = False
    #: 0: one arithmetic-code stream for the whole input.  N > 0: the context
    #: restarts every N symbols and each N-symbol chunk is its own stream
    #: (``container.pack_chunk_streams``); such a predictor implements
    #: ``encode_chunks`` / ``decode_chunks``, which code chunks side by side.
    chunk_streams = 0
    #: The version of the model's arithmetic this code implements (``v=`` in the spec).
    model_version = 1
    #: The version a stored spec without ``v=`` means (files of format 7 written
    #: before versions moved into the spec).
    unversioned = 1

    @property
    @abstractmethod
    def spec(self) -> str:
        """Canonical spec string, every parameter explicit."""

    @abstractmethod
    def reset(self) -> None:
        """Forget all context and adaptive statistics."""

    @abstractmethod
    def predict(self) -> np.ndarray:
        """Distribution of the next symbol: float64 array of ``alphabet_size`` entries."""

    @abstractmethod
    def update(self, symbol: int) -> None:
        """Condition the model on the symbol that actually occurred."""
# --8<-- [end:protocol]

    # Bitwise predictors (context mixing) code each byte as 8 binary decisions,
    # most significant bit first, through the coder's binary interface.  They set
    # ``bitwise = True`` and implement ``predict_bit`` / ``update_bit``; their
    # ``predict`` still returns a byte pdf (the product of the bit probabilities
    # along the 8-bit tree) for evaluation and sampling.
    bitwise = False

    def predict_bit(self) -> int:
        """P(next bit = 1) as an integer in (0, 2**16), for bitwise predictors."""
        raise NotImplementedError(f"{type(self).__name__} is not a bitwise predictor")

    def update_bit(self, bit: int) -> None:
        """Condition a bitwise predictor on the bit that occurred."""
        raise NotImplementedError(f"{type(self).__name__} is not a bitwise predictor")

    def versioned_spec(self, params=""):
        """``name:v=N`` followed by ``params`` (``"k=v,..."``): the canonical spec's shape."""
        return f"{self.registry_name}:v={self.model_version}" + (f",{params}" if params else "")

    @classmethod
    def from_params(cls, **params):
        """Build from a spec's parameters (strings); a predictor with parameters overrides this."""
        reject_unknown(cls.registry_name, params)
        return cls()

    @classmethod
    def help_text(cls) -> str:
        """One paragraph for ``lmc-ref compress --help``: the spec's form and what the model is."""
        return (cls.__doc__ or cls.registry_name).strip().splitlines()[0]

    def use_backend(self, name):
        """Run on backend ``name`` from now on (raises ``ValueError`` if this predictor cannot)."""
        if name != self.backend:
            raise ValueError(f"predictor {self.registry_name!r} "
                             f"runs on {', '.join(self.backends)}, not on {name!r}")

    def use_word_codes(self, code_bytes):
        """Treat ``code_bytes`` as coded words (only predictors with ``word_codes = True``)."""
        raise NotImplementedError(f"{type(self).__name__} does not model word codes")

    # Optional measurements.  The defaults run the readable predict/update loop
    # (slow, fine for small inputs); predictors with a compiled loop override them.
    def byte_costs(self, data) -> np.ndarray:
        """``-log2 p`` of each symbol of ``data`` under the float model, from an empty context."""
        data = np.asarray(data, dtype=np.uint8)
        self.reset()
        costs = np.empty(len(data), np.float64)  # [N]
        for i, symbol in enumerate(data):
            pdf = self.predict()
            costs[i] = -np.log2(pdf[symbol] / pdf.sum())
            self.update(int(symbol))
        return costs

    def ideal_bits(self, data) -> float:
        """Ideal code length of ``data`` in bits (the sum of ``byte_costs``), from an empty context."""
        return float(self.byte_costs(data).sum())

    # Chunk-stream predictors (``chunk_streams > 0``) code many chunks at once.
    def encode_chunks(self, chunks, progress=None):
        """Each chunk from an empty context as its own stream: ``(streams, ideal bits per chunk)``."""
        raise NotImplementedError(f"{type(self).__name__} does not code chunk streams")

    def decode_chunks(self, streams, lengths, progress=None):
        """Inverse of ``encode_chunks``: one uint8 array of all chunks, in order."""
        raise NotImplementedError(f"{type(self).__name__} does not code chunk streams")

    # Optional fast paths.  A predictor that implements them must produce the
    # same payload bytes as the readable predict/quantize/encode loop.
    def fused_encode(self, data, progress=None):
        """Encode ``data`` (uint8 array) in one compiled loop; return payload bytes or None."""
        return None

    def fused_decode(self, payload, length, progress=None):
        """Decode ``length`` symbols in one compiled loop; return a uint8 array or None."""
        return None


def register(name):
    """Class decorator: make a predictor constructible from spec strings ``name:...``."""

    def wrap(cls):
        if name in _REGISTRY:
            raise ValueError(f"predictor {name!r} registered twice")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return wrap


def available():
    """Names of all registered predictors."""
    return sorted(_REGISTRY)


def predictor_class(name):
    """The class registered under ``name`` (raises ``ValueError`` if there is none)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown predictor {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def parse_spec(spec):
    """Split ``"name:k1=v1,k2=v2"`` into ``("name", {"k1": "v1", "k2": "v2"})``.

    Raises:
        ValueError: for an empty, over-long, non-ASCII or malformed spec.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError("empty predictor spec")
    if len(spec) > MAX_SPEC_LENGTH or not spec.isascii() or not spec.isprintable():
        raise ValueError(f"malformed predictor spec {spec[:40]!r}")
    name, _, rest = spec.partition(":")
    params = {}
    if rest:
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            if not eq or not key or not value:
                raise ValueError(f"malformed parameter {item!r} in spec {spec!r} (expected key=value)")
            if key in params:
                raise ValueError(f"parameter {key!r} given twice in spec {spec!r}")
            params[key] = value
    return name, params


def make_predictor(spec, stored=False, model_hash=b"", model_dirs=None):
    """Build a predictor from its spec string, e.g. ``make_predictor("ngram:order=4")``.

    ``v=N`` picks the model version; without it a new spec means the newest
    version and a ``stored`` one (read from a file header) means the version
    files had before the spec carried it (``Predictor.unversioned``).

    A predictor with trained weights (``needs_model_file``) is built by its
    class's ``from_model_params(params, stored, model_hash, model_dirs)``: a
    ``stored`` spec names no path, and the weights are found by the header's
    ``model_hash`` in ``model_dirs``, ``LMC_REF_MODELS`` and the user model
    store (``lmc_ref.models``); a path in a stored spec is never opened.

    Raises:
        ValueError: unknown predictor name, a model version this code does not
            implement, or invalid parameters.
    """
    name, params = parse_spec(spec)
    cls = predictor_class(name)
    default = cls.unversioned if stored else cls.model_version
    version = int_param(params, "v", default, 0, 1 << 16)
    if version != cls.model_version:
        raise ValueError(f"{name} model version {version} is not implemented by this lmc_ref "
                         f"(it implements v={cls.model_version})")
    if cls.needs_model_file:
        return cls.from_model_params(params, stored=stored, model_hash=model_hash, model_dirs=model_dirs)
    return cls.from_params(**params)


def int_param(params, key, default, lo, hi):
    """Pop an integer parameter from ``params`` and check it lies in [lo, hi]."""
    raw = params.pop(key, None)
    if raw is None:
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"parameter {key}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise ValueError(f"parameter {key}={value} outside [{lo}, {hi}]")
    return value


def reject_unknown(name, params):
    """Raise if any parameters are left over after a predictor took its own."""
    if params:
        raise ValueError(f"unknown parameter(s) for {name}: {', '.join(sorted(params))}")
