"""A character-level GPT (``lm.models.GPT``) trained by a ``Trainer`` subclass that overrides ``compute_loss``,
then sampled with the cached, compiled ``GPT.generate``.

The text is Python's own help pages (``pydoc_data.topics``, ~466 KB of English
and code that ships with every CPython), read as UTF-8 bytes: 90 % for
training, the last 10 % held out. Each example is ``WINDOW + 1`` bytes; the
model reads the first ``WINDOW`` and predicts each next byte (a byte embedding
tied to the output layer, learned positions, pre-norm causal blocks). The
batches are token ids alone — the subclass's ``compute_loss`` shifts them into
inputs and targets — and the Trainer adds everything else: the compiled step,
checkpoints with exact resume, curves, validation in bits per character.
(``lamina train --model gpt --data FILE.txt`` trains the same model from the
command line, on ``(inputs, next tokens)`` pairs.)

After training, ``model.generate`` continues a prompt: one ``tf.function``
(traced once) that reads the prompt in one call and then decodes one token
per step with fixed-size key/value caches; its speed is compared with
re-reading the whole sequence at each step (``use_cache=False``).

Measured (2 shared CPU cores, AMD EPYC, tensorflow-cpu 2.21, defaults: 4
layers of width 128, window 128, 4 epochs, seed 0, Python's own help pages
as the text): held-out **3.04 bits per character** (cross-entropy 2.11 nats;
4.94 after the first epoch), 86 s of training; ``generate`` at 1,031 tokens/s
with the cache against 352 re-reading the sequence (2.9x at 100 new tokens;
measured before ``generate`` compiled each step with XLA by default, ~1.5x faster).
A sample after the prompt "The ``for`` statement" (temperature 0.8, top-k 40):
``her (e antesther) whorrag thealo fin s thore] "Pypated athe setigus the.``
- words and layout forming, not yet English: more epochs keep lowering the
loss (``--epochs``).

Run::

    python examples/char_lm.py                    # writes runs/char_lm/
    python examples/char_lm.py --epochs 1 --max-steps 3 --run-dir /tmp/char_lm   # smoke run
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any, Dict, Optional, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import lamina as lm  # noqa: E402

__all__ = ["build_model", "LanguageModelTrainer", "load_text", "sample", "main"]

WINDOW = 128
PROMPT = "The ``for`` statement"


def build_model(max_len: int = WINDOW, dim: int = 128, heads: int = 4, layers: int = 4, mlp: int = 512,
                dropout: float = 0.1) -> lm.models.GPT:
    """The byte-level GPT: ids ``(B, T)`` -> next-byte logits ``(B, T, 256)``."""
    return lm.models.GPT(256, max_len=max_len, model_dim=dim, num_heads=heads, num_layers=layers, mlp_dim=mlp,
                         dropout=dropout, name="char_gpt")


class LanguageModelTrainer(lm.train.Trainer):
    """A Trainer whose batches are token windows ``(B, T + 1)``: predict tokens 1..T from 0..T-1."""

    def compute_loss(self, batch: tf.Tensor, training: bool) -> Dict[str, tf.Tensor]:
        """Mean next-token cross-entropy (nats) and the same in bits per character."""
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = tf.cast(self.model(inputs, training=training), tf.float32)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))
        return {"loss": loss, "bits_per_char": loss / math.log(2.0)}


def load_text(window: int = WINDOW) -> Tuple[np.ndarray, np.ndarray]:
    """Python's help pages as non-overlapping ``(window + 1)``-byte examples: ``(train, held_out)`` int32."""
    import pydoc_data.topics

    from lamina.data.text import text_windows

    data = np.frombuffer("".join(pydoc_data.topics.topics.values()).encode("utf-8"), np.uint8).astype(np.int32)
    cut = int(len(data) * 0.9)
    return text_windows(data[:cut], window), text_windows(data[cut:], window)


def sample(model: lm.models.GPT, prompt: str, length: int = 100, temperature: float = 0.8, top_k: int = 40,
           seed: int = 0, use_cache: bool = True) -> Tuple[str, float]:
    """Continues ``prompt`` by ``length`` bytes with ``model.generate``.

    Args:
      model: the trained model.
      prompt: the text to continue.
      length: how many bytes to add (prompt + length <= the model's ``max_len``).
      temperature: softmax temperature (> 0; 0 is greedy).
      top_k: sample among the ``top_k`` most likely bytes.
      seed: the sampling seed.
      use_cache: decode with the key/value caches (else re-read the sequence each step).

    Returns:
      ``(the prompt and its continuation (invalid UTF-8 replaced), new tokens per second)`` — the
      speed of a second call, after the one-time trace.
    """
    ids = np.frombuffer(prompt.encode("utf-8"), np.uint8).astype(np.int32)
    kwargs = dict(temperature=temperature, top_k=top_k, seed=seed, use_cache=use_cache)
    model.generate(ids, length, **kwargs)  # traces (once)
    t0 = time.perf_counter()
    out = model.generate(ids, length, **kwargs)
    rate = length / (time.perf_counter() - t0)
    return bytes(out.tolist()).decode("utf-8", errors="replace"), rate


def main(argv: Optional[list] = None) -> Dict[str, Any]:
    """Trains the language model and prints its held-out bits per character, a sample and the decoding speed.

    Args:
      argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
      ``{"history", "test", "sample", "tokens_per_s", "recompute_tokens_per_s", "train_time_s", "run_dir"}``.
    """
    p = argparse.ArgumentParser(description="Character-level GPT trained by lm.train.Trainer, sampled with generate.")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", default=os.path.join("runs", "char_lm"))
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--sample-length", type=int, default=100)
    args = p.parse_args(argv)

    lm.set_seed(args.seed)
    train, held_out = load_text()
    model = build_model()
    steps = -(-len(train) // args.batch_size) * args.epochs
    optimizer = lm.optim.AdamW(lm.optim.schedules.cosine(3e-3, total_steps=steps, warmup_steps=min(200, steps // 10)),
                               weight_decay=0.05, no_weight_decay="bias_and_norm")
    trainer = LanguageModelTrainer(model, optimizer, loss=None, metrics=(), seed=args.seed, run_dir=args.run_dir,
                                   monitor="val_loss", monitor_mode="min")
    t0 = time.perf_counter()
    history = trainer.fit((train,), validation=(held_out,), batch_size=args.batch_size, epochs=args.epochs,
                          max_steps=args.max_steps)
    train_time = time.perf_counter() - t0
    test = trainer.evaluate((held_out,))
    length = min(args.sample_length, model.max_len - len(PROMPT.encode("utf-8")))
    text, rate = sample(model, PROMPT, length=length, seed=args.seed)
    _, slow = sample(model, PROMPT, length=length, seed=args.seed, use_cache=False)
    print(f"held-out {test['bits_per_char']:.2f} bits per character (cross-entropy {test['loss']:.2f} nats); "
          f"training {train_time:.1f}s; generate {rate:.0f} tokens/s with the cache, {slow:.0f} re-reading the "
          f"sequence\n--- sample ---\n{text}", flush=True)
    return {"history": history, "test": test, "sample": text, "tokens_per_s": rate, "recompute_tokens_per_s": slow,
            "train_time_s": train_time, "run_dir": args.run_dir}


if __name__ == "__main__":
    main()
