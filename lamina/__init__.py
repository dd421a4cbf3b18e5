"""lamina: deep neural networks on TensorFlow's low-level API (tf.Module), no Keras.

The public API is re-exported here: ``lm.Module``, every layer (``lm.Conv2D``,
``lm.Linear``, ...), ``lm.initializers``, ``lm.models``, ``lm.summary`` and
``lm.set_seed``, ``lm.freeze`` / ``lm.unfreeze``. The heavier sub-packages (``lm.losses``, ``lm.metrics``,
``lm.optim``, ``lm.train``, ``lm.data``, ``lm.export``, ``lm.interop``, ``lm.testing``) load on first use, which
keeps ``import lamina`` fast. See ``docs/architecture.md`` for the layout.
"""

import importlib as _importlib
import os as _os
import sys as _sys
from typing import Any as _Any

# The `lamina` command (its console script, or `python -m lamina`; never another program's
# `python -m ...` that imports lamina, whose argv[0] is also a `__main__.py`) silences TensorFlow's
# start-up chatter (C++ log lines written while TensorFlow loads); as a library, lamina leaves the
# user's logging settings alone.
_ORIG_ARGV = list(getattr(_sys, "orig_argv", []))
_CLI = (bool(_sys.argv) and _os.path.basename(_sys.argv[0]) in ("lamina", "lamina.exe")) or any(
    a == "-m" and b == "lamina" for a, b in zip(_ORIG_ARGV, _ORIG_ARGV[1:])
)
if _CLI:
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # On x86 CPUs where TensorFlow leaves its oneDNN kernels off (AVX2 without VNNI) the command turns
    # them on before TensorFlow loads (lamina/onednn.py); a TF_ENABLE_ONEDNN_OPTS the user set wins.
    from lamina import onednn as _onednn

    _onednn.enable_for_command()


def _import_tensorflow_quietly() -> None:
    saved = _os.dup(2)
    devnull = _os.open(_os.devnull, _os.O_WRONLY)
    try:
        _os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        _os.dup2(saved, 2)
        _os.close(saved)
        _os.close(devnull)


try:
    if _CLI and "tensorflow" not in _sys.modules:
        _import_tensorflow_quietly()
    import tensorflow as _tf  # noqa: F401
except ImportError:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "lamina needs TensorFlow: install it with `pip install 'lamina[cpu]'` (CPU) or `pip install 'lamina[gpu]'` (CUDA)"
    ) from None

from lamina import initializers  # noqa: E402
from lamina.module import InputSpec, Module, call_with_training, freeze, unfreeze  # noqa: E402
from lamina.random import get_seed, set_seed  # noqa: E402
from lamina.layers import *  # noqa: E402,F401,F403
from lamina import layers, models  # noqa: E402
from lamina.summary import *  # noqa: E402,F401,F403

__version__ = "0.1.0"

_LAZY_MODULES = ("losses", "metrics", "optim", "train", "data", "export", "interop", "testing")
_LAZY_ATTRS = {
    "save_weights": "lamina.export.safetensors",
    "load_weights": "lamina.export.safetensors",
    "Trainer": "lamina.train",
}


def __getattr__(name: str) -> _Any:
    """Loads the lazy sub-packages (``_LAZY_MODULES``) and attributes (``_LAZY_ATTRS``) on first use."""
    if name in _LAZY_MODULES:
        module = _importlib.import_module(f"lamina.{name}")
        globals()[name] = module
        return module
    if name in _LAZY_ATTRS:
        value = getattr(_importlib.import_module(_LAZY_ATTRS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lamina' has no attribute {name!r}")
