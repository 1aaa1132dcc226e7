"""Compressors as generative models: sample continuations of text, images and audio.

Any compressor C defines a conditional distribution over the next byte,

    rho(b | x)  proportional to  2 ** -(l_C(x b) - l_C(x)),

where ``l_C`` is the compressed length in bits: a continuation that compresses
well is a probable one.  Sampling byte by byte turns gzip, LZMA2 or brotli
into a (poor) generative model.  Our predictors have an explicit pdf, so they
are sampled from it directly (which is the same distribution their ideal code
lengths define).  The paper shows gzip against Chinchilla; here every
compressor we have is set beside the true continuation.

For gzip the 256 candidate lengths come from one compressor state copied 256
times (``zlib.compressobj().copy()``); LZMA2 and brotli have no such API and
recompress ``x b`` for each candidate, which is why the quick run keeps their
contexts short.
"""

import os
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
    predictor = make_predictor(name)
    predictor.reset()
    for byte in context:
        predictor.update(int(byte))
    for _ in range(n):
        pdf = predictor.predict()
        byte = int(rng.choice(256, p=pdf / pdf.sum()))
        predictor.update(byte)
        out.append(byte)
    return bytes(out)


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
               images=None, audio=None):
    """Run every sampler on text (and images/audio when present); write ``generate.json``,
    ``generate.md`` and the PNG/WAV files under ``outdir/generate/``.

    The arguments are those of every experiment (``lmc_ref.experiments``):
    ``seed`` seeds the sampling; the run is always small, so ``quick`` is only
    recorded, and ``workers`` and ``progress`` are unused.  ``images``/``audio``:
    data folders (default: under ``$LMC_REF_DATA``).  Returns what
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
    for name, text in result["text"]["samples"].items():
        lines += [f"**{name}:**", "", "```text", show(text), "```", ""]
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
