"""``lamina train`` (the main job), ``lamina evaluate`` and ``lamina summary``: adapters over :mod:`lamina.app`.

Every ``lamina train`` flag is an option of :class:`lamina.train.config.RunConfig`
(declared there once, with its check and help); a ``--config`` file gives
defaults that flags override.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict

from lamina.cli.common import CLIError, choice, dims, positive_int
from lamina.train.config import RunConfig

__all__ = ["add_parsers", "handlers"]


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


def _model_help() -> str:
    from lamina.models.registry import model_names

    return "model: " + ", ".join(model_names())


def _add_train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model (default: ConvNet on the bundled digits)",
                       description="Train a model. With no arguments: ConvNet on the bundled 8x8 digits.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="Flags override a --config file; `lamina train --print-config > my.yaml` writes one.")
    defaults = RunConfig.defaults()
    for f in RunConfig.options():
        help_text = _model_help() if f.name == "model" else f.metadata["help"]
        default = getattr(defaults, f.name)
        if "[default:" not in help_text:
            help_text += f" [default: {default if not isinstance(default, list) else ','.join(map(str, default))}]"
        if f.metadata["kind"] == "flag":
            p.add_argument(RunConfig.flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                           help=help_text)
        else:
            p.add_argument(RunConfig.flag(f.name), dest=f.name, default=None, metavar=f.name.upper(), help=help_text)
    p.add_argument("--config", default=None, help="a YAML/TOML/JSON file of options")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective configuration as a commented YAML file and exit")
    p.add_argument("--resume", action="store_true",
                   help="continue the newest run of this model and data under runs/ (or the one in --run-dir)")
    p.add_argument("--quiet", action="store_true", help="print only the final result")


def _config(args: argparse.Namespace) -> RunConfig:
    flags = {f.name: getattr(args, f.name) for f in RunConfig.options() if getattr(args, f.name) is not None}
    if args.config:
        return RunConfig.from_file(args.config, overrides=flags)
    return RunConfig.from_dict(flags)


def _train(args: argparse.Namespace) -> int:
    from lamina.app import train_run

    config = _config(args)
    if args.print_config:
        sys.stdout.write(config.to_yaml())
        return 0
    result = train_run(config, resume=args.resume, quiet=args.quiet)
    res = result.results
    epochs = len(result.history)
    if "test_accuracy" in res:
        from lamina.train.run import describe_checkpoint

        ckpt = res["checkpoint"]
        final = res.get("final_test_accuracy")
        beside = f"; last epoch's weights {final:.2%}" if final is not None and ckpt.get("which") == "best" else ""
        print(
            f"test accuracy {res['test_accuracy']:.2%} (loss {res['test_loss']:.4f}) with the "
            f"{describe_checkpoint(ckpt)}{beside}; {epochs} epochs, training {res['train_time_s']:.1f}s, "
            f"total {res['total_time_s']:.1f}s; run dir {result.run_dir}",
            flush=True,
        )
    else:
        print(f"done: {epochs} epochs in {res['train_time_s']:.1f}s; run dir {result.run_dir}", flush=True)
    return 0


def _add_evaluate_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="evaluate a run's checkpoint on its test split",
                       description="Print loss, accuracy and a per-class report from a run's checkpoint.")
    p.add_argument("run_dir", help="a run directory written by `lamina train`")
    p.add_argument("--data", default=None, help="another data source with the same input shape and classes")
    p.add_argument("--split", default="test", help="split to evaluate [default: test]")
    p.add_argument("--checkpoint", type=choice("--checkpoint", ("best", "latest")), default="best",
                   help="which checkpoint: best (by validation) or latest [default: best]")
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=256,
                   help="evaluation batch size [default: 256]")


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
    from lamina.app import evaluate_run

    _check_checkpoint(args.run_dir, args.checkpoint)
    r = evaluate_run(args.run_dir, data=args.data, split=args.split, which=args.checkpoint, batch_size=args.batch_size)
    import lamina as lm

    from lamina.train.run import checkpoint_info, describe_checkpoint

    matrix = r.confusion
    print(f"{describe_checkpoint(checkpoint_info(r.checkpoint, args.checkpoint))}: {r.checkpoint}")
    print(f"{r.split}: loss {r.loss:.4f}  accuracy {r.accuracy:.2%}  ({int(matrix.sum())} examples)")
    print(lm.metrics.classification_report(matrix, r.class_names))
    return 0


def _add_summary_parser(sub: Any) -> None:
    p = sub.add_parser("summary", help="print a model's layer table", description="Print a model's summary table.")
    p.add_argument("--model", default="convnet", help=f"{_model_help()} [default: convnet]")
    p.add_argument("--input-shape", default="8,8,1", help="per-example input shape, e.g. 28,28,1 "
                                                          "[default: 8,8,1, the bundled digits]")
    p.add_argument("--num-classes", type=positive_int("--num-classes"), default=10,
                   help="number of output classes [default: 10]")


def _summary(args: argparse.Namespace) -> int:
    from lamina.app import summarize

    summarize(args.model, tuple(dims("--input-shape")(args.input_shape)), args.num_classes)
    return 0
