"""Benchmark: training throughput (tokens/s) of our NumPy backprop against PyTorch on the CPU.

Run:  LMC_REF_DATA=../shared/data python bench/train.py [--config 200K] [--steps 5]

For sequence lengths 256 and 2048 (batch 8 and 1: the same 2048 tokens per step),
in two alternating rounds (best of each side),
times full training steps (forward, backward, clipping, Adam) of the same
architecture and configuration in the same run, on the same number of threads
(PyTorch in a child process, with the caller's own OpenMP settings).
PyTorch is a benchmark-only dependency: without it the script says so and
reports our figures alone.  Issue target: >= 0.5x PyTorch.  Prints one JSON line.
"""

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import time

# lmc_ref sets OMP_WAIT_POLICY=PASSIVE (and OpenBLAS's spin time) on import, so it
# is imported before NumPy, as the `lmc-ref` command does.  PyTorch is measured in a
# child process with the caller's original OpenMP setting, so it runs as it would
# on its own (passive waiting slows PyTorch's OpenMP threads).
RUNTIME_VARS = ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")
USER_SETTINGS = json.dumps({k: os.environ[k] for k in RUNTIME_VARS if k in os.environ})

import lmc_ref  # noqa: E402,F401  (first: see above)
import numpy as np  # noqa: E402
from common import text_sample  # noqa: E402

from lmc_ref.transformer import train as tr  # noqa: E402
from lmc_ref.transformer.backprop import loss_and_grads  # noqa: E402
from lmc_ref.transformer import model as tf  # noqa: E402


def ours(config, data, seq_len, batch, steps):
    params = tf.init_params(config, seed=0)
    m = {k: np.zeros_like(w) for k, w in params.items()}
    v = {k: np.zeros_like(w) for k, w in params.items()}
    cfg = tf.get_config(config)

    def step(i):
        targets = tr.sample_batch(data, seq_len, batch, 0, i)
        _, grads = loss_and_grads(params, cfg, targets)
        tr.clip_by_global_norm(grads, tr.HPARAMS["clip"])  # in place
        tr.adam_step(params, grads, m, v, i + 1, 1e-4, tr.HPARAMS)

    step(0)  # warm-up
    t0 = time.perf_counter()
    for i in range(1, steps + 1):
        step(i)
    return batch * seq_len * steps / (time.perf_counter() - t0)


def torch_tokens_per_s(config, data, seq_len, batch, steps):
    import torch
    from torch import nn

    cfg = tf.get_config(config)
    d, heads, layers = cfg["d_model"], cfg["num_heads"], cfg["num_layers"]
    torch.set_num_threads(os.cpu_count() or 1)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(d, 3 * d, bias=False)
            self.o = nn.Linear(d, d, bias=False)
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.f1, self.f2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, h):
            b, t, _ = h.shape
            q, k, v = self.qkv(h).view(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            h = self.ln1(h + self.o(a.transpose(1, 2).reshape(b, t, d)))
            return self.ln2(h + self.f2(nn.functional.gelu(self.f1(h), approximate="tanh")))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(256, d)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.out = nn.Linear(d, 256)
            self.register_buffer("pos", torch.from_numpy(tf.sinusoid_positions(seq_len, d).astype(np.float32)))

        def forward(self, x):
            h = self.embed(x) * math.sqrt(d) + self.pos[: x.shape[1]]
            for block in self.blocks:
                h = block(h)
            return self.out(h)

    model = Model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(i):
        targets = torch.from_numpy(tr.sample_batch(data, seq_len, batch, 0, i).astype(np.int64))
        inputs = torch.cat([torch.zeros_like(targets[:, :1]), targets[:, :-1]], dim=1)
        loss = nn.functional.cross_entropy(model(inputs).reshape(-1, 256), targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tr.HPARAMS["clip"])
        opt.step()

    step(0)
    t0 = time.perf_counter()
    for i in range(1, steps + 1):
        step(i)
    return batch * seq_len * steps / (time.perf_counter() - t0)


ROUNDS = 2


def torch_in_child(config, seq_len, batch, steps):
    """PyTorch's tokens/s from a child process with the caller's own thread settings."""
    env = dict(os.environ, LMC_BENCH_USER_SETTINGS=USER_SETTINGS)
    out = subprocess.run([sys.executable, __file__, "--torch-only", "--config", config, "--steps", str(steps),
                          "--seq-len", str(seq_len), "--batch", str(batch)],
                         env=env, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="200K")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--seq-len", type=int, default=256, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)
    args = ap.parse_args()
    data, _ = tr.split_data(np.frombuffer(text_sample(), np.uint8))
    if args.torch_only:  # child: restore the user's settings before torch loads its runtimes
        user = json.loads(os.environ.get("LMC_BENCH_USER_SETTINGS", "{}"))
        for k in RUNTIME_VARS:
            if k in user:
                os.environ[k] = user[k]
            else:
                os.environ.pop(k, None)
        print(torch_tokens_per_s(args.config, data, args.seq_len, args.batch, args.steps))
        return
    have_torch = importlib.util.find_spec("torch") is not None
    if not have_torch:
        print("PyTorch not installed: reporting our figures only (pip install torch to compare)")
    figures = {"bench": "train", "config": args.config, "threads": os.cpu_count()}
    for seq_len, batch in ((256, 8), (2048, 1)):
        # Alternate the two, best of ROUNDS each: this 2-core machine's speed drifts by
        # 10-15 % over tens of seconds, and alternating exposes both sides to it alike.
        o = t = 0.0
        for _ in range(ROUNDS):
            o = max(o, ours(args.config, data, seq_len, batch, args.steps))
            if have_torch:
                t = max(t, torch_in_child(args.config, seq_len, batch, args.steps))
        figures[f"ours_tokens_s_T{seq_len}"] = round(o)
        line = f"T={seq_len}, batch {batch}: ours {o:,.0f} tokens/s"
        if have_torch:
            figures[f"torch_tokens_s_T{seq_len}"] = round(t)
            figures[f"ratio_vs_torch_T{seq_len}"] = round(o / t, 3)
            line += f", PyTorch {t:,.0f} tokens/s, ratio {o / t:.2f} (target >= 0.5)"
        print(line)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
