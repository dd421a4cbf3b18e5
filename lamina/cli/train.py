"""``lamina train`` (the main job), ``lamina evaluate`` and ``lamina summary``."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Dict, Optional

from lamina.cli.common import (
    CLIError, boolean, choice, fraction, nonneg_int, optional, positive_float, positive_int, dims, string,
)

__all__ = ["TRAIN_OPTIONS", "add_parsers", "handlers"]

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "step", "exponential")
PRECISION_CHOICES = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
STRATEGIES = ("default", "mirrored", "multiworker")

# name: (converter, default, help). Flags override the --config file, which overrides the defaults.
TRAIN_OPTIONS: Dict[str, tuple] = {
    "model": (string("--model"), "convnet", "model name (convnet, mlp, resnet18, resnet34, resnet50, ...)"),
    "data": (string("--data"), "digits", "data source: digits, a .npz, an IDX folder, an image folder, a .csv, mnist, cifar10, tfds:NAME"),
    "epochs": (positive_int("--epochs"), 20, "number of epochs"),
    "batch_size": (positive_int("--batch-size"), 32, "global batch size"),
    "lr": (positive_float("--lr"), 3e-3, "peak learning rate"),
    "optimizer": (choice("--optimizer", OPTIMIZERS), "adam", "optimizer: " + ", ".join(OPTIMIZERS)),
    "schedule": (choice("--schedule", SCHEDULES), "cosine", "learning-rate schedule: " + ", ".join(SCHEDULES)),
    "warmup_epochs": (nonneg_int("--warmup-epochs"), 1, "linear warm-up epochs (cosine schedule)"),
    "weight_decay": (optional(positive_float("--weight-decay")), None, "weight decay (decoupled for adamw)"),
    "label_smoothing": (fraction("--label-smoothing"), 0.0, "label smoothing for the cross-entropy"),
    "precision": (choice("--precision", PRECISION_CHOICES), "float32", "numeric precision: " + ", ".join(PRECISION_CHOICES)),
    "jit": (boolean("--jit"), False, "compile the step with XLA"),
    "seed": (nonneg_int("--seed"), 0, "random seed"),
    "deterministic": (boolean("--deterministic"), False, "bit-identical reruns (TF op determinism)"),
    "run_dir": (optional(string("--run-dir")), None, "run directory (default runs/<model>-<data>-<timestamp>)"),
    "val_split": (fraction("--val-split"), 0.1, "fraction of the training split held out for validation"),
    "augment": (optional(string("--augment")), None, "augmentations, e.g. crop or crop,flip"),
    "image_size": (optional(dims("--image-size")), None, "resize images to H,W (image folders)"),
    "checkpoint_every": (optional(positive_int("--checkpoint-every")), None, "also checkpoint every N steps"),
    "keep_checkpoints": (positive_int("--keep-checkpoints"), 3, "recent checkpoints to keep"),
    "patience": (optional(positive_int("--patience")), None, "early stopping patience in epochs"),
    "grad_accum": (positive_int("--grad-accum"), 1, "gradient accumulation steps"),
    "clip_norm": (optional(positive_float("--clip-norm")), None, "clip gradients to this global norm"),
    "strategy": (choice("--strategy", STRATEGIES), "default", "distribution: " + ", ".join(STRATEGIES)),
    "max_steps": (optional(positive_int("--max-steps")), None, "stop after N steps (smoke tests)"),
    "check_numerics": (boolean("--check-numerics"), False, "stop at the first non-finite loss/gradient and name the module"),
}


def _read_config_file(path: str) -> Dict[str, Any]:
    if not os.path.exists(path):
        raise CLIError(f"config file {path!r} does not exist")
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            with open(path) as f:
                data = yaml.safe_load(f)
        elif path.endswith(".toml"):
            try:
                import tomllib  # Python 3.11+
            except ImportError:  # pragma: no cover
                import tomli as tomllib  # type: ignore
            with open(path, "rb") as f:
                data = tomllib.load(f)
        elif path.endswith(".json"):
            with open(path) as f:
                data = json.load(f)
        else:
            raise CLIError(f"config file {path!r}: expected a .yaml, .yml, .toml or .json file")
    except CLIError:
        raise
    except Exception as e:  # parse errors of any of the three formats
        raise CLIError(f"cannot read config file {path!r}: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CLIError(f"config file {path!r}: expected a mapping of option: value, got {type(data).__name__}")
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in TRAIN_OPTIONS:
            raise CLIError(f"config file {path!r}: unknown option {key!r}")
        try:
            out[name] = TRAIN_OPTIONS[name][0](value)
        except CLIError as e:
            raise CLIError(f"config file {path!r}: {e}") from None
    return out


def add_parsers(sub: Any) -> None:
    """Adds ``train``, ``evaluate`` and ``summary`` to the ``lamina`` sub-command parsers.

    Args:
      sub: the ``add_subparsers()`` object of :func:`lamina.cli.build_parser`.
    """
    _add_train_parser(sub)
    _add_evaluate_parser(sub)
    _add_summary_parser(sub)


def handlers() -> Dict[str, Any]:
    """Returns ``{command: function(args) -> exit code}``."""
    return {"train": _train, "evaluate": _evaluate, "summary": _summary}


def _add_train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model (default: ConvNet on the bundled digits)",
                       description="Train a model. With no arguments: ConvNet on the bundled 8x8 digits.")
    for name, (conv, default, help_text) in TRAIN_OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        if name in ("jit", "deterministic", "check_numerics"):
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                           help=f"{help_text} (default {default})")
        else:
            p.add_argument(flag, dest=name, default=None, metavar=name.upper(),
                           help=f"{help_text} (default {default})")
    p.add_argument("--config", default=None, help="a YAML/TOML/JSON file of options; flags override it")
    p.add_argument("--resume", action="store_true", help="resume the latest run of this model and data (or --run-dir)")
    p.add_argument("--quiet", action="store_true", help="print only the final result")


def _train_config(args: argparse.Namespace) -> Dict[str, Any]:
    config = {name: spec[1] for name, spec in TRAIN_OPTIONS.items()}
    if args.config:
        config.update(_read_config_file(args.config))
    for name, spec in TRAIN_OPTIONS.items():
        value = getattr(args, name)
        if value is not None:
            config[name] = spec[0](value)
    return config


def _latest_run(model: str, data: str) -> Optional[str]:
    from lamina.train.run import default_run_dir

    prefix = os.path.basename(default_run_dir(model, data)).rsplit("-", 2)[0] + "-"
    if not os.path.isdir("runs"):
        return None
    candidates = sorted(d for d in os.listdir("runs") if d.startswith(prefix))
    return os.path.join("runs", candidates[-1]) if candidates else None


def _make_strategy(name: str) -> Any:
    """Builds the ``--strategy`` (``None`` for ``default``); see :func:`lamina.train.distribute.make_strategy`."""
    from lamina.train.distribute import DistributeError, make_strategy

    try:
        return make_strategy(name)
    except DistributeError as e:
        raise CLIError(f"--strategy {name}: {e}") from None


def _make_optimizer(config: Dict[str, Any], steps_per_epoch: int) -> Any:
    from lamina import optim
    from lamina.optim import schedules

    total = config["epochs"] * steps_per_epoch
    lr = config["lr"]
    kind = config["schedule"]
    if kind == "constant":
        schedule = schedules.constant(lr)
    elif kind == "cosine":
        warmup = min(config["warmup_epochs"] * steps_per_epoch, max(0, total - 1))
        schedule = schedules.cosine(lr, total_steps=total, warmup_steps=warmup)
    elif kind == "step":
        schedule = schedules.step_decay(lr, step_size=max(1, total // 3), gamma=0.1)
    else:
        schedule = schedules.exponential(lr, decay_rate=0.5, decay_steps=max(1, total // 4))
    kwargs: Dict[str, Any] = {}
    if config["weight_decay"] is not None:
        kwargs["weight_decay"] = config["weight_decay"]
    if config["optimizer"] == "sgd":
        kwargs["momentum"] = 0.9
    return optim.get(config["optimizer"], learning_rate=schedule, **kwargs)


def _train(args: argparse.Namespace) -> int:
    config = _train_config(args)
    t_start = time.perf_counter()
    if config["strategy"] == "multiworker" and config["run_dir"] is None:
        raise CLIError("--strategy multiworker needs --run-dir (the same folder for every worker)")
    # First: MultiWorkerMirroredStrategy must exist before TensorFlow runs any op.
    strategy = _make_strategy(config["strategy"])

    import lamina as lm
    from lamina import data as ld
    from lamina.train.run import check_compatible, default_run_dir, write_config
    from lamina.models.registry import create_model, model_names

    if config["model"].lower() not in model_names():
        raise CLIError(f"unknown model {config['model']!r}; expected one of {', '.join(model_names())}")
    config["model"] = config["model"].lower()
    quiet = args.quiet
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))

    lm.set_seed(config["seed"])
    dataset = ld.load(
        config["data"], image_size=tuple(config["image_size"]) if config["image_size"] else None,
        validation_split=config["val_split"], seed=config["seed"],
    )
    run_dir = config["run_dir"]
    if args.resume and run_dir is None:
        run_dir = _latest_run(config["model"], config["data"])
        if run_dir is None:
            raise CLIError(f"--resume: no earlier run of {config['model']} on {config['data']} under runs/")
    if run_dir is None:
        run_dir = default_run_dir(config["model"], config["data"])
    config["run_dir"] = run_dir
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise CLIError(f"--run-dir {run_dir!r} is a file, not a folder")
    model_kwargs: Dict[str, Any] = {}
    if config["model"] == "vit":
        model_kwargs["image_size"] = list(dataset.input_shape[:2])
    full = dict(config)
    full.update(
        model_kwargs=model_kwargs,
        num_classes=int(dataset.num_classes),
        input_shape=[int(d) for d in dataset.input_shape],
        class_names=[str(c) for c in dataset.class_names],
        preprocessing=dataset.preprocessing,
        data_name=dataset.name,
        lamina_version=lm.__version__,
    )
    check_compatible(run_dir, full)
    batch = config["batch_size"]
    steps_per_epoch = dataset.num_batches("train", batch)
    val_split = "validation" if dataset.splits.get("validation") else None

    def scope():
        import contextlib

        return strategy.scope() if strategy is not None else contextlib.nullcontext()

    with scope():
        model = create_model(config["model"], dataset.num_classes, **model_kwargs)
        optimizer = _make_optimizer(config, steps_per_epoch)
    loss = lm.losses.SoftmaxCrossEntropy(label_smoothing=config["label_smoothing"])
    trainer = lm.train.Trainer(
        model, optimizer, loss, metrics=["accuracy"], strategy=strategy, jit_compile=config["jit"],
        precision=config["precision"], grad_accum_steps=config["grad_accum"], clip_norm=config["clip_norm"],
        seed=config["seed"], deterministic=config["deterministic"], run_dir=run_dir,
        checkpoint_every=config["checkpoint_every"], keep_checkpoints=config["keep_checkpoints"],
        monitor="val_accuracy" if val_split else "accuracy", patience=config["patience"], quiet=quiet,
        check_numerics=config["check_numerics"],
    )
    full["precision_resolved"] = trainer.precision.name
    if trainer.is_chief:
        write_config(run_dir, full)
    say(
        f"training {config['model']} on {dataset.name} ({dataset.splits.get('train')} train / "
        f"{dataset.splits.get('validation', 0)} validation / {dataset.splits.get('test', 0)} test examples, "
        f"input {tuple(dataset.input_shape)}, {dataset.num_classes} classes) for {config['epochs']} epochs; "
        f"precision {trainer.precision.name}; run dir {run_dir}"
    )
    augment = config["augment"] or False

    def train_data(epoch: int, skip_batches: int):
        return dataset.batches("train", batch, shuffle=True, seed=config["seed"], epoch=epoch,
                               augment=augment, skip_batches=skip_batches)

    validation = dataset.batches(val_split, 256, shuffle=False) if val_split else None
    t_fit = time.perf_counter()
    history = trainer.fit(train_data, validation=validation, epochs=config["epochs"],
                          steps_per_epoch=steps_per_epoch, max_steps=config["max_steps"])
    fit_time = time.perf_counter() - t_fit
    results: Dict[str, Any] = {"epochs_run": len(history), "train_time_s": round(fit_time, 2)}
    if "test" in dataset.splits:
        with scope():  # a metric updated inside strategy.run lives in the strategy's scope
            confusion = lm.metrics.ConfusionMatrix(dataset.num_classes)
        test = trainer.evaluate(dataset.batches("test", 256, shuffle=False), extra_metrics=[confusion])
        results.update({f"test_{k}": v for k, v in test.items()})
        matrix = confusion.result().numpy()
        results["confusion_matrix"] = matrix.tolist()
        if trainer.is_chief:
            from lamina.train.plots import plot_confusion

            plot_confusion(matrix, os.path.join(run_dir, "confusion.png"), dataset.class_names)
    results["total_time_s"] = round(time.perf_counter() - t_start, 2)
    if trainer.is_chief:
        with open(os.path.join(run_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
    if "test_accuracy" in results:
        print(
            f"test accuracy {results['test_accuracy']:.2%} (loss {results['test_loss']:.4f}) "
            f"after {len(history)} epochs; training {fit_time:.1f}s, total {results['total_time_s']:.1f}s; "
            f"run dir {run_dir}",
            flush=True,
        )
    else:
        print(f"done: {len(history)} epochs in {fit_time:.1f}s; run dir {run_dir}", flush=True)
    return 0


def _add_evaluate_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="evaluate a run's best checkpoint on its test split",
                       description="Print loss, accuracy and a per-class report from a run's best checkpoint.")
    p.add_argument("run_dir", help="a run directory written by `lamina train`")
    p.add_argument("--data", default=None, help="another data source with the same input shape and classes")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=256)


def _check_checkpoint(run_dir: str, which: str) -> None:
    """Refuses a run whose chosen checkpoint is corrupt, before TensorFlow tries to restore it.

    Args:
      run_dir: the run directory.
      which: ``"best"`` or ``"latest"``.

    Raises:
      CLIError: naming the checkpoint and what is wrong with it.
      RunDirError: for a missing or foreign folder, or no checkpoint.
    """
    from lamina.train.checkpoints import verify_checkpoint
    from lamina.train.run import checkpoint_path, read_config

    read_config(run_dir)  # a missing or foreign folder: its own clear error
    path = checkpoint_path(run_dir, which)
    reason = verify_checkpoint(path)
    if reason is not None:
        other = "latest" if which == "best" else "best"
        try:
            hint = f"try --checkpoint {other}" if checkpoint_path(run_dir, other) != path else "retrain"
        except ValueError:  # RunDirError: no other checkpoint
            hint = "retrain"
        raise CLIError(f"checkpoint {os.path.normpath(path)} is corrupt ({reason}); {hint}")


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    import lamina as lm
    from lamina import data as ld
    from lamina.train.run import load_run

    _check_checkpoint(args.run_dir, args.checkpoint)
    model, config = load_run(args.run_dir, args.checkpoint)
    source = args.data or config["data"]
    dataset = ld.load(source, image_size=tuple(config["image_size"]) if config.get("image_size") else None,
                      validation_split=config.get("val_split", 0.0), seed=config.get("seed", 0))
    if list(dataset.input_shape) != list(config["input_shape"]):
        raise CLIError(f"data {source!r} has input shape {tuple(dataset.input_shape)}, the model expects {tuple(config['input_shape'])}")
    if dataset.num_classes != config["num_classes"]:
        raise CLIError(f"data {source!r} has {dataset.num_classes} classes, the model has {config['num_classes']}")
    trainer = lm.train.Trainer(model, optimizer=None, loss=lm.losses.SoftmaxCrossEntropy(), metrics=["accuracy"], quiet=True)
    confusion = lm.metrics.ConfusionMatrix(dataset.num_classes)
    result = trainer.evaluate(dataset.batches(args.split, args.batch_size, shuffle=False), extra_metrics=[confusion])
    matrix = confusion.result().numpy().astype(np.int64)
    print(f"{args.split}: loss {result['loss']:.4f}  accuracy {result['accuracy']:.2%}  ({int(matrix.sum())} examples)")
    print(f"{'class':>12} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
    for i, name in enumerate(config.get("class_names") or range(dataset.num_classes)):
        tp = matrix[i, i]
        pred, true = matrix[:, i].sum(), matrix[i].sum()
        p = tp / pred if pred else 0.0
        r = tp / true if true else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        print(f"{str(name):>12} {p:9.3f} {r:9.3f} {f1:9.3f} {int(true):8d}")
    return 0


def _add_summary_parser(sub: Any) -> None:
    p = sub.add_parser("summary", help="print a model's layer table", description="Print a model's summary table.")
    p.add_argument("--model", default="convnet", help="model name")
    p.add_argument("--input-shape", default="28,28,1", help="per-example input shape, e.g. 28,28,1")
    p.add_argument("--num-classes", type=positive_int("--num-classes"), default=10)


def _summary(args: argparse.Namespace) -> int:
    import lamina as lm
    from lamina.models.registry import create_model, model_names

    if args.model.lower() not in model_names():
        raise CLIError(f"unknown model {args.model!r}; expected one of {', '.join(model_names())}")
    shape = dims("--input-shape")(args.input_shape)
    kwargs = {"image_size": shape[:2]} if args.model.lower() == "vit" else {}
    model = create_model(args.model, args.num_classes, **kwargs)
    lm.summary(model, tuple(shape))
    return 0
