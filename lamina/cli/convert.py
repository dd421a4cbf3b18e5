"""The ``lamina convert`` sub-command (loaded by :mod:`lamina.cli`).

``lamina convert SRC --to lamina.safetensors --arch resnet50 [--source torchvision|timm|keras|hf]
[--num-classes N] [--data-format channels_last|channels_first]`` reads a pretrained
checkpoint (``.safetensors``, ``.pt`` / ``.pth``, Keras ``.h5``), loads it into the
matching lamina model with every tensor accounted for, and writes lamina's
safetensors file (architecture, options and preprocessing in its metadata);
see :func:`lamina.interop.convert`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Dict

from lamina.cli.common import choice, positive_int

__all__ = ["add_parsers", "handlers"]

_SOURCES = ("torchvision", "timm", "keras", "hf")


def add_parsers(sub: Any) -> None:
    """Adds ``convert`` to the ``lamina`` sub-command parsers.

    Args:
      sub: the ``add_subparsers()`` object of :func:`lamina.cli.build_parser`.
    """
    p = sub.add_parser("convert", help="convert torchvision / timm / Keras / Hugging Face weights to lamina",
                       description="Load a pretrained checkpoint into the matching lamina model and write it as "
                                   "lamina safetensors (every tensor accounted for).")
    p.add_argument("src", help="the checkpoint: .safetensors, .pt/.pth/.bin (needs torch) or Keras .h5")
    p.add_argument("--to", dest="dst", required=True, help="the output .safetensors file")
    p.add_argument("--arch", required=True,
                   help="resnet18/34/50/101/152, vit_b_16, vit_b_32, vit_l_16, ... (timm and Keras names too)")
    p.add_argument("--source", type=choice("--source", _SOURCES), default=None,
                   help="torchvision, timm, keras or hf (default: detected from the names)")
    p.add_argument("--num-classes", dest="num_classes", type=positive_int("--num-classes"), default=None,
                   help="the head's size (default: the checkpoint's; another size drops the checkpoint's head)")
    p.add_argument("--data-format", dest="data_format", type=choice("--data-format", ("channels_last", "channels_first")),
                   default="channels_last")


def handlers() -> Dict[str, Callable[[argparse.Namespace], int]]:
    """Returns ``{"convert": fn}``; it takes the parsed arguments and returns an exit code."""
    return {"convert": _convert}


def _convert(args: argparse.Namespace) -> int:
    from lamina.interop import convert

    if not args.dst.endswith(".safetensors"):
        from lamina.cli.common import CLIError

        raise CLIError(f"--to must name a .safetensors file, got {args.dst!r}")
    report = convert(args.src, args.dst, arch=args.arch, source=args.source, num_classes=args.num_classes,
                     head="load" if args.num_classes is None else "auto", data_format=args.data_format)
    for note in report.notes:
        print(f"lamina: note: {note}", file=sys.stderr)
    print(f"{report.summary()}; wrote {args.dst}", flush=True)
    return 0
