"""Default initializers by measurement: test accuracy of the same models under different init rules.

Usage (the three commands behind ``docs/initializers.md``)::

    python benchmarks/initializers.py                     # every task, 5 seeds (~35 min on 2 shared cores)
    python benchmarks/initializers.py --tasks digits-convnet --schemes default,lamina0 --first-seed 5 --seeds 5
    python benchmarks/initializers.py --tasks transformer-tokens --schemes keras_emb0,keras_emb_torch
    python benchmarks/initializers.py --smoke             # 3 steps of each task, 1 seed (the CI smoke test)

Every task trains one lamina model with one recipe; only the initial weights
change between schemes. Within a task and a seed, every scheme sees the same
data in the same order and the same optimizer: the model is built after
``lm.set_seed(seed)``, then each weight-bearing layer is re-initialized by the
scheme (``default`` leaves the library's own defaults untouched). The schemes:

* ``default``  - lamina's defaults as they are in the checked-out code;
* ``lamina0``  - lamina's defaults before this study: He-normal (truncated) for
  layers with a ReLU-like activation (what ``ConvNet`` / ``MLP`` chose),
  LeCun-normal (truncated) for every other dense/conv kernel (true fan-in for
  transposed and depthwise kernels), zero biases, ``Embedding`` truncated normal
  ``1/sqrt(dim)``, recurrent Glorot-uniform / orthogonal / zeros (+ LSTM forget bias 1);
* ``keras``    - Keras 3's layer defaults: Glorot-uniform kernels (fans of the
  kernel's own layout, as ``keras.initializers`` computes them), zero biases,
  ``Embedding`` U(-0.05, 0.05), recurrent Glorot-uniform / orthogonal / zeros
  (+ LSTM ``unit_forget_bias``);
* ``torch``    - PyTorch's module defaults: ``kaiming_uniform_(a=sqrt(5))``, i.e.
  U(+-1/sqrt(fan_in)) weights and U(+-1/sqrt(fan_in)) biases with PyTorch's
  fan_in (``in/groups * kernel``; ``out/groups * kernel`` for transposed convs;
  ``kernel`` for depthwise), ``Embedding`` N(0, 1), recurrent U(+-1/sqrt(hidden))
  for every weight and bias (two summed biases where lamina keeps one),
  attention in-projections Glorot-uniform over the packed ``(3E, E)`` matrix with
  zero biases and the output projection's bias zero (``nn.MultiheadAttention``);
* ``he_uniform`` - He-uniform U(+-sqrt(6/fan_in)) kernels, zero biases (the rest as ``keras``);
* ``lecun``    - LeCun-normal (truncated, Sonnet 2's and Flax's default) kernels,
  zero biases (the rest as ``keras``);
* ``keras_emb0`` / ``keras_emb_torch`` - ``keras`` with lamina0's / PyTorch's
  ``Embedding`` initializer (an ablation for the Transformer task).

Learned positional embeddings (N(0, 0.02)), class tokens and norms keep lamina's
initializers in every scheme.

The tasks (all data bundled with scikit-learn or generated; nothing downloaded):

* ``digits-convnet`` - ``lamina train`` itself (``app.train_run``: ``ConvNet`` on the
  8x8 digits, Adam 3e-3 cosine, 20 epochs, batch 32, test accuracy of the
  best-validation checkpoint), ``--seed`` = seed (it also draws the validation split);
* ``cnn-adam`` - conv32-pool-conv64-pool-dense10 (``ConvNet(10, convs_per_block=1,
  hidden=None)``) on "shifted digits" (each digit at 4 random offsets on a 16x16
  canvas; 5748 train / 1440 test), Adam 1e-2 constant, 1000 steps of batch 64 -
  the kind of recipe the issue describes. ``--peers keras,torch`` also trains the
  same network in Keras 3 and in PyTorch with their own defaults on the same
  batches (a check that the in-lamina ``keras`` / ``torch`` rows transfer);
* ``cnn-adam-noisy`` - the same with Gaussian noise (std 0.1) on the pixels;
* ``mlp-cancer`` - ``MLP([64, 64], 2)`` on scikit-learn's breast cancer set
  (standardized; 455 / 114), Adam 1e-3, 40 epochs of batch 32;
* ``mlp-synthetic`` - ``MLP([128, 128], 4)`` on ``make_classification`` (8000
  examples, 20 features, 4 classes, 2% label noise; 6000 / 2000), Adam 1e-3,
  15 epochs of batch 64;
* ``gru-rows`` / ``lstm-rows`` - a 64-unit GRU / LSTM reading the 8x8 digits row by
  row, its last output into ``Linear(10)``; Adam 3e-3, 15 epochs of batch 32;
* ``transformer-tokens`` - ``Transformer(vocab_size=17, model_dim=32, 4 heads,
  2 layers, no dropout)`` over the digits' 64 pixel intensities as tokens;
  Adam 1e-3, 15 epochs of batch 32.

Every Adam has epsilon 1e-7 in every framework. Reported per (task, scheme):
mean +- std over the seeds of the test accuracy, the test loss and the training
loss (the last epoch's mean; the mean over all steps for the ``cnn-adam`` tasks).
Figures go in ``docs/initializers.md`` and ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import format_table, machine_info, machine_line  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import lamina as lm  # noqa: E402
from lamina import initializers as init  # noqa: E402
from lamina.layers import activations as acts  # noqa: E402
from lamina.layers.attention import MultiHeadAttention  # noqa: E402
from lamina.layers.conv import ConvND  # noqa: E402
from lamina.layers.conv_transpose import ConvNDTranspose  # noqa: E402
from lamina.layers.depthwise import DepthwiseConv2D  # noqa: E402
from lamina.layers.embedding import Embedding  # noqa: E402
from lamina.layers.linear import Linear  # noqa: E402
from lamina.layers.recurrent import GRU, LSTM, SimpleRNN  # noqa: E402

SCHEMES = ("default", "lamina0", "keras", "torch", "he_uniform", "lecun", "keras_emb0", "keras_emb_torch")
TASKS = ("digits-convnet", "cnn-adam", "cnn-adam-noisy", "mlp-cancer", "mlp-synthetic", "gru-rows", "lstm-rows", "transformer-tokens")
PEERS = ("keras", "torch")
ADAM_EPS = 1e-7  # one epsilon for every framework (Keras' default; lamina and PyTorch take it as given)


# --------------------------------------------------------------------------------------- schemes
def _uniform(bound: float) -> init.Initializer:
    return init.Uniform(-bound, bound)


def _torch_fan_in(layer: Any, shape: Sequence[int]) -> float:
    """PyTorch's ``fan_in`` of the layer's weight (``_calculate_fan_in_and_fan_out`` on its torch layout)."""
    shape = [int(d) for d in shape]
    if isinstance(layer, DepthwiseConv2D):  # torch weight (C * mult, 1, kh, kw)
        return float(math.prod(shape[:2]))
    if isinstance(layer, ConvNDTranspose):  # lamina (*k, out, in); torch (in, out / groups, *k)
        return float(math.prod(shape[:-2]) * shape[-2])
    return init.compute_fans(shape)[0]  # Linear (in, out), conv (*k, in / groups, out)


class _SumOfUniforms(init.Initializer):
    """``U(+-b) + U(+-b)``: PyTorch's ``b_ih + b_hh`` where lamina keeps one bias."""

    def __init__(self, bound: float) -> None:
        self.bound = bound

    def __call__(self, shape: Any, dtype: tf.DType = tf.float32) -> tf.Tensor:
        return _uniform(self.bound)(shape, dtype) + _uniform(self.bound)(shape, dtype)


_RELU_LIKE = {acts.get_activation(n) for n in ("relu", "relu6", "leaky_relu", "elu", "gelu", "silu")}


def _recurrent_plan(scheme: str, core: Any) -> Dict[str, Callable]:
    h = core.hidden_size
    if scheme == "torch":
        k = 1.0 / math.sqrt(h)
        plan: Dict[str, Callable] = {"input_weights": _uniform(k), "recurrent_weights": _uniform(k)}
        if isinstance(core, GRU):  # bias = [b_ir + b_hr, b_iz + b_hz, b_in], recurrent_bias = b_hn
            plan["bias"] = lambda s, d=tf.float32: tf.concat(
                [_SumOfUniforms(k)((2 * h,), d), _uniform(k)((h,), d)], axis=0)
            plan["recurrent_bias"] = _uniform(k)
        elif isinstance(core, LSTM):  # torch has b_ih + b_hh and no forget-gate offset
            plan["bias"] = _SumOfUniforms(k)
        else:
            plan["bias"] = _SumOfUniforms(k)
        return plan
    # Every other scheme: Keras' (and lamina's) Glorot-uniform / orthogonal / zeros, LSTM forget bias 1.
    plan = {"input_weights": init.GlorotUniform(), "recurrent_weights": init.Orthogonal(), "bias": init.Zeros()}
    if isinstance(core, LSTM):
        plan["bias"] = lambda s, d=tf.float32: tf.concat([tf.zeros((h,), d), tf.ones((h,), d), tf.zeros((2 * h,), d)], 0)
    if isinstance(core, GRU):
        plan["recurrent_bias"] = init.Zeros()
    return plan


def _layer_plan(scheme: str, layer: Any, attention_role: Optional[str]) -> Dict[str, Callable]:
    """``{variable attribute: initializer}`` of one layer under ``scheme`` (empty: leave it)."""
    if isinstance(layer, (SimpleRNN, GRU, LSTM)):
        return _recurrent_plan(scheme, layer)
    if isinstance(layer, Embedding):
        table = {"lamina0": init.TruncatedNormal(stddev=1.0 / math.sqrt(layer.dim)), "torch": init.Normal(0.0, 1.0)}
        table.update(keras_emb0=table["lamina0"], keras_emb_torch=table["torch"])
        return {"embeddings": table.get(scheme, init.Uniform(-0.05, 0.05))}
    if not isinstance(layer, (Linear, ConvND, ConvNDTranspose, DepthwiseConv2D)):
        return {}
    shape = layer.weights.shape
    if scheme == "lamina0":
        if getattr(layer, "activation", None) in _RELU_LIKE:
            w: Callable = init.HeNormal()
        elif isinstance(layer, DepthwiseConv2D):
            w = _fan_in_normal(float(math.prod(shape[:2])))
        elif isinstance(layer, ConvNDTranspose):
            w = _fan_in_normal(float(math.prod(shape[:-2]) * shape[-1]))
        else:
            w = init.LecunNormal()
        return {"weights": w, "bias": init.Zeros()}
    if scheme == "torch":
        if attention_role in ("query", "key", "value"):  # packed in_proj (3E, E): xavier_uniform_, zero bias
            fan_in, fan_out = init.compute_fans(shape)
            return {"weights": _uniform(math.sqrt(6.0 / (fan_in + 3 * fan_out))), "bias": init.Zeros()}
        bound = 1.0 / math.sqrt(_torch_fan_in(layer, shape))
        return {"weights": _uniform(bound), "bias": init.Zeros() if attention_role == "output" else _uniform(bound)}
    if scheme == "he_uniform":
        return {"weights": init.HeUniform(), "bias": init.Zeros()}
    if scheme == "lecun":
        return {"weights": init.LecunNormal(), "bias": init.Zeros()}
    return {"weights": init.GlorotUniform(), "bias": init.Zeros()}  # keras


def _fan_in_normal(fan_in: float) -> init.Initializer:
    return init.TruncatedNormal(0.0, math.sqrt(1.0 / fan_in) / 0.87962566103423978)


def apply_scheme(model: Any, scheme: str) -> int:
    """Re-initializes every built weight-bearing layer of ``model`` by ``scheme``.

    Args:
      model: a built lamina model.
      scheme: one of :data:`SCHEMES`; ``"default"`` changes nothing.

    Returns:
      The number of variables re-initialized.
    """
    if scheme == "default":
        return 0
    roles: Dict[int, str] = {}
    for m in [model, *model.submodules]:
        if isinstance(m, MultiHeadAttention):
            for role in ("query", "key", "value", "output"):
                roles[id(getattr(m, f"{role}_proj"))] = role
    count = 0
    for m in [model, *model.submodules]:
        for attr, fn in _layer_plan(scheme, m, roles.get(id(m))).items():
            var = getattr(m, attr, None)
            if isinstance(var, tf.Variable):
                var.assign(fn(var.shape, var.dtype))
                count += 1
    return count


@contextlib.contextmanager
def models_initialized_with(scheme: str, input_shape: Sequence[int]) -> Iterator[None]:
    """Makes ``create_model`` (what ``lamina train`` calls) build its model and apply ``scheme``."""
    from lamina.models import registry

    original = registry.create_model

    def create(name: str, num_classes: int, **kwargs: Any) -> Any:
        model = original(name, num_classes, **kwargs)
        model(tf.zeros((1, *input_shape)))
        apply_scheme(model, scheme)
        return model

    registry.create_model = create
    try:
        yield
    finally:
        registry.create_model = original


# ------------------------------------------------------------------------------------------ data
def _digits() -> Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    from lamina.data.digits import load_digits_arrays

    arrays, _ = load_digits_arrays()
    (xtr, ytr), (xte, yte) = arrays["train"], arrays["test"]
    return (xtr, ytr), (xte, yte)


def shifted_digits(noise: float = 0.0, copies: int = 4, canvas: int = 16) -> Dict[str, np.ndarray]:
    """Each 8x8 digit at ``copies`` random offsets on a ``canvas``-sized image, plus Gaussian noise (seed 0)."""
    rng = np.random.default_rng(0)
    out = {}
    for split, (x, y) in zip(("train", "test"), _digits()):
        n = len(x) * copies
        imgs = np.zeros((n, canvas, canvas, 1), np.float32)
        src = np.repeat(x.astype(np.float32) / 16.0, copies, axis=0)
        oy, ox = rng.integers(0, canvas - 7, n), rng.integers(0, canvas - 7, n)
        for i in range(n):
            imgs[i, oy[i]:oy[i] + 8, ox[i]:ox[i] + 8] = src[i]
        imgs += rng.normal(0.0, noise, imgs.shape).astype(np.float32)
        out[f"x_{split}"], out[f"y_{split}"] = imgs, np.repeat(y, copies).astype(np.int64)
    return out


def _standardized(x_train: np.ndarray, x_test: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    mean, std = x_train.mean(0), x_train.std(0) + 1e-8
    return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


def breast_cancer() -> Dict[str, np.ndarray]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    xtr, xte = _standardized(xtr, xte)
    return {"x_train": xtr, "y_train": ytr.astype(np.int64), "x_test": xte, "y_test": yte.astype(np.int64)}


def synthetic_tabular() -> Dict[str, np.ndarray]:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=8000, n_features=20, n_informative=10, n_redundant=4, n_classes=4,
                               n_clusters_per_class=2, flip_y=0.02, random_state=0)
    xtr, xte = _standardized(x[:6000], x[6000:])
    return {"x_train": xtr, "y_train": y[:6000].astype(np.int64), "x_test": xte, "y_test": y[6000:].astype(np.int64)}


def digits_rows() -> Dict[str, np.ndarray]:
    (xtr, ytr), (xte, yte) = _digits()
    return {"x_train": (xtr[..., 0] / 16.0).astype(np.float32), "y_train": ytr,
            "x_test": (xte[..., 0] / 16.0).astype(np.float32), "y_test": yte}


def digits_tokens() -> Dict[str, np.ndarray]:
    (xtr, ytr), (xte, yte) = _digits()
    return {"x_train": xtr.reshape(len(xtr), 64).astype(np.int32), "y_train": ytr,
            "x_test": xte.reshape(len(xte), 64).astype(np.int32), "y_test": yte}


# ----------------------------------------------------------------------------------------- tasks
class RowsRNN(lm.Module):
    """A recurrent core over an image's rows, its last output into ``Linear(num_classes)``."""

    def __init__(self, core: Any, num_classes: int, name: str = "rows_rnn") -> None:
        super().__init__(name=name)
        self.rnn = lm.RNN(core, return_sequences=False, name="rnn")
        self.head = lm.Linear(num_classes, name="head")

    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.head(self.rnn(x))


def _batch_order(n: int, batch: int, steps: int, seed: int) -> np.ndarray:
    """Indices of ``steps`` batches: epoch after epoch of permutations from ``seed`` (shared by every framework)."""
    rng = np.random.default_rng([seed, 0x494E4954])
    need = steps * batch
    order = np.concatenate([rng.permutation(n) for _ in range(-(-need // n))])
    return order[:need]


def _fit_arrays(model: Any, data: Dict[str, np.ndarray], scheme: str, seed: int, lr: float, epochs: int,
                batch: int, max_steps: Optional[int] = None) -> Dict[str, float]:
    """Builds, re-initializes by ``scheme``, trains with Adam(lr) and evaluates on the test split."""
    model(tf.constant(data["x_train"][:1]))
    apply_scheme(model, scheme)
    trainer = lm.train.Trainer(model, lm.optim.Adam(lr, epsilon=ADAM_EPS), lm.losses.SoftmaxCrossEntropy(),
                               metrics=["accuracy"], seed=seed, quiet=True, tensorboard=False)
    history = trainer.fit((data["x_train"], data["y_train"]), epochs=epochs, batch_size=batch, max_steps=max_steps)
    test = trainer.evaluate((data["x_test"], data["y_test"]), batch_size=512)
    train_loss = history[-1]["loss"] if history else float("nan")
    return {"accuracy": test["accuracy"], "loss": test["loss"], "train_loss": train_loss}


def task_digits_convnet(scheme: str, seed: int, smoke: bool) -> Dict[str, float]:
    from lamina.app import train_run
    from lamina.train.config import RunConfig

    with tempfile.TemporaryDirectory() as tmp:
        config = RunConfig(seed=seed, run_dir=os.path.join(tmp, "run"), **({"max_steps": 3, "epochs": 1} if smoke else {}))
        # ``default`` runs ``lamina train`` untouched (the README's main job for seed 0).
        with models_initialized_with(scheme, (8, 8, 1)) if scheme != "default" else contextlib.nullcontext():
            result = train_run(config, quiet=True)
    r = result.results
    return {"accuracy": r["test_accuracy"], "loss": r["test_loss"], "train_loss": result.history[-1]["loss"]
            if result.history else float("nan"), "last_accuracy": r["final_test_accuracy"]}


CNN_STEPS, CNN_BATCH, CNN_LR, CNN_NOISE = 1000, 64, 1e-2, 0.1


def task_cnn_adam(scheme: str, seed: int, smoke: bool, data: Dict[str, np.ndarray]) -> Dict[str, float]:
    lm.set_seed(seed)
    model = lm.models.ConvNet(10, widths=(32, 64), convs_per_block=1, hidden=None)
    steps = 3 if smoke else CNN_STEPS
    order = _batch_order(len(data["x_train"]), CNN_BATCH, steps, seed)
    x, y = data["x_train"][order], data["y_train"][order]
    model(tf.constant(x[:1]))
    apply_scheme(model, scheme)
    trainer = lm.train.Trainer(model, lm.optim.Adam(CNN_LR, epsilon=ADAM_EPS), lm.losses.SoftmaxCrossEntropy(),
                               metrics=["accuracy"], seed=seed, quiet=True, tensorboard=False)
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(CNN_BATCH)
    history = trainer.fit(batches, epochs=1)
    test = trainer.evaluate((data["x_test"], data["y_test"]), batch_size=512)
    return {"accuracy": test["accuracy"], "loss": test["loss"], "train_loss": history[-1]["loss"]}


def peer_keras_cnn(seed: int, smoke: bool, data: Dict[str, np.ndarray]) -> Dict[str, float]:
    """The ``cnn-adam`` network in Keras 3 with Keras' own defaults, on the same batches."""
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input(data["x_train"].shape[1:]),
        layers.Conv2D(32, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Flatten(), layers.Dense(10),
    ])
    model.compile(keras.optimizers.Adam(CNN_LR, epsilon=ADAM_EPS),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    steps = 3 if smoke else CNN_STEPS
    order = _batch_order(len(data["x_train"]), CNN_BATCH, steps, seed)
    hist = model.fit(data["x_train"][order], data["y_train"][order], batch_size=CNN_BATCH, epochs=1, shuffle=False,
                     verbose=0)
    loss, acc = model.evaluate(data["x_test"], data["y_test"], batch_size=512, verbose=0)
    return {"accuracy": float(acc), "loss": float(loss), "train_loss": float(hist.history["loss"][-1])}


def peer_torch_cnn(seed: int, smoke: bool, data: Dict[str, np.ndarray]) -> Dict[str, float]:
    """The ``cnn-adam`` network in PyTorch with PyTorch's own defaults, on the same batches."""
    import torch
    from torch import nn

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(seed)
    side = data["x_train"].shape[1]
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * (side // 4) ** 2, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=CNN_LR, eps=ADAM_EPS)
    steps = 3 if smoke else CNN_STEPS
    order = _batch_order(len(data["x_train"]), CNN_BATCH, steps, seed)
    x = torch.from_numpy(np.ascontiguousarray(data["x_train"][order].transpose(0, 3, 1, 2)))
    y = torch.from_numpy(data["y_train"][order])
    losses = []
    model.train()
    for i in range(steps):
        xb, yb = x[i * CNN_BATCH:(i + 1) * CNN_BATCH], y[i * CNN_BATCH:(i + 1) * CNN_BATCH]
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        xt = torch.from_numpy(np.ascontiguousarray(data["x_test"].transpose(0, 3, 1, 2)))
        logits = model(xt)
        yt = torch.from_numpy(data["y_test"])
        test_loss = float(nn.functional.cross_entropy(logits, yt))
        acc = float((logits.argmax(1) == yt).float().mean())
    return {"accuracy": acc, "loss": test_loss, "train_loss": float(np.mean(losses))}


def _small(smoke: bool, epochs: int) -> Dict[str, Any]:
    return {"epochs": 1, "max_steps": 3} if smoke else {"epochs": epochs}


def task_mlp_cancer(scheme: str, seed: int, smoke: bool, data: Dict[str, np.ndarray]) -> Dict[str, float]:
    lm.set_seed(seed)
    return _fit_arrays(lm.models.MLP([64, 64], 2), data, scheme, seed, 1e-3, batch=32, **_small(smoke, 40))


def task_mlp_synthetic(scheme: str, seed: int, smoke: bool, data: Dict[str, np.ndarray]) -> Dict[str, float]:
    lm.set_seed(seed)
    return _fit_arrays(lm.models.MLP([128, 128], 4), data, scheme, seed, 1e-3, batch=64, **_small(smoke, 15))


def task_rows(core_cls: Any) -> Callable[..., Dict[str, float]]:
    def run(scheme: str, seed: int, smoke: bool, data: Dict[str, np.ndarray]) -> Dict[str, float]:
        lm.set_seed(seed)
        return _fit_arrays(RowsRNN(core_cls(64), 10), data, scheme, seed, 3e-3, batch=32, **_small(smoke, 15))

    return run


def task_transformer_tokens(scheme: str, seed: int, smoke: bool, data: Dict[str, np.ndarray]) -> Dict[str, float]:
    lm.set_seed(seed)
    model = lm.models.Transformer(vocab_size=17, num_classes=10, model_dim=32, num_heads=4, num_layers=2,
                                  max_len=64, dropout=0.0)
    return _fit_arrays(model, data, scheme, seed, 1e-3, batch=32, **_small(smoke, 15))


# ------------------------------------------------------------------------------------------- run
def _task_table() -> Dict[str, Tuple[Callable, Optional[Callable[[], Dict[str, np.ndarray]]], str]]:
    return {
        "digits-convnet": (task_digits_convnet, None, "lamina train defaults: ConvNet, digits 8x8, Adam 3e-3 cosine, 20 ep, batch 32"),
        "cnn-adam": (task_cnn_adam, shifted_digits, f"conv32-pool-conv64-pool-dense10, shifted digits 16x16, Adam {CNN_LR:g}, "
                                                    f"{CNN_STEPS} steps, batch {CNN_BATCH}"),
        "cnn-adam-noisy": (task_cnn_adam, lambda: shifted_digits(CNN_NOISE), f"the same with Gaussian noise {CNN_NOISE:g} "
                                                                             "on the pixels"),
        "mlp-cancer": (task_mlp_cancer, breast_cancer, "MLP 64-64, breast cancer, Adam 1e-3, 40 ep, batch 32"),
        "mlp-synthetic": (task_mlp_synthetic, synthetic_tabular, "MLP 128-128, make_classification 4 classes, Adam 1e-3, 15 ep, batch 64"),
        "gru-rows": (task_rows(lm.GRU), digits_rows, "GRU 64 over digit rows, Adam 3e-3, 15 ep, batch 32"),
        "lstm-rows": (task_rows(lm.LSTM), digits_rows, "LSTM 64 over digit rows, Adam 3e-3, 15 ep, batch 32"),
        "transformer-tokens": (task_transformer_tokens, digits_tokens, "Transformer d32 4 heads 2 layers, digit pixels as tokens, "
                                                                       "Adam 1e-3, 15 ep, batch 32"),
    }


def _mean_std(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    vals = [v * scale for v in values if v == v]
    if not vals:
        return "-"
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.{digits}f} ± {std:.{digits}f}"


def _csv(text: str, allowed: Sequence[str], what: str) -> List[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad:
        raise SystemExit(f"initializers.py: unknown {what} {bad}; expected some of {list(allowed)}")
    return items


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the study and prints one table per task (and a JSON file with ``--json``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    p.add_argument("--schemes", default="default,lamina0,torch,he_uniform", help=f"comma-separated, of {', '.join(SCHEMES)}")
    p.add_argument("--peers", default="keras,torch", help="frameworks trained on cnn-adam with their own defaults ('' for none)")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds per configuration")
    p.add_argument("--first-seed", type=int, default=0, help="the seeds are first-seed .. first-seed + seeds - 1")
    p.add_argument("--smoke", action="store_true", help="3 steps per run, one seed (checks the script runs)")
    p.add_argument("--json", default=None, help="write every run's numbers to this file")
    args = p.parse_args(argv)
    tasks = _csv(args.tasks, TASKS, "tasks")
    schemes = _csv(args.schemes, SCHEMES, "schemes")
    peers = _csv(args.peers, PEERS, "peers")
    seeds = [args.first_seed] if args.smoke else list(range(args.first_seed, args.first_seed + args.seeds))
    info = machine_info()
    print("# initializers study; " + machine_line(info), flush=True)
    print(f"seeds {seeds}; schemes {schemes}; tasks {tasks}; peers on cnn-adam* {peers}", flush=True)
    table = _task_table()
    runs: List[Dict[str, Any]] = []
    t_all = time.perf_counter()
    for task in tasks:
        fn, make_data, recipe = table[task]
        data = make_data() if make_data else None
        rows = [(s, "lamina") for s in schemes] + ([(p_, "peer") for p_ in peers] if task.startswith("cnn-adam") else [])
        t_task = time.perf_counter()
        for seed in seeds:
            for name, kind in rows:
                t0 = time.perf_counter()
                if kind == "peer":
                    out = {"keras": peer_keras_cnn, "torch": peer_torch_cnn}[name](seed, args.smoke, data)
                else:
                    out = fn(name, seed, args.smoke) if data is None else fn(name, seed, args.smoke, data)
                out.update(task=task, scheme=name if kind == "lamina" else f"{name} (own framework)", seed=seed,
                           seconds=round(time.perf_counter() - t0, 1))
                runs.append(out)
                print(f"  {task} {out['scheme']} seed {seed}: test accuracy {100 * out['accuracy']:.2f}% "
                      f"loss {out['loss']:.4f} train loss {out['train_loss']:.4f} ({out['seconds']}s)", flush=True)
        print(f"\n### {task}: {recipe} ({len(seeds)} seeds, {time.perf_counter() - t_task:.0f}s)\n")
        headers = ["init", "test accuracy %", "test loss", "train loss"]
        if task == "digits-convnet":
            headers.insert(2, "last epoch %")
        body = []
        for name in dict.fromkeys(r["scheme"] for r in runs if r["task"] == task):
            rs = [r for r in runs if r["task"] == task and r["scheme"] == name]
            row = [name, _mean_std([r["accuracy"] for r in rs], 100.0), _mean_std([r["loss"] for r in rs], digits=4),
                   _mean_std([r["train_loss"] for r in rs], digits=4)]
            if task == "digits-convnet":
                row.insert(2, _mean_std([r["last_accuracy"] for r in rs], 100.0))
            body.append(row)
        print(format_table(headers, body), "\n", flush=True)
    info_end = machine_info(onednn=False)
    print(f"done: {len(runs)} runs in {time.perf_counter() - t_all:.0f}s; load at the end {info_end['load1']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
