"""The ``lamina`` command line: ``train`` (the main job), ``evaluate``, ``summary``, ``export``, ``predict``.

``lamina train`` with no arguments trains the default ``ConvNet`` on the bundled
digits data set and prints the test accuracy and the time it took. Every usage
or input error prints one line ``lamina: error: ...`` and exits with code 2;
nothing prints a traceback unless ``LAMINA_DEBUG=1``.

The CLI is a thin adapter: each sub-command module here (``lamina/cli/<topic>.py``)
adds its parsers (``add_parsers(sub)``) and its handlers (``handlers()``), and
calls functions users can call from Python. The library never imports this package.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from lamina.cli.common import CLIError, Parser  # noqa: E402

__all__ = ["main", "build_parser", "CLIError", "COMMAND_MODULES"]

# One module per topic, each with ``add_parsers(sub)`` and ``handlers()``; the
# order is the order of ``lamina --help``.
COMMAND_MODULES = ("train", "export", "convert", "data")


def _command_modules() -> List[Any]:
    return [importlib.import_module(f"lamina.cli.{name}") for name in COMMAND_MODULES]


def build_parser() -> argparse.ArgumentParser:
    """Builds the ``lamina`` argument parser.

    Returns:
      The parser.
    """
    parser = Parser(prog="lamina", description="lamina: deep networks on TensorFlow's low-level API.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    for mod in _command_modules():
        mod.add_parsers(sub)
    return parser


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line.

    Args:
      argv: arguments (default ``sys.argv[1:]``).

    Returns:
      The exit code: 0 success, 2 usage/input error, 1 internal error, 130 interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.version:
            from lamina import __version__

            print(f"lamina {__version__}")
            return 0
        if args.command is None:
            parser.print_help()
            return 2
        try:
            signal.signal(signal.SIGTERM, _sigterm)
        except ValueError:  # not in the main thread
            pass
        handlers: Dict[str, Callable[[argparse.Namespace], int]] = {}
        for mod in _command_modules():
            handlers.update(mod.handlers())
        return handlers[args.command](args)
    except KeyboardInterrupt as e:
        # The trainer re-raises with "at step N; checkpoint saved: PATH".
        detail = " ".join(str(e).split())
        print(f"lamina: interrupted {detail}" if detail else
              "lamina: interrupted (a checkpoint was saved if a run was in progress)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the one place errors become messages
        if os.environ.get("LAMINA_DEBUG"):
            raise
        return _report(e)


def _report(e: BaseException) -> int:
    from lamina.train.run import RunDirError

    # OSError: a full disk, an unwritable or missing path (the message names it).
    user_errors: tuple = (CLIError, RunDirError, ValueError, TypeError, OSError)
    try:
        from lamina.data import DataError
        from lamina.train.checkpoints import CheckpointError
        from lamina.train.trainer import TrainingError

        user_errors = user_errors + (DataError, CheckpointError, TrainingError)
    except ImportError:  # pragma: no cover
        pass
    message = " ".join(str(e).split()) or type(e).__name__
    # After the one line, nothing more: TensorFlow would otherwise log at exit about
    # the objects of a failed checkpoint restore.
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(e, tf.errors.DataLossError):
        # A corrupt or truncated file read by TensorFlow (a checkpoint, a SavedModel).
        import re

        text = re.sub(r"\s*\[Op:[^\]]*\]", "", re.sub(r"\{\{[^}]*\}\}", "", str(getattr(e, "message", "") or e)))
        print(f"lamina: error: corrupt or truncated file: {' '.join(text.split())}", file=sys.stderr)
        return 2
    try:
        from lamina.data import pipeline_error

        recorded = pipeline_error(e)  # a bad file that stopped a streaming pipeline (--on-bad-file fail)
    except ImportError:  # pragma: no cover
        recorded = None
    if recorded is not None:
        print(f"lamina: error: {' '.join(str(recorded).split())}", file=sys.stderr)
        return 2
    if isinstance(e, ImportError) and "pip install" in str(e):
        # An optional package is missing; lamina's message says what to install.
        print(f"lamina: error: {message}", file=sys.stderr)
        return 2
    if isinstance(e, user_errors):
        print(f"lamina: error: {message}", file=sys.stderr)
        return 2
    print(f"lamina: internal error: {type(e).__name__}: {message} (set LAMINA_DEBUG=1 for the traceback)", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
