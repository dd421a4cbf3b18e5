"""Autoregressive decoding: tokens/s of ``GPT.generate`` with a KV cache vs recomputing the prefix, vs PyTorch.

Usage::

    python benchmarks/generate.py              # 4 layers, width 256, 256 new tokens after 16, 5 rounds (~2 min)
    python benchmarks/generate.py --smoke      # tiny model, a few tokens, one round

The same decoder-only model (byte vocabulary, learned positions, pre-norm
blocks with exact GELU, tied embeddings) in three variants, with the same
weights, timed in alternating rounds (``common.round_robin``) so they share the
machine's conditions:

* ``lamina-cached``: ``GPT.generate`` as it is called by default (one
  ``tf.function``: a prefill of the prompt, then a ``tf.while_loop`` of
  one-token steps reading and writing fixed-size key/value buffers, each step
  one XLA-compiled function: ``xla_step``);
* ``lamina-cached-tf``: the same with every op in TensorFlow's kernels (``xla_step=False``);
* ``lamina-cached-xla``: the whole loop compiled with XLA (``jit_compile=True``);
* ``lamina-recompute``: ``GPT.generate(use_cache=False)`` (the same loop,
  re-reading the whole sequence at every step);
* ``torch-cached``: the same network written in plain ``torch.nn`` (eager,
  ``torch.inference_mode``), with the usual growing key/value cache
  (``torch.cat`` per step).

Decoding is greedy (temperature 0), so all variants must produce the same
tokens: the script checks it. Reported: the median tokens/s over the rounds
(new tokens / wall time of one whole ``generate`` call) and the ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, List

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import Entry, format_table, machine_info, machine_line, round_robin  # noqa: E402

VOCAB = 256


def torch_decoder(weights: Dict[str, Any], layers: int, heads: int, eps: float) -> Any:
    """The lamina GPT (learned positions, tied embeddings) in plain ``torch.nn``, with ``weights`` copied."""
    import torch
    from torch import nn

    def tensor(a: Any) -> Any:
        return torch.tensor(a)

    class Block(nn.Module):
        def __init__(self, w: Dict[str, Any], prefix: str) -> None:
            super().__init__()
            dim = w[f"{prefix}/norm1/scale"].shape[0]
            self.heads, self.size = heads, dim // heads
            self.norm1, self.norm2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
            self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
            self.fc1 = nn.Linear(dim, w[f"{prefix}/fc1/bias"].shape[0])
            self.fc2 = nn.Linear(self.fc1.out_features, dim)
            with torch.no_grad():
                for mod, name in ((self.norm1, "norm1"), (self.norm2, "norm2")):
                    mod.weight.copy_(tensor(w[f"{prefix}/{name}/scale"]))
                    mod.bias.copy_(tensor(w[f"{prefix}/{name}/offset"]))
                for mod, name in ((self.q, "attention/query_proj"), (self.k, "attention/key_proj"),
                                  (self.v, "attention/value_proj"), (self.o, "attention/output_proj"),
                                  (self.fc1, "fc1"), (self.fc2, "fc2")):
                    mod.weight.copy_(tensor(w[f"{prefix}/{name}/weights"].T))
                    mod.bias.copy_(tensor(w[f"{prefix}/{name}/bias"]))

        def split(self, x: Any) -> Any:
            b, t, _ = x.shape
            return x.view(b, t, self.heads, self.size).transpose(1, 2)

        def forward(self, x: Any, cache: Any) -> Any:
            h = self.norm1(x)
            q, k, v = self.split(self.q(h)), self.split(self.k(h)), self.split(self.v(h))
            if cache is not None:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            causal = x.shape[1] > 1  # a prefill from position 0 (one token sees the whole cache)
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
            x = x + self.o(a.transpose(1, 2).reshape(x.shape))
            x = x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))
            return x, (k, v)

    class Decoder(nn.Module):
        def __init__(self, w: Dict[str, Any]) -> None:
            super().__init__()
            self.embed = nn.Parameter(tensor(w["embed/embeddings"]))
            self.positions = nn.Parameter(tensor(w["positions/embeddings"]))
            self.blocks = nn.ModuleList(Block(w, f"blocks/{i}") for i in range(layers))
            dim = self.embed.shape[1]
            self.norm = nn.LayerNorm(dim, eps=eps)
            with torch.no_grad():
                self.norm.weight.copy_(tensor(w["norm/scale"]))
                self.norm.bias.copy_(tensor(w["norm/offset"]))

        def forward(self, tokens: Any, position: int, caches: List[Any]) -> Any:
            h = self.embed[tokens] + self.positions[position: position + tokens.shape[1]]
            new = []
            for block, cache in zip(self.blocks, caches):
                h, c = block(h, cache)
                new.append(c)
            return self.norm(h) @ self.embed.T, new

        @torch.inference_mode()
        def generate(self, prompt: Any, steps: int) -> Any:
            logits, caches = self(prompt, 0, [None] * len(self.blocks))
            out = [logits[:, -1].argmax(-1)]
            for i in range(1, steps):
                logits, caches = self(out[-1][:, None], prompt.shape[1] + i - 1, caches)
                out.append(logits[:, -1].argmax(-1))
            return torch.cat([prompt, torch.stack(out, 1)], 1)

    return Decoder(weights).eval()


def main(argv: List[str] = None) -> None:
    """Builds the model, checks the variants agree, times them and prints the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--prompt", type=int, default=16)
    p.add_argument("--new", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads for both frameworks (0: their defaults)")
    p.add_argument("--smoke", action="store_true", help="a tiny model and a few tokens, one round")
    args = p.parse_args(argv)
    if args.smoke:
        args.layers, args.width, args.heads, args.prompt, args.new, args.rounds = 2, 32, 2, 4, 8, 1

    import numpy as np
    import tensorflow as tf
    import torch

    import lamina as lm

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        torch.set_num_threads(args.threads)
    info = machine_info()
    print(machine_line(info) + f"; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    lm.set_seed(0)
    max_len = args.prompt + args.new
    model = lm.models.GPT(VOCAB, max_len=max_len, model_dim=args.width, num_heads=args.heads, num_layers=args.layers)
    prompt = np.random.default_rng(0).integers(0, VOCAB, (1, args.prompt)).astype(np.int32)
    model(tf.constant(prompt))
    reference = torch_decoder(model.get_weights(), args.layers, args.heads, eps=1e-5)
    t_prompt = torch.tensor(prompt, dtype=torch.long)

    def lamina_variant(use_cache: bool, jit: bool, xla_step: Any = None) -> Any:
        return lambda: model.generate(prompt, args.new, temperature=0.0, use_cache=use_cache, jit_compile=jit,
                                      xla_step=xla_step)

    entries = [Entry("lamina-cached", lamina_variant(True, False)),
               Entry("lamina-cached-tf", lamina_variant(True, False, False)),
               Entry("lamina-cached-xla", lamina_variant(True, True)),
               Entry("lamina-recompute", lamina_variant(False, False)),
               Entry("torch-cached", lambda: reference.generate(t_prompt, args.new).numpy())]
    outputs = {}
    for e in entries:
        t0 = time.perf_counter()
        outputs[e.name] = e.step()
        e.info["first_s"] = time.perf_counter() - t0
    want = outputs["lamina-cached"]
    for name, got in outputs.items():
        agree = int((np.asarray(got) == want).all(axis=0).sum())
        print(f"{name}: first call {entries[[e.name for e in entries].index(name)].info['first_s']:.2f} s "
              f"(trace + run); greedy tokens equal to lamina-cached at {agree} of {want.shape[1]} positions")
    round_robin(entries, windows=args.rounds, steps_per_window=1, settle=0)
    rate = {e.name: args.new / (e.ms / 1000.0) for e in entries}
    rows = [[e.name, f"{e.ms:.1f}", f"{rate[e.name]:.0f}", f"{rate[e.name] / rate['lamina-recompute']:.2f}",
             f"{rate[e.name] / rate['torch-cached']:.2f}"] for e in entries]
    print(f"\n### {args.layers} layers, width {args.width}, {args.heads} heads, vocab {VOCAB}: {args.new} new tokens "
          f"after a {args.prompt}-token prompt, batch 1, greedy; median of {args.rounds} rounds\n")
    print(format_table(["variant", "ms / generate", "tokens/s", "vs lamina-recompute", "vs torch-cached"], rows))


if __name__ == "__main__":
    main()
