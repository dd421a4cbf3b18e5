"""``Trainer``: a compiled training loop for any lamina (or plain ``tf.Module``) model.

The Trainer has three parts, each replaceable:

* **the step** — what one batch does, per replica, inside one compiled
  ``tf.function``. The default is supervised (``(x, y)`` batches, ``model(x)``,
  ``loss(y, outputs)``, the metrics). Replace it with ``Trainer(step=fn)``
  (``fn(batch, ctx) -> {name: scalar}``, see :mod:`lamina.train.step`), or
  subclass and override :meth:`Trainer.compute_loss` (the loss of a batch) or
  :meth:`Trainer.train_batch` (the whole step). Every scalar the step returns
  is averaged over the epoch and logged;
* **the loop** — :meth:`Trainer.fit`: epochs of steps, validation, and the
  callbacks' hooks (one screen of code);
* **the callbacks** — checkpoints with exact resume, the best checkpoint,
  early stopping, ``metrics.jsonl``, TensorBoard, the progress bar, plots, the
  non-finite check and the learning rate (:mod:`lamina.train.callbacks`); a
  ``run_dir`` turns the standard ones on, and users add their own.

Strategies (``strategy.run``, losses scaled by the global batch), mixed
precision with float16 loss scaling, gradient accumulation, clipping (the
optimizer's), a weight moving average and several optimizers work with any
step.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from lamina import losses as losses_lib
from lamina import metrics as metrics_lib
from lamina.module import call_with_training
from lamina.random import set_seed
from lamina.train import callbacks as cb
from lamina.train import distribute as distribute_lib
from lamina.train.callbacks.best_checkpoint import default_tie_break
from lamina.train.data_source import epoch_data, eval_data
from lamina.train.exclusive import exclusive
from lamina.train.log_means import LogMeans
from lamina.train.loss_scale import LossScale
from lamina.train.precision import resolve_precision, warn_if_slow
from lamina.train.step import StepContext, StepFn

__all__ = ["Trainer", "TrainingError"]

Logs = Dict[str, Any]


class TrainingError(RuntimeError):
    """Training cannot go on: a non-finite loss (the message names the step, and the module when found)."""


def _make_metric(spec: Any) -> Any:
    if isinstance(spec, str):
        key = spec.lower()
        if key in ("accuracy", "acc"):
            return metrics_lib.Accuracy()
        if key.startswith("top") and key.endswith("accuracy"):
            return metrics_lib.TopKAccuracy(k=int("".join(ch for ch in key if ch.isdigit()) or 5))
        raise ValueError(f"unknown metric {spec!r}; expected 'accuracy', 'top5_accuracy' or a metric object")
    return spec


def _make_optimizers(optimizer: Any) -> Dict[str, Any]:
    from lamina import optim

    if optimizer is None:
        return {}
    if isinstance(optimizer, Mapping):
        out = {str(k): optim.get(v) if isinstance(v, str) else v for k, v in optimizer.items()}
    else:
        out = {"optimizer": optim.get(optimizer) if isinstance(optimizer, str) else optimizer}
    for name, opt in out.items():
        if not isinstance(opt, optim.Optimizer):
            raise TypeError(
                f"Trainer: optimizer {name!r} must be a lamina.optim optimizer or a name like 'adam', "
                f"got {type(opt).__name__}"
            )
    return out


def _is_host_batch(batch: Any) -> bool:
    """Whether ``batch`` is plain tensors/arrays (not per-replica distributed values)."""
    return all(isinstance(t, (tf.Tensor, np.ndarray)) for t in tf.nest.flatten(batch))


def _scalar_logs(logs: Any, owner: str) -> Dict[str, tf.Tensor]:
    if logs is None:
        return {}
    if not isinstance(logs, Mapping):
        raise TypeError(f"{owner} must return a dict of scalars like {{'loss': loss}}, got {type(logs).__name__}")
    out = {}
    for key, value in logs.items():
        value = tf.convert_to_tensor(value)
        if value.shape.rank != 0:
            raise ValueError(f"{owner} returned {key!r} of shape {value.shape}; logged values must be scalars")
        out[str(key)] = tf.cast(value, tf.float32)
    return out


class Trainer:
    """Trains a model with a compiled step, checkpoints, logs and plots.

    Args:
      model: the model: a callable module ``model(x, training=...)`` for the
        default step (``training`` is passed only if it takes it), or any
        module / dict / list of modules for a custom ``step``.
      optimizer: a :mod:`lamina.optim` optimizer, its name (``"adam"``), a
        dict ``{name: optimizer}`` for steps with several (a GAN), or ``None``
        (evaluation only).
      loss: for the default step, ``loss(labels, outputs) -> scalar`` or a name
        (``"cross_entropy"``, ``"mse"``, ...).
      metrics: metric objects or names (``"accuracy"``, ``"top5_accuracy"``),
        updated by the default step with ``(labels, outputs)``.
      step: a custom train step ``step(batch, ctx) -> {name: scalar}``
        (:mod:`lamina.train.step`); replaces :meth:`train_batch`.
      eval_step: a custom evaluation step ``eval_step(batch, ctx) -> {name: scalar}``;
        replaces :meth:`eval_batch`.
      callbacks: callbacks added to every ``fit`` (after the standard ones).
      strategy: a ``tf.distribute.Strategy`` or ``None`` (one device).
      jit_compile: compile the step with XLA.
      precision: ``"float32"``, ``"mixed_bfloat16"``, ``"mixed_float16"`` or ``"auto"``.
      grad_accum_steps: apply the optimizer every k steps with the mean gradient.
      ema: keep an exponential moving average of the weights with this decay
        (e.g. 0.999); validation, the best checkpoint and evaluation then use
        the averaged weights (:mod:`lamina.train.ema`).
      seed: seed everything (``lm.set_seed``) before building; also the
        shuffling seed of a ``DataSet`` or arrays given to ``fit``.
      deterministic: also enable TensorFlow op determinism.
      run_dir: folder for checkpoints, logs and plots (``None``: none written).
      checkpoint_every: also checkpoint every N steps (besides each epoch end).
      keep_checkpoints: how many recent checkpoints to keep.
      monitor: the epoch log deciding the best checkpoint and early stopping;
        ties of an accuracy-like monitor go to the epoch with the lower
        ``val_loss`` (``loss``).
      monitor_mode: ``"max"`` or ``"min"``.
      patience: stop after this many epochs without improvement (``None``: never).
      quiet: print nothing.
      check_numerics: debug mode: raise at the first non-finite loss or
        gradient, right after its step, naming the first module whose output
        was not finite (one host sync per step).
      tensorboard: write TensorBoard logs under ``run_dir``.
      log_every: refresh the progress bar (and look for a non-finite loss) every N steps.
      autograph: convert Python control flow in the model with AutoGraph (off:
        lamina's layers need none, and tracing is ~20x faster without).

    Raises:
      ValueError / TypeError: for invalid arguments.
    """

    def __init__(
        self,
        model: Any,
        optimizer: Any = None,
        loss: Union[str, Callable, None] = "cross_entropy",
        metrics: Sequence[Any] = ("accuracy",),
        *,
        step: Optional[StepFn] = None,
        eval_step: Optional[StepFn] = None,
        callbacks: Sequence[cb.Callback] = (),
        strategy: Optional[tf.distribute.Strategy] = None,
        jit_compile: bool = False,
        precision: Optional[str] = "float32",
        grad_accum_steps: int = 1,
        ema: Optional[float] = None,
        seed: Optional[int] = None,
        deterministic: bool = False,
        run_dir: Optional[str] = None,
        checkpoint_every: Optional[int] = None,
        keep_checkpoints: int = 3,
        monitor: str = "val_accuracy",
        monitor_mode: str = "max",
        patience: Optional[int] = None,
        quiet: bool = False,
        check_numerics: bool = False,
        tensorboard: bool = True,
        log_every: int = 10,
        autograph: bool = False,
    ) -> None:
        if isinstance(grad_accum_steps, bool) or not isinstance(grad_accum_steps, int) or grad_accum_steps < 1:
            raise ValueError(f"Trainer: grad_accum_steps must be an int >= 1, got {grad_accum_steps!r}")
        if checkpoint_every is not None and (isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1):
            raise ValueError(f"Trainer: checkpoint_every must be an int >= 1, got {checkpoint_every!r}")
        if checkpoint_every is not None and not run_dir:
            raise ValueError("Trainer: checkpoint_every needs a run_dir to write the checkpoints to")
        if monitor_mode not in ("max", "min"):
            raise ValueError(f"Trainer: monitor_mode must be 'max' or 'min', got {monitor_mode!r}")
        if isinstance(keep_checkpoints, bool) or not isinstance(keep_checkpoints, int) or keep_checkpoints < 1:
            raise ValueError(f"Trainer: keep_checkpoints must be an int >= 1, got {keep_checkpoints!r}")
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
            raise ValueError(f"Trainer: patience must be an int >= 1, got {patience!r}")
        for name, fn in (("step", step), ("eval_step", eval_step)):
            if fn is not None and not callable(fn):
                raise TypeError(f"Trainer: {name} must be a function (batch, ctx) -> dict of scalars, got {fn!r}")
        if step is None and not callable(model):
            raise TypeError(f"Trainer: the default step calls the model; got a {type(model).__name__} (pass step=)")
        if seed is not None:
            set_seed(seed)
        if deterministic:
            tf.config.experimental.enable_op_determinism()
        self.model = model
        self.strategy = strategy
        self._scope_strategy = strategy or tf.distribute.get_strategy()
        with self._scope_strategy.scope():
            self.optimizers = _make_optimizers(optimizer)
        self.optimizer = self.optimizers.get("optimizer") if len(self.optimizers) == 1 and "optimizer" in self.optimizers else (
            next(iter(self.optimizers.values())) if len(self.optimizers) == 1 else None)
        self.loss_fn = losses_lib.get(loss) if isinstance(loss, str) else loss
        self._custom_step, self._custom_eval = step, eval_step
        self.precision = resolve_precision(precision)
        warn_if_slow(self.precision)
        self.jit_compile, self.autograph = bool(jit_compile), bool(autograph)
        self.grad_accum_steps = grad_accum_steps
        self.ema_decay = ema
        self.seed = 0 if seed is None else int(seed)
        self.run_dir = run_dir
        self.checkpoint_every, self.keep_checkpoints = checkpoint_every, keep_checkpoints
        self.monitor, self.monitor_mode, self.patience = monitor, monitor_mode, patience
        self.quiet, self.check_numerics = quiet, check_numerics
        self.tensorboard, self.log_every = tensorboard, max(1, int(log_every))
        self.user_callbacks = list(callbacks)
        self.is_chief = distribute_lib.is_chief(strategy)
        self.history: List[Logs] = []
        self.stop_training = False
        self.epochs, self.steps_per_epoch = 1, None
        self.last_batch_size = 0
        self.steps_run = 0  # steps the last fit() ran (0 for a finished run resumed)
        with self._scope_strategy.scope():
            self.metrics = [_make_metric(m) for m in metrics]
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
            self.micro_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="micro_step")
            self._first_bad_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="first_non_finite_step")
            self.loss_scale = LossScale() if self.precision.loss_scaling else None
        self._train_logs = LogMeans("train_logs")
        self._eval_logs = LogMeans("eval_logs")
        self._accum = tf.Module(name="grad_accumulators")
        self._accum.sets = []  # one list of accumulators per ctx.apply call of the step
        self.ema = None
        self._train_fn: Optional[Any] = None
        self._train_concrete: Optional[Any] = None
        self._train_specs: List[tf.TensorSpec] = []
        self._eval_fns: Dict[Any, Any] = {}
        self._predict_fn: Optional[Any] = None
        self._ckpt: Optional[tf.train.Checkpoint] = None
        self._ckpt_callbacks: Dict[str, cb.Callback] = {}
        self._managers: Dict[str, Any] = {}
        self._last_batch: Any = None

    # ------------------------------------------------------------- the step
    @property
    def num_replicas(self) -> int:
        """Number of replicas the step runs on."""
        return self._scope_strategy.num_replicas_in_sync

    def cast(self, x: Any) -> Any:
        """Casts floating tensors in ``x`` to the compute dtype (see :meth:`StepContext.cast`)."""
        dtype = self.precision.compute_dtype

        def one(t: Any) -> Any:
            t = tf.convert_to_tensor(t)
            return tf.cast(t, dtype) if t.dtype.is_floating and t.dtype != dtype else t

        return tf.nest.map_structure(one, x)

    @staticmethod
    def unpack(batch: Any) -> tuple:
        """Splits a supervised batch into ``(x, y)``.

        Raises:
          ValueError: if ``batch`` is not a pair (the default step needs labels).
        """
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            return batch[0], batch[1]
        got = f"a {len(batch)}-tuple" if isinstance(batch, (tuple, list)) else type(batch).__name__
        raise ValueError(
            f"Trainer: the default step needs (inputs, labels) batches, got {got}; "
            "for other batches (x alone, dicts) pass step= or override compute_loss"
        )

    def compute_loss(self, batch: Any, training: bool) -> Union[tf.Tensor, Dict[str, tf.Tensor]]:
        """The default step's loss of one batch: ``loss(y, model(x))``; updates the metrics.

        Override it to change the loss and keep the rest of the step. It may
        return a scalar, or a dict with a ``"loss"`` entry (differentiated) and
        other scalars (logged).

        Args:
          batch: this replica's batch.
          training: ``True`` in a train step, ``False`` in evaluation.

        Returns:
          The mean loss over the batch (or a dict of scalars with ``"loss"``).
        """
        x, y = self.unpack(batch)
        outputs = StepContext.to_float32(call_with_training(self.model, self.cast(x), training))
        if self.loss_fn is None:
            raise ValueError("Trainer: the default step needs a loss (loss=None was given)")
        loss = self.loss_fn(y, outputs)
        for m in self._active_metrics:
            m.update(y, outputs)
        return loss

    def _loss_logs(self, batch: Any, training: bool) -> tuple:
        out = self.compute_loss(batch, training)
        logs = dict(out) if isinstance(out, Mapping) else {"loss": out}
        if "loss" not in logs:
            raise ValueError(f"Trainer.compute_loss must return a scalar or a dict with 'loss', got keys {sorted(logs)}")
        return tf.cast(logs["loss"], tf.float32), logs

    def trainable_variables(self) -> List[tf.Variable]:
        """The variables the default step differentiates: the model's trainable ones (frozen modules excluded)."""
        return list(self.model.trainable_variables)

    def train_batch(self, batch: Any, ctx: StepContext) -> Dict[str, tf.Tensor]:
        """The default train step: the gradient of :meth:`compute_loss`, applied by ``ctx``.

        Args:
          batch: this replica's batch.
          ctx: the step context.

        Returns:
          The scalars to log (``loss`` and whatever ``compute_loss`` added).
        """
        variables = self.trainable_variables()
        if not variables:
            raise ValueError("Trainer: the model has no trainable variables (is everything frozen?)")
        with tf.GradientTape() as tape:
            loss, logs = self._loss_logs(batch, training=True)
            scaled = ctx.scale_loss(loss)
        ctx.apply(tape.gradient(scaled, variables), variables)
        return logs

    def eval_batch(self, batch: Any, ctx: StepContext) -> Dict[str, tf.Tensor]:
        """The default evaluation step: :meth:`compute_loss` without training.

        Args:
          batch: this replica's batch.
          ctx: the step context (``ctx.training`` is ``False``).

        Returns:
          The scalars to average (``loss``, ...).
        """
        if self._custom_step is not None and type(self).compute_loss is Trainer.compute_loss:
            raise ValueError("Trainer: evaluating with a custom step= needs eval_step= (or override compute_loss)")
        return self._loss_logs(batch, training=False)[1]

    def _replica_step(self, batch: Any, apply_now: tf.Tensor, training: bool) -> tuple:
        ctx = StepContext(self, batch, apply_now, training=training)
        if training:
            logs = (self._custom_step or self.train_batch)(batch, ctx)
            owner = "the train step"
        else:
            logs = (self._custom_eval or self.eval_batch)(batch, ctx)
            owner = "the eval step"
        logs = _scalar_logs(logs, owner)
        finite = tf.reduce_all(tf.stack(ctx.finite)) if ctx.finite else tf.constant(True)
        if training and self.loss_scale is not None and ctx.finite:
            self.loss_scale.update(finite)
        local = ctx.local_batch
        if self.num_replicas > 1:
            logs = {k: tf.where(local > 0, v * local, 0.0) for k, v in logs.items()}
        else:
            logs = {k: v * local for k, v in logs.items()}
        return logs, local, finite

    def _step_graph(self, batch: Any, training: bool = True) -> Dict[str, tf.Tensor]:
        apply_now = tf.constant(True)
        if training and self.grad_accum_steps > 1:
            apply_now = tf.equal((self.micro_step + 1) % self.grad_accum_steps, 0)
            self.micro_step.assign_add(1)
        if self.strategy is None:
            sums, weight, finite = self._replica_step(batch, apply_now, training)
        else:
            sums, weight, finite = self.strategy.run(self._replica_step, args=(batch, apply_now, training))
            reduce = lambda v: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)  # noqa: E731
            sums, weight = {k: reduce(v) for k, v in sums.items()}, reduce(weight)
            finite = self.strategy.experimental_local_results(finite)[0]
        means = {k: v / tf.maximum(weight, 1.0) for k, v in sums.items()}
        out = {"means": means, "sums": sums, "weight": weight}
        if not training:
            return out
        bad = tf.logical_not(tf.reduce_all([tf.math.is_finite(v) for v in means.values()])) if means else tf.constant(False)
        if self.loss_scale is None:  # without float16 loss scaling a non-finite gradient is a failure too
            bad = tf.logical_or(bad, tf.logical_not(finite))
        self._first_bad_step.assign(tf.where(tf.logical_and(bad, self._first_bad_step < 0), self.step + 1, self._first_bad_step))
        if self.ema is not None:
            tf.cond(tf.logical_and(finite, apply_now), self.ema.update, lambda: None)
        self.step.assign_add(1)
        self.step_in_epoch.assign_add(1)
        return out

    def accumulators(self, index: int, variables: Sequence[tf.Variable]) -> List[tf.Variable]:
        """The gradient accumulators of the ``index``-th ``ctx.apply`` of the step (created on first use).

        Args:
          index: the position of the ``apply`` call in the step.
          variables: its variables.

        Returns:
          One float32 accumulator per variable.
        """
        sets = self._accum.sets
        if index >= len(sets):
            def create(_strategy: Any = None) -> None:
                made = []
                with tf.init_scope():
                    for v in variables:
                        with self._scope_strategy.extended.colocate_vars_with(v):
                            made.append(tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False, name="accum"))
                sets.append(made)  # appended whole: the module tracks it (and restores it if a restore waits)

            replica = tf.distribute.get_replica_context()
            if tf.distribute.has_strategy() and replica is not None and self.strategy is not None:
                replica.merge_call(create)
            else:
                with self._scope_strategy.scope():
                    create()
        return list(sets[index])

    # ------------------------------------------------------------ building
    def build(self, x: Any) -> None:
        """Builds the model (default step) and the optimizer slots from a sample input batch.

        Args:
          x: a sample input batch (the inputs only, for the default step).
        """
        with self._scope_strategy.scope():
            if x is not None and (not getattr(self.model, "built", True) or not self.model.variables):
                call_with_training(self.model, self.cast(x), False)
            if self._custom_step is None and self.optimizer is not None and self.trainable_variables():
                self.optimizer.build(self.trainable_variables())
            if self.ema_decay is not None and self.ema is None:
                from lamina.train.ema import WeightEMA

                if self._custom_step is not None and not getattr(self.model, "variables", None):
                    raise ValueError("Trainer: ema with a custom step needs the model built before fit")
                self.ema = WeightEMA(self.model, self.ema_decay)
        self._ckpt = None  # the checkpoint picks up what was just created

    def _prepare(self, sample_batch: Any, for_training: bool = True) -> None:
        """Builds what the step needs from a first batch, then makes the step function.

        The default step builds the model on the batch's inputs; an overridden
        ``compute_loss`` is run once eagerly on the batch (which builds whatever
        it calls; the metrics it touches are reset at the epoch start or
        restored); a custom ``step`` builds lazily, on its first trace.
        """
        batch = sample_batch
        if self.strategy is not None and not _is_host_batch(batch):
            batch = tf.nest.map_structure(lambda t: self.strategy.experimental_local_results(t)[0], batch)
        scalars = [t for t in tf.nest.flatten(batch) if getattr(t, "shape", None) is not None and len(t.shape) == 0]
        if scalars:
            raise ValueError(
                "Trainer: every tensor of a batch needs a leading batch dimension, got a scalar "
                f"{tf.as_dtype(scalars[0].dtype).name}; did you forget .batch() on the dataset?"
            )
        if self._custom_step is not None:
            self.build(None)
        elif type(self).compute_loss is not Trainer.compute_loss:
            if self._train_fn is None:
                with self._scope_strategy.scope():
                    self._loss_logs(tf.nest.map_structure(tf.convert_to_tensor, batch), training=False)
            self.build(None)
        else:
            self.build(self.unpack(batch)[0])
        self._compile(sample_batch, trace=for_training)

    def _compile(self, sample_batch: Any = None, trace: bool = True) -> None:
        if self._train_fn is not None:
            return
        signature = None
        if self.strategy is None and sample_batch is not None and _is_host_batch(sample_batch):
            # One trace for every batch size: the batch dimension is left open.
            def spec(t: Any) -> tf.TensorSpec:
                t = tf.convert_to_tensor(t)
                return tf.TensorSpec([None, *t.shape[1:]], t.dtype)

            signature = [tf.nest.map_structure(spec, sample_batch)]
        self._train_fn = tf.function(lambda batch: self._step_graph(batch, True), jit_compile=self.jit_compile,
                                     reduce_retracing=True, input_signature=signature, autograph=self.autograph)
        if signature is not None and trace:
            # Trace now, before any restore: whatever the step creates (optimizer slots, gradient
            # accumulators, lazily built layers) exists when the checkpoint is read back.
            self._train_concrete = self._train_fn.get_concrete_function()
            self._train_specs = tf.nest.flatten(signature)

    def step_graph(self) -> Optional[tf.Graph]:
        """The traced training step's graph (``None`` before the first step or without a fixed signature)."""
        if self._train_concrete is not None:
            return self._train_concrete.graph
        try:
            return self._train_fn.get_concrete_function().graph if self._train_fn is not None else None
        except (TypeError, ValueError):
            return None

    # ------------------------------------------------------------- running
    @exclusive
    def train_step(self, x: Any, y: Any = None) -> Dict[str, tf.Tensor]:
        """Runs one compiled training step.

        Args:
          x: a batch, or its inputs when ``y`` is given. Under a strategy,
            either a global batch (tensors or arrays, split over the replicas
            here) or an element of a distributed dataset.
          y: the labels, if ``x`` holds only the inputs.

        Returns:
          ``{name: scalar tensor}``: this step's logged values (global-batch
          means; reading one waits for the step).

        Raises:
          TrainingError: with ``check_numerics``, after a non-finite step.
        """
        batch = x if y is None else (x, y)
        if self._train_fn is None:
            self._prepare(batch)
        if self.strategy is not None and _is_host_batch(batch) and self.num_replicas > 1:
            batch = next(iter(distribute_lib.distribute_dataset(self.strategy, tf.data.Dataset.from_tensors(batch))))
        self._last_batch = batch
        self.last_batch_size = self._batch_size(batch)
        out = self._call_train_fn(batch)
        self._train_logs.update(out["sums"], out["weight"])
        if self.check_numerics:
            self.check_finite()
        return out["means"]

    def _call_train_fn(self, batch: Any) -> Dict[str, Any]:
        """Runs the step; with a full input signature, its one concrete function directly.

        Calling the concrete function skips ``tf.function``'s per-call argument
        binding (~0.1-0.2 ms, 5-7% of a small model's step). A concrete function
        does not check shapes itself, so every input is checked against the
        signature here; anything that does not match (or is not a tensor) goes
        through the ``tf.function``, which converts it or raises its clear error.
        """
        if self._train_concrete is None and getattr(self._train_fn, "input_signature", None) is not None:
            self._train_concrete = self._train_fn.get_concrete_function()
            self._train_specs = tf.nest.flatten(self._train_fn.input_signature)
        if self._train_concrete is not None:
            flat = tf.nest.flatten(batch)
            if len(flat) == len(self._train_specs) and all(
                isinstance(t, tf.Tensor) and s.is_compatible_with(t) for t, s in zip(flat, self._train_specs)
            ):
                return self._train_concrete(batch)
        try:
            return self._train_fn(batch)
        except (TypeError, ValueError) as e:
            if not self._train_specs or "Binding inputs" not in str(e) and "Can not cast" not in str(e) \
                    and "incompatible" not in str(e).lower():
                raise

            def describe(t: Any) -> str:
                return f"{tuple(t.shape)} {tf.as_dtype(t.dtype).name}" if hasattr(t, "shape") else type(t).__name__

            expected = ", ".join(f"{tuple(s.shape)} {s.dtype.name}" for s in self._train_specs)
            got = ", ".join(describe(t) for t in tf.nest.flatten(batch))
            raise ValueError(
                f"Trainer: the training step was compiled for batches of shape/dtype [{expected}] "
                f"(fixed at the first batch; None = any batch size), got [{got}]"
            ) from None

    def check_finite(self) -> None:
        """Raises if a step since the start had a non-finite logged value (its update was not applied).

        Raises:
          TrainingError: naming the step, and the first module with a non-finite
            output on the last batch when one is found.
        """
        bad = int(self._first_bad_step.numpy())
        if bad < 0:
            return
        where = ""
        if self._custom_step is None and self._last_batch is not None:
            batch = self._last_batch
            if self.strategy is not None and not _is_host_batch(batch):
                batch = tuple(self.strategy.experimental_local_results(t)[0] for t in batch)
            from lamina.train.numerics import first_non_finite

            first = first_non_finite(self.model, self.cast(self.unpack(batch)[0]))
            where = f"; first non-finite output: {first}" if first else ""
        raise TrainingError(f"non-finite loss or gradient at step {bad}{where}")

    # ---------------------------------------------------------------- fit
    def default_callbacks(self) -> List[cb.Callback]:
        """The standard callbacks of this Trainer's settings, in the order they run.

        Returns:
          Learning-rate logging; the non-finite check; early stopping (with
          ``patience``); with a ``run_dir``: the best checkpoint, the latest
          checkpoints, ``metrics.jsonl``, TensorBoard and ``history.png``; the
          progress bar and epoch lines (unless ``quiet``).
        """
        out: List[cb.Callback] = [cb.NonFiniteCheck()]
        if self.optimizers:
            out.insert(0, cb.LearningRateLogger())
        if self.patience is not None:
            out.append(cb.EarlyStopping(self.monitor, self.monitor_mode, self.patience))
        if self.run_dir:
            out += [cb.MetricsLog()]
            if self.tensorboard:
                out.append(cb.TensorBoard())
            out += [cb.BestCheckpoint(self.monitor, self.monitor_mode, default_tie_break(self.monitor)),
                    cb.Checkpointing(self.checkpoint_every),
                    cb.HistoryPlot(monitor=self.monitor, mode=self.monitor_mode)]
        if not self.quiet:
            out.append(cb.ProgressBar(self.log_every))
        return out

    @exclusive
    def fit(
        self,
        train: Any,
        validation: Any = None,
        epochs: int = 1,
        *,
        batch_size: Optional[int] = None,
        steps_per_epoch: Optional[int] = None,
        max_steps: Optional[int] = None,
        callbacks: Sequence[cb.Callback] = (),
    ) -> List[Logs]:
        """Trains for ``epochs`` epochs in all, resuming from ``run_dir`` if it holds a checkpoint.

        Args:
          train: a lamina ``DataSet`` or arrays ``(x, y)`` / ``x`` (with
            ``batch_size``; reshuffled every epoch from the seed), a function
            ``(epoch, skip_batches) -> Dataset`` whose order is a pure function
            of the epoch, or a ``tf.data.Dataset`` of batches.
          validation: evaluated after each epoch (same kinds; logged as ``val_*``).
          epochs: total number of epochs (counting those already done).
          batch_size: for a ``DataSet`` or arrays.
          steps_per_epoch: cut epochs to this many steps (default: all batches).
          max_steps: stop after this many steps in total.
          callbacks: more callbacks for this call (after the standard ones).

        Returns:
          The history: one dict of epoch logs per epoch.

        Raises:
          ValueError / TypeError: for bad arguments or data.
          TrainingError: on a non-finite loss (the last finite checkpoint is kept).
          CheckpointError: if a checkpoint cannot be written or none is intact.
          KeyboardInterrupt: on SIGINT, after the callbacks saved what they keep
            (``"at step N; checkpoint saved: PATH"``).
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"Trainer.fit: epochs must be an int >= 1, got {epochs!r}")
        data = epoch_data(train, batch_size, self.seed)
        val = None if validation is None else eval_data(validation, batch_size)
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch or data.steps
        if data.note and not self.quiet and self.is_chief:
            print(f"lamina: note: {data.note}", flush=True)
        self._prepare(data.sample())
        hooks = cb.CallbackList(self.default_callbacks() + self.user_callbacks + list(callbacks), self)
        self._use_callbacks(hooks)
        self.history, self.stop_training = [], False
        self._resume_state: Optional[List[Optional[str]]] = None
        hooks.on_train_begin()
        step = start = int(self.step.numpy())
        try:
            while int(self.epoch.numpy()) < epochs and not self.stop_training:
                epoch, done = int(self.epoch.numpy()), int(self.step_in_epoch.numpy())
                if done == 0:
                    self.reset_metrics()
                hooks.on_epoch_begin(epoch)
                t0, examples, finished = time.perf_counter(), 0, True
                for batch in distribute_lib.distribute_dataset(self.strategy, data.epoch(epoch, done)):
                    logs = self.train_step(batch)
                    step, done, examples = step + 1, done + 1, examples + self.last_batch_size
                    hooks.on_step_end(step, logs)
                    if max_steps and step >= max_steps:
                        finished = self.steps_per_epoch is not None and done >= self.steps_per_epoch
                        break
                    if self.stop_training or (steps_per_epoch and done >= steps_per_epoch):
                        break
                if not finished:
                    break  # cut short by max_steps: the position is checkpointed, no epoch record
                elapsed = time.perf_counter() - t0
                logs = {"epoch": epoch + 1, "step": step, **self.epoch_logs()}
                if val is not None:
                    logs.update({f"val_{k}": v for k, v in self.evaluate(val).items()})
                logs.update(time=round(elapsed, 3), images_per_sec=round(examples / elapsed, 1) if elapsed > 0 else 0.0)
                self.epoch.assign_add(1)
                self.step_in_epoch.assign(0)
                self.history.append(logs)
                hooks.on_epoch_end(epoch, logs)
                if max_steps and step >= max_steps:
                    break
        except KeyboardInterrupt:
            notes = hooks.on_interrupt()
            raise KeyboardInterrupt(f"at step {int(self.step.numpy())}" + "".join(f"; {n}" for n in notes)) from None
        self.steps_run = step - start
        hooks.on_train_end()
        return self.history

    def _batch_size(self, batch: Any) -> int:
        first = tf.nest.flatten(batch)[0]
        if self.strategy is not None and not isinstance(first, (tf.Tensor, np.ndarray)):
            return sum(int(t.shape[0]) for t in self.strategy.experimental_local_results(first))
        return int(first.shape[0])

    def reset_metrics(self) -> None:
        """Zeroes the epoch's running means and metrics."""
        self._train_logs.reset()
        for m in self.metrics:
            m.reset()

    def epoch_logs(self) -> Dict[str, float]:
        """The epoch so far: the mean of every logged scalar, then each metric's result (a host sync)."""
        out = self._train_logs.result()
        for m in self.metrics:
            out[m.name] = float(m.result())
        return out

    @property
    def _active_metrics(self) -> List[Any]:
        return getattr(self, "_metrics_now", self.metrics)

    # ------------------------------------------------------------ evaluation
    @exclusive
    def evaluate(self, data: Iterable, extra_metrics: Sequence[Any] = (), batch_size: Optional[int] = None) -> Dict[str, float]:
        """Computes the mean loss (every logged scalar) and metrics over a dataset.

        With ``ema``, the averaged weights are evaluated.

        Args:
          data: batches (a ``tf.data.Dataset`` or iterable), a lamina
            ``DataSet`` (its validation split, else test), or ``(x, y)`` arrays.
          extra_metrics: more metric objects to update (e.g. a ``ConfusionMatrix``).
          batch_size: for a ``DataSet`` or arrays (default 256).

        Returns:
          ``{"loss": ..., "<metric name>": ...}`` as Python floats.
        """
        metrics = list(self.metrics) + list(extra_metrics)
        for m in metrics:
            m.reset()
        self._eval_logs.reset()
        key = tuple(id(m) for m in metrics)  # extra metrics change the traced graph
        batches = distribute_lib.distribute_dataset(self.strategy, eval_data(data, batch_size))
        import contextlib

        averaged = self.ema.averaged() if self.ema is not None else contextlib.nullcontext()
        with averaged:
            for batch in batches:
                if key not in self._eval_fns:
                    if self._train_fn is None:
                        self._prepare(batch, for_training=False)
                    self._eval_fns[key] = tf.function(lambda b: self._step_graph(b, False), reduce_retracing=True,
                                                      autograph=self.autograph)
                self._metrics_now = metrics
                try:
                    out = self._eval_fns[key](batch)
                    self._eval_logs.update(out["sums"], out["weight"])
                finally:
                    del self._metrics_now
        out = self._eval_logs.result()
        for m in self.metrics:
            out[m.name] = float(m.result())
        return out

    @exclusive
    def predict(self, data: Iterable) -> np.ndarray:
        """Returns the model's float32 outputs for every batch of ``data`` (x or (x, y)).

        Args:
          data: batches of inputs, or of ``(inputs, labels)``.

        Returns:
          The concatenated outputs as a NumPy array.
        """
        outs = []
        for batch in data:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            if self._predict_fn is None:
                self.build(x)
                self._predict_fn = tf.function(
                    lambda t: StepContext.to_float32(call_with_training(self.model, self.cast(t), False)),
                    reduce_retracing=True, autograph=self.autograph)
            outs.append(self._predict_fn(x).numpy())
        return np.concatenate(outs, axis=0) if outs else np.zeros((0,))

    def model_variables(self) -> Dict[str, tf.Variable]:
        """The model's variables by attribute path (for histograms and reports)."""
        paths = getattr(self.model, "variable_paths", None)
        if callable(paths):
            return paths()
        return {v.name: v for v in getattr(self.model, "variables", [])}

    # ------------------------------------------------------------ checkpoints
    def _use_callbacks(self, hooks: cb.CallbackList) -> None:
        stateful = hooks.stateful()
        if stateful.keys() != self._ckpt_callbacks.keys() or any(stateful[k] is not self._ckpt_callbacks[k] for k in stateful):
            self._ckpt_callbacks = stateful
            self._ckpt, self._managers = None, {}

    def checkpoint(self) -> tf.train.Checkpoint:
        """The ``tf.train.Checkpoint`` of everything a resumed run needs.

        Returns:
          A checkpoint of the model, optimizer(s), counters, log and metric
          state, loss scale, gradient accumulators, weight average and the
          stateful callbacks.
        """
        if self._ckpt is None:
            parts: Dict[str, Any] = dict(model=self.model, step=self.step, epoch=self.epoch,
                                         step_in_epoch=self.step_in_epoch, metrics=list(self.metrics),
                                         train_logs=self._train_logs)
            if len(self.optimizers) == 1:
                parts["optimizer"] = next(iter(self.optimizers.values()))
            elif self.optimizers:
                parts["optimizers"] = dict(self.optimizers)
            if self.loss_scale is not None:
                parts["loss_scale"] = self.loss_scale
            if self.grad_accum_steps > 1:
                parts.update(accum=self._accum, micro_step=self.micro_step)
            if self.ema is not None:
                parts["ema"] = self.ema
            if self._ckpt_callbacks:
                parts["callbacks"] = dict(self._ckpt_callbacks)
            self._ckpt = tf.train.Checkpoint(**parts)
            self._managers = {}
        return self._ckpt

    def manager(self, sub: str = "checkpoints") -> Any:
        """The checkpoint manager of ``run_dir/<sub>`` (``"checkpoints"`` or ``"best"``).

        Raises:
          ValueError: without a ``run_dir``.
        """
        if not self.run_dir:
            raise ValueError("Trainer: checkpoints need a run_dir")
        ckpt = self.checkpoint()
        if sub not in self._managers:
            from lamina.train.checkpoints import SafeCheckpointManager

            keep = self.keep_checkpoints if sub == "checkpoints" else 1
            folder = distribute_lib.worker_dir(self.run_dir, sub, self.strategy)
            self._managers[sub] = SafeCheckpointManager(ckpt, folder, max_to_keep=keep)
        return self._managers[sub]

    @exclusive
    def save(self) -> Optional[str]:
        """Writes a checkpoint now, atomically (no-op without a ``run_dir``).

        Returns:
          The checkpoint path, or ``None``.

        Raises:
          CheckpointError: if it cannot be written (full disk, unwritable
            folder); the earlier checkpoints are kept.
        """
        if not self.run_dir:
            return None
        os.makedirs(self.run_dir, exist_ok=True)
        return self.manager("checkpoints").save(checkpoint_number=int(self.step.numpy()))

    @exclusive
    def restore(self, path: Optional[str] = None) -> Optional[str]:
        """Restores the latest intact checkpoint of ``run_dir`` (or ``path``).

        Each checkpoint is verified first, newest first; a corrupt or truncated
        one is reported (``lamina: warning: ...`` on standard error) and skipped.

        Args:
          path: a specific checkpoint prefix; default the latest in ``run_dir/checkpoints``.

        Returns:
          The restored path, or ``None`` when there was nothing to restore.

        Raises:
          CheckpointError: when ``run_dir`` has checkpoints but none is intact.
        """
        if path is None:
            if not self.run_dir:
                return None
            from lamina.train.checkpoints import latest_good_checkpoint

            path = self.manager("checkpoints").latest_good()
            if not self.is_chief:
                # Every worker resumes from the run's (the chief's) checkpoint when it
                # can see it (shared file system), else from its own identical copy.
                shared = os.path.join(self.run_dir, "checkpoints")
                path = (latest_good_checkpoint(shared, warn=None) if os.path.isdir(shared) else None) or path
        if not path:
            return None
        self._create_saved_variables(path)
        self.checkpoint().restore(path).expect_partial()
        return path

    def _create_saved_variables(self, path: str) -> None:
        """Creates, before a restore, the variables this Trainer makes lazily (log means, accumulators).

        TensorFlow restores a variable created after ``restore`` only when it
        appears, from the checkpoint's path as it is then: resuming at an
        epoch's end saves that number again before any step, and the log
        means would be lost (or the read would fail).
        """
        try:
            shapes = tf.train.load_checkpoint(path).get_variable_to_shape_map()
        except (tf.errors.OpError, ValueError):
            return
        self._train_logs.ensure_saved(shapes, "train_logs")
        found = {}
        for key, shape in shapes.items():
            parts = key.split("/")
            if len(parts) == 5 and parts[0] == "accum" and parts[1].isdigit() and parts[2].isdigit():
                found[(int(parts[1]), int(parts[2]))] = shape
        if self.grad_accum_steps > 1 and found and not any(self._accum):
            with self._scope_strategy.scope():
                for i in range(max(k[0] for k in found) + 1):
                    shapes_i = [found[(i, j)] for j in range(len([k for k in found if k[0] == i]))]
                    self._accum.append([tf.Variable(tf.zeros(s, tf.float32), trainable=False, name="accum")
                                        for s in shapes_i])
            self._ckpt = None  # the checkpoint picks them up

    def resume(self) -> Optional[str]:
        """Restores the run's latest checkpoint once per ``fit`` (callbacks that need the resumed state call it).

        Returns:
          The checkpoint restored in this ``fit``, or ``None``.
        """
        state = getattr(self, "_resume_state", None)
        if state is None:
            state = self._resume_state = [self.restore()]
        return state[0]

    # --------------------------------------------------------------- logging
    def log(self, message: str) -> None:
        """Prints ``message`` on the chief, unless ``quiet``."""
        if not self.quiet and self.is_chief:
            print(message, flush=True)
