"""What the ``lamina`` commands do, as functions: ``train_run``, ``evaluate_run``, ``summarize``.

The command line is a thin adapter over these: ``lamina train --epochs 5`` is
``lamina.app.train_run(RunConfig(epochs=5))`` plus printing. Use them from
Python to script experiments::

    from lamina.app import train_run
    from lamina.train.config import RunConfig

    result = train_run(RunConfig(model="mlp", data="digits", epochs=5), quiet=True)
    print(result.results["test_accuracy"], result.run_dir)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from lamina import onednn
from lamina.train.config import ConfigError, RunConfig, RunRecord

IMAGE_MODELS = ("convnet", "mobilenet_v2", "unet")  # with resnet* and vit*: models that need (H, W, C) examples

__all__ = ["TrainResult", "EvalResult", "train_run", "evaluate_run", "summarize", "make_optimizer",
           "latest_run", "resolve_model", "apply_freeze", "init_weights"]


@dataclasses.dataclass
class TrainResult:
    """What :func:`train_run` did.

    Attributes:
      run_dir: the run directory.
      record: the run's record (``config.json``).
      history: one dict of logs per epoch (the resumed ones included).
      results: final test metrics and timings (``results.json``).
      trained: whether any step ran in this call (``False`` for a finished run re-evaluated).
    """

    run_dir: str
    record: RunRecord
    history: List[Dict[str, Any]]
    results: Dict[str, Any]
    trained: bool


@dataclasses.dataclass
class EvalResult:
    """What :func:`evaluate_run` measured.

    Attributes:
      split: the split evaluated.
      loss: the mean loss.
      accuracy: the accuracy.
      confusion: the confusion matrix (rows: true class).
      class_names: one name per class.
      checkpoint: the checkpoint evaluated.
    """

    split: str
    loss: float
    accuracy: float
    confusion: Any
    class_names: List[str]
    checkpoint: str


def resolve_model(name: str) -> str:
    """Returns the registered model name for ``name``.

    Raises:
      ConfigError: for an unknown model, listing the known ones.
    """
    from lamina.models.registry import model_names

    key = str(name).lower()
    if key not in model_names():
        raise ConfigError(f"unknown model {name!r}; expected one of {', '.join(model_names())}")
    return key


def make_optimizer(config: RunConfig, steps_per_epoch: int) -> Any:
    """Builds the optimizer and learning-rate schedule a configuration asks for.

    Args:
      config: the run configuration (``optimizer``, ``lr``, ``schedule``,
        ``warmup_epochs``, ``weight_decay``, ``clip_norm``, ``epochs``).
      steps_per_epoch: optimizer steps per epoch.

    Returns:
      A :mod:`lamina.optim` optimizer (it owns the gradient clipping).
    """
    from lamina import optim
    from lamina.optim import schedules

    total = config.epochs * steps_per_epoch
    lr = config.lr
    if config.schedule == "constant":
        schedule = schedules.constant(lr)
    elif config.schedule == "cosine":
        warmup = min(config.warmup_epochs * steps_per_epoch, max(0, total - 1))
        schedule = schedules.cosine(lr, total_steps=total, warmup_steps=warmup)
    elif config.schedule == "step":
        schedule = schedules.step_decay(lr, step_size=max(1, total // 3), gamma=0.1)
    else:
        schedule = schedules.exponential(lr, decay_rate=0.5, decay_steps=max(1, total // 4))
    kwargs: Dict[str, Any] = {}
    if config.weight_decay is not None:
        kwargs["weight_decay"] = config.weight_decay
    if config.optimizer == "sgd":
        kwargs["momentum"] = 0.9
    if config.clip_norm is not None:
        kwargs["global_clipnorm"] = config.clip_norm
    return optim.get(config.optimizer, learning_rate=schedule, **kwargs)


def latest_run(model: str, data: str, root: str = "runs") -> Optional[str]:
    """Returns the newest run directory under ``root`` that trained ``model`` on ``data``.

    Any folder with a ``config.json`` counts (auto-named or ``--run-dir`` ones
    inside ``root``); the newest by its last checkpoint (or config) time wins.

    Args:
      model: the model name.
      data: the data source as given.
      root: the folder to look in.

    Returns:
      The path, or ``None``.
    """
    if not os.path.isdir(root):
        return None
    found: List[Tuple[float, str]] = []
    for name in os.listdir(root):
        folder = os.path.join(root, name)
        path = os.path.join(folder, "config.json")
        try:
            with open(path) as f:
                cfg = json.load(f)
        except (OSError, ValueError):
            continue
        from lamina.data.load import split_source_options

        same_data = split_source_options(str(cfg.get("data", "")))[0] == split_source_options(data)[0] if isinstance(cfg, dict) else False
        if not isinstance(cfg, dict) or str(cfg.get("model", "")).lower() != model.lower() or not same_data:
            continue
        ckpt = os.path.join(folder, "checkpoints", "checkpoint")
        found.append((os.path.getmtime(ckpt if os.path.exists(ckpt) else path), folder))
    return max(found)[1] if found else None


def _head(model: Any) -> Any:
    from lamina.models.heads import head_of

    return head_of(model)


def apply_freeze(model: Any, spec: str) -> List[str]:
    """Freezes parts of a model (``--freeze``).

    Args:
      model: a built lamina model.
      spec: ``"backbone"`` (every direct sub-module but the head) or
        comma-separated attribute paths (``"blocks/0,blocks/1"``).

    Returns:
      The paths frozen.

    Raises:
      ConfigError: for a path that names no module.
    """
    from lamina.module import Module

    frozen = []
    if spec.strip().lower() == "backbone":
        head = _head(model)
        for name, child in vars(model).items():
            modules = child if isinstance(child, (list, tuple)) else [child]
            for i, m in enumerate(modules):
                if isinstance(m, Module) and m is not head:
                    m.trainable = False
                    frozen.append(name if len(modules) == 1 and not isinstance(child, (list, tuple)) else f"{name}/{i}")
        return frozen
    for path in [p.strip() for p in spec.split(",") if p.strip()]:
        target: Any = model
        for part in path.split("/"):
            try:
                target = target[int(part)] if part.isdigit() else getattr(target, part)
            except (AttributeError, IndexError, TypeError):
                raise ConfigError(f"--freeze {path!r}: {type(model).__name__} has no module at {path!r}") from None
        if not isinstance(target, Module):
            raise ConfigError(f"--freeze {path!r}: that is a {type(target).__name__}, not a module")
        target.trainable = False
        frozen.append(path)
    return frozen


def init_weights(model: Any, source: str) -> List[str]:
    """Loads starting weights into a built model (``--init-from``).

    Args:
      model: the built model.
      source: a run directory (its best checkpoint) or a ``.safetensors`` file
        written by ``lm.save_weights`` / ``lamina convert``.

    Returns:
      Notes for the user (the head dropped because its size differs, ...).

    Raises:
      ConfigError: for a missing source, or weights that do not fit the model
        (other than the head).
    """
    import numpy as np

    if os.path.isdir(source):
        from lamina.train.run import load_run

        src_model, _ = load_run(source, "best")
        weights = src_model.get_weights()
    elif os.path.isfile(source):
        from lamina.export.safetensors import load_file

        weights = {k: np.asarray(v) for k, v in load_file(source).items()}
    else:
        raise ConfigError(f"--init-from {source!r}: no such run directory or weights file")
    own = model.get_weights()
    head_paths = set()
    head = _head(model)
    if head is not None:
        head_ids = {id(v) for v in head.variables}
        head_paths = {p for p, v in model.variable_paths().items() if id(v) in head_ids}
    notes, load = [], {}
    for key, value in weights.items():
        if key not in own:
            continue
        if tuple(value.shape) != tuple(own[key].shape):
            if key in head_paths:
                notes.append(f"dropped the source's {key} {tuple(value.shape)}: the new head has {tuple(own[key].shape)}")
                continue
            raise ConfigError(f"--init-from {source!r}: {key} has shape {tuple(value.shape)} there, "
                              f"{tuple(own[key].shape)} in this model")
        load[key] = value
    missing = sorted(set(own) - set(load) - head_paths)
    if not load or missing:
        raise ConfigError(
            f"--init-from {source!r}: {len(load)} of the model's {len(own)} variables found there"
            + (f"; missing {missing[:5]}{' ...' if len(missing) > 5 else ''}" if missing else "")
        )
    model.set_weights(load, strict=False)
    notes.insert(0, f"initialized {len(load)} of {len(own)} variables from {source}")
    return notes


def train_run(config: RunConfig, *, resume: bool = False, quiet: bool = False,
              strategy: Any = None) -> TrainResult:
    """Trains a model as ``lamina train`` does: data, model, Trainer, test evaluation, artifacts.

    The run directory is locked while this runs (:func:`lamina.train.run.run_lock`):
    a second ``train_run`` on it, in this process or another, is refused.

    Args:
      config: the run configuration.
      resume: with no ``run_dir``, continue the newest run of this model and data under ``runs/``.
      quiet: print only warnings (the caller prints the result).
      strategy: a strategy already built (default: built from ``config.strategy``).

    Returns:
      The :class:`TrainResult`.

    Raises:
      ConfigError: for an unusable configuration.
      RunDirError: for a run directory holding another run, or in use by another process.
      DataError / TrainingError / CheckpointError: from the data, the training or the checkpoints.
    """
    with contextlib.ExitStack() as held:
        return _train_run(config, resume=resume, quiet=quiet, strategy=strategy, held=held)


def _train_run(config: RunConfig, *, resume: bool, quiet: bool, strategy: Any,
               held: contextlib.ExitStack) -> TrainResult:
    t_start = time.perf_counter()
    if config.strategy == "multiworker" and config.run_dir is None:
        raise ConfigError("--strategy multiworker needs --run-dir (the same folder for every worker)")
    if strategy is None and config.strategy != "default":
        # First: MultiWorkerMirroredStrategy must exist before TensorFlow runs any op.
        from lamina.train.distribute import DistributeError, make_strategy

        try:
            strategy = make_strategy(config.strategy)
        except DistributeError as e:
            raise ConfigError(f"--strategy {config.strategy}: {e}") from None
    import lamina as lm
    from lamina import data as ld
    from lamina.models.registry import create_model
    import tensorflow as tf

    from lamina.train.run import check_compatible, checkpoint_info, default_run_dir, write_record

    config = config.replace(model=resolve_model(config.model))
    say: Callable[..., None] = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    lm.set_seed(config.seed)
    dataset = ld.load(config.data, image_size=tuple(config.image_size) if config.image_size else None,
                      validation_split=config.val_split, seed=config.seed, on_bad_file=config.on_bad_file)
    run_dir = config.run_dir
    if resume and run_dir is None:
        run_dir = latest_run(config.model, config.data)
        if run_dir is None:
            raise ConfigError(f"--resume: no earlier run of {config.model} on {config.data} under runs/")
    run_dir = run_dir or default_run_dir(config.model, config.data)
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ConfigError(f"--run-dir {run_dir!r} is a file, not a folder")
    config = config.replace(run_dir=run_dir)
    from lamina.train.run import run_lock

    lock = held.enter_context(run_lock(run_dir, strategy))  # released however train_run ends
    from lamina.fileio import remove_stale_temporaries

    remove_stale_temporaries(lock.folder)  # what a killed run left half-written in the folder we hold
    model_kwargs: Dict[str, Any] = {}
    shape = [int(d) for d in dataset.input_shape]
    if config.model == "vit":
        model_kwargs["image_size"] = shape[:2]
    if config.model == "transformer":
        features = 1
        for d in shape[1:]:
            features *= d
        model_kwargs["sequence_shape"] = [shape[0], features]
    if config.model == "gpt":
        model_kwargs["max_len"] = shape[0]  # the text's window (the vocabulary is num_classes)
    _check_task(config.model, dataset)
    if config.model in IMAGE_MODELS or config.model.startswith(("resnet", "vit")):
        if len(shape) != 3:
            raise ConfigError(
                f"--model {config.model} needs images (height, width, channels); {config.data!r} has examples of "
                f"shape {tuple(shape)}: use --model mlp (or --model transformer) for such data"
            )
    from lamina.train.run import has_checkpoint, read_record

    fresh = not has_checkpoint(run_dir)
    weights_file = config.init_from if config.init_from and not os.path.isdir(config.init_from) else None
    pretrained = None
    if weights_file and not fresh:
        # Resuming: the weights come from the checkpoint; model and normalization as recorded.
        recorded = read_record(run_dir)
        model_kwargs, dataset.preprocessing = dict(recorded.model_kwargs), dict(recorded.preprocessing)
    elif weights_file:
        pretrained = _from_pretrained(config, weights_file, dataset, strategy)
        model_kwargs["source"] = pretrained[1].built_for
    record = RunRecord(
        config=config, num_classes=int(dataset.num_classes), input_shape=[int(d) for d in dataset.input_shape],
        class_names=[str(c) for c in dataset.class_names], preprocessing=dataset.preprocessing,
        data_name=dataset.name, model_kwargs=model_kwargs, lamina_version=lm.__version__,
    )
    check_compatible(run_dir, record)
    steps_per_epoch = dataset.num_batches("train", config.batch_size)
    val_split = "validation" if dataset.splits.get("validation") else None
    def scope() -> Any:  # a fresh context each time: a strategy's scope object cannot be entered twice
        return strategy.scope() if strategy is not None else contextlib.nullcontext()

    with scope():
        model = pretrained[0] if pretrained else create_model(config.model, dataset.num_classes, **model_kwargs)
        optimizer = make_optimizer(config, -(-steps_per_epoch // config.grad_accum))
    loss = lm.losses.SoftmaxCrossEntropy(label_smoothing=config.label_smoothing)
    extra_callbacks: List[Any] = []
    mlflow_logger = None
    if config.mlflow:
        from lamina.train.callbacks.mlflow import MLflowLogger, _mlflow

        _mlflow()  # fail now, in one line, if mlflow is missing
        mlflow_logger = MLflowLogger(config.mlflow)
        extra_callbacks.append(mlflow_logger)
    trainer = lm.train.Trainer(
        model, optimizer, loss, metrics=["accuracy"], strategy=strategy, jit_compile=config.jit,
        precision=config.precision, grad_accum_steps=config.grad_accum, ema=config.ema, seed=config.seed,
        deterministic=config.deterministic, run_dir=run_dir, checkpoint_every=config.checkpoint_every,
        keep_checkpoints=config.keep_checkpoints, monitor="val_accuracy" if val_split else "accuracy",
        patience=config.patience, quiet=quiet, check_numerics=config.check_numerics, callbacks=extra_callbacks,
    )
    record.precision_resolved = trainer.precision.name
    if pretrained:
        for note in pretrained[1].notes:
            say(f"note: {note}")
        say(f"note: {pretrained[1].summary()}")
    if (fresh and config.init_from and not weights_file) or config.freeze:
        trainer.build(dataset.normalize(dataset.sample_raw(1, "train")[0]))  # a model input, as the batches give
    if fresh and config.init_from and not weights_file:
        for note in init_weights(model, config.init_from):
            say(f"note: {note}")
    if config.freeze:
        say(f"frozen: {', '.join(apply_freeze(model, config.freeze))}")
    if trainer.is_chief:
        write_record(run_dir, record)
    say(
        f"training {config.model} on {dataset.name} ({dataset.splits.get('train')} train / "
        f"{dataset.splits.get('validation', 0)} validation / {dataset.splits.get('test', 0)} test examples, "
        f"input {tuple(dataset.input_shape)}, {dataset.num_classes} classes) for {config.epochs} epochs; "
        f"precision {trainer.precision.name}; run dir {run_dir}"
    )
    if onednn.enabled_by_lamina():
        say("note: TensorFlow's oneDNN CPU kernels are on: lamina turns them on for this AVX2 CPU, where TensorFlow "
            f"would run its slower Eigen kernels ({onednn.ENV}=0 keeps Eigen)")
    augment = config.augment or False

    def train_data(epoch: int, skip_batches: int) -> Any:
        return dataset.batches("train", config.batch_size, shuffle=True, seed=config.seed, epoch=epoch,
                               augment=augment, skip_batches=skip_batches)

    validation = dataset.batches(val_split, 256, shuffle=False) if val_split else None
    t_fit = time.perf_counter()
    history = trainer.fit(train_data, validation=validation, epochs=config.epochs,
                          steps_per_epoch=steps_per_epoch, max_steps=config.max_steps)
    fit_time = time.perf_counter() - t_fit
    trained = trainer.steps_run > 0
    if not trained and not fresh:
        say(f"run already finished ({len(history)} epochs); re-evaluated its checkpoint")
    results: Dict[str, Any] = {"epochs_run": len(history), "train_time_s": round(fit_time, 2)}
    if dataset.splits.get("test"):  # an empty test split has no accuracy (not "0.00%")
        with scope():  # a metric updated inside strategy.run lives in the strategy's scope
            confusion = lm.metrics.ConfusionMatrix(dataset.num_classes)
        test_batches = dataset.batches("test", 256, shuffle=False)
        # The test numbers reported are those of the checkpoint that evaluate/export/predict use by
        # default (best/); the last epoch's weights are reported beside them.
        final = trainer.evaluate(test_batches)
        results.update({f"final_test_{k}": v for k, v in final.items()})
        best = trainer.manager("best").latest_good()
        results["checkpoint"] = checkpoint_info(best, "best") if best else {"which": "latest", "epoch": len(history)}
        if best:
            parts = {"model": model, **({"ema": trainer.ema} if trainer.ema is not None else {})}
            tf.train.Checkpoint(**parts).restore(best).expect_partial()
        test = trainer.evaluate(test_batches, extra_metrics=[confusion])
        results.update({f"test_{k}": v for k, v in test.items()})
        matrix = confusion.result().numpy()
        if dataset.task != "language_model":  # no vocabulary x vocabulary table or plot of next tokens
            results["confusion_matrix"] = matrix.tolist()
        results.update(_task_results(dataset, matrix, test))
        if trainer.is_chief and dataset.task != "language_model":
            from lamina.train.plots import plot_confusion

            plot_confusion(matrix, os.path.join(run_dir, "confusion.png"), dataset.class_names)
            if mlflow_logger is not None:
                mlflow_logger.log_file(os.path.join(run_dir, "confusion.png"))
            if trainer.tensorboard:
                _tensorboard_test_images(trainer, dataset, matrix, run_dir)
    results["total_time_s"] = round(time.perf_counter() - t_start, 2)
    if trainer.is_chief:
        from lamina.fileio import atomic_write_json

        atomic_write_json(os.path.join(run_dir, "results.json"), results)
    return TrainResult(run_dir=run_dir, record=record, history=history, results=results, trained=trained)


def _check_task(model: str, dataset: Any) -> None:
    """Refuses a model and data of different tasks (a classifier on text, a GPT on images, ...).

    Raises:
      ConfigError: naming both and what would fit.
    """
    from lamina.models.registry import MODEL_TASKS, model_task

    wanted, got = model_task(model), getattr(dataset, "task", "classification")
    if wanted == got:
        return
    fits = [m for m, t in MODEL_TASKS.items() if t == got]
    hint = f"use --model {' or '.join(fits)}" if fits else "use a classifier (--model convnet, mlp, resnet18, ...)"
    what = {"language_model": "a text (.txt) file", "segmentation": "a segmentation folder (images/ + masks/)",
            "classification": "classification data"}
    raise ConfigError(f"--model {model} trains on {what[wanted]}, but {dataset.name!r} is {what[got]}: {hint}")


def _task_results(dataset: Any, matrix: Any, test: Dict[str, Any]) -> Dict[str, Any]:
    """What the test split says beyond loss and accuracy: mIoU (segmentation), perplexity (language model)."""
    import math

    from lamina.metrics import iou_from_confusion

    if dataset.task == "segmentation":
        per_class, mean = iou_from_confusion(matrix)
        return {"test_miou": mean, "test_iou": {n: v for n, v in zip(dataset.class_names, per_class)}}
    if dataset.task == "language_model":
        return {"test_perplexity": math.exp(min(float(test["loss"]), 50.0))}
    return {}


def _from_pretrained(config: RunConfig, path: str, dataset: Any, strategy: Any) -> Tuple[Any, Any]:
    """Builds ``config.model`` from a torchvision/timm/Keras/HF (or converted) weights file (``--init-from FILE``).

    The model gets the options the weights need, the checkpoint's head is
    dropped when its size differs, and the data is normalized the way the
    weights expect (their mean/std, in the data's own value range).

    Returns:
      ``(model, report)`` (:class:`lamina.interop.LoadReport`).

    Raises:
      ConfigError: for a missing file or weights that do not fit ``--model``.
    """
    from lamina import interop

    if not os.path.isfile(path):
        raise ConfigError(f"--init-from {path!r}: no such run directory or weights file")
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    options = {"image_size": int(dataset.input_shape[0])} if config.model.startswith("vit") else {}
    try:
        with scope:
            model, report = interop.init_from(path, config.model, num_classes=dataset.num_classes, **options)
    except ValueError as e:
        raise ConfigError(f"--init-from {path!r}: {e}") from None
    if report.preprocessing:
        dataset.preprocessing = _rescaled_preprocessing(dataset.preprocessing, report.preprocessing)
    return model, report


def _rescaled_preprocessing(own: Dict[str, Any], wanted: Dict[str, Any]) -> Dict[str, Any]:
    """The weights' normalization expressed for this data's raw range.

    ``wanted`` maps raw values in ``[0, raw_max]`` to ``(raw * scale - mean) / std``;
    the data's own ``scale`` maps its raw values to ``[0, 1]``. Keeping that scale,
    ``mean / (raw_max * scale)`` and ``std / (raw_max * scale)`` give the same model input.

    Raises:
      ConfigError: when the channel counts differ.
    """
    unit = float(wanted.get("raw_max", 255.0)) * float(wanted["scale"])
    if len(wanted["mean"]) != len(own["mean"]):
        raise ConfigError(f"--init-from: the weights expect {len(wanted['mean'])} input channels, "
                          f"the data has {len(own['mean'])}")
    out = dict(own)
    out["mean"] = [float(m) / unit for m in wanted["mean"]]
    out["std"] = [float(v) / unit for v in wanted["std"]]
    out.update({k: wanted[k] for k in ("resize", "crop", "interpolation") if k in wanted})  # for predict/exports
    return out


def _tensorboard_test_images(trainer: Any, dataset: Any, matrix: Any, run_dir: str) -> None:
    """Adds the test confusion matrix and a grid of test predictions to ``tensorboard/test``."""
    try:
        import tensorboard.summary.v2  # noqa: F401  (only its presence matters)
    except ImportError:
        return  # the TensorBoard callback already said so
    import numpy as np
    import tensorflow as tf

    from lamina.train import summaries

    step = len(trainer.history)
    writer = tf.summary.create_file_writer(os.path.join(run_dir, "tensorboard", "test"))
    names = [str(c) for c in dataset.class_names]
    summaries.write_image(writer, "confusion_matrix", summaries.confusion_matrix_image(matrix, names), step)
    shape = tuple(dataset.input_shape)
    if dataset.task == "classification" and (len(shape) == 3 and shape[-1] in (1, 3) or len(shape) == 2):
        x_raw, y = dataset.sample_raw(16, "test")
        if len(x_raw):
            predicted = trainer.predict([dataset.normalize(x_raw)]).argmax(-1)
            raw_max = dataset.preprocessing.get("raw_max")
            grid = summaries.sample_grid_image(np.asarray(x_raw), labels=list(y), predictions=list(predicted),
                                               class_names=names, raw_max=raw_max)
            summaries.write_image(writer, "samples", grid, step)
    writer.close()


def evaluate_run(run_dir: str, data: Optional[str] = None, split: str = "test", which: str = "best",
                 batch_size: int = 256) -> EvalResult:
    """Evaluates a run's checkpoint on a split of its data (or of another source).

    Args:
      run_dir: a directory written by ``lamina train``.
      data: another data source with the same input shape and classes.
      split: the split to evaluate.
      which: ``"best"`` or ``"latest"``.
      batch_size: evaluation batch size.

    Returns:
      The :class:`EvalResult`.

    Raises:
      ConfigError: for data that does not fit the model.
      RunDirError / CheckpointError: for a bad run directory or checkpoint.
    """
    import numpy as np

    import lamina as lm
    from lamina import data as ld
    from lamina.train.run import load_run_checkpoint

    model, record, used = load_run_checkpoint(run_dir, which)
    cfg = record.config
    source = data or cfg.data
    dataset = ld.load(source, image_size=tuple(cfg.image_size) if cfg.image_size else None,
                      validation_split=cfg.val_split, seed=cfg.seed, on_bad_file=cfg.on_bad_file)
    if list(dataset.input_shape) != list(record.input_shape):
        raise ConfigError(f"data {source!r} has input shape {tuple(dataset.input_shape)}, "
                          f"the model expects {tuple(record.input_shape)}")
    if dataset.num_classes != record.num_classes:
        raise ConfigError(f"data {source!r} has {dataset.num_classes} classes, the model has {record.num_classes}")
    if split in dataset.splits and not dataset.splits[split]:
        raise ConfigError(f"data {source!r}: the {split!r} split is empty (0 examples); nothing to evaluate")
    trainer = lm.train.Trainer(model, optimizer=None, loss=lm.losses.SoftmaxCrossEntropy(), metrics=["accuracy"], quiet=True)
    confusion = lm.metrics.ConfusionMatrix(dataset.num_classes)
    result = trainer.evaluate(dataset.batches(split, batch_size, shuffle=False), extra_metrics=[confusion])
    names = list(record.class_names) or [str(i) for i in range(dataset.num_classes)]
    return EvalResult(split=split, loss=result["loss"], accuracy=result["accuracy"],
                      confusion=confusion.result().numpy().astype(np.int64), class_names=names,
                      checkpoint=used)


def summarize(model_name: str, input_shape: Tuple[int, ...], num_classes: int = 10) -> Any:
    """Prints a registered model's summary table for an input shape.

    Args:
      model_name: a registered model name.
      input_shape: the per-example input shape.
      num_classes: the number of classes.

    Returns:
      The built model.
    """
    import lamina as lm
    from lamina.models.registry import create_model

    name = resolve_model(model_name)
    kwargs = {"image_size": list(input_shape[:2])} if name == "vit" else {}
    model = create_model(name, num_classes, **kwargs)
    lm.summary(model, tuple(input_shape))
    return model
