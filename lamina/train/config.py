"""The run configuration: one typed object for flags, config files, ``config.json`` and every command.

:class:`RunConfig` holds what a user chooses (model, data, hyper-parameters);
:class:`RunRecord` adds what the run found out (classes, input shape,
preprocessing, resolved precision) and is what ``config.json`` stores, flat.
``lamina train`` builds a ``RunConfig`` from its defaults, a ``--config`` file
and its flags (in that order of precedence); ``lamina.app.train_run`` takes
one; ``load_run``, ``evaluate``, ``export`` and ``predict`` read a
``RunRecord`` back. Every option is declared once, below, with its default,
its check and its help text.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Dict, List, Optional

from lamina.options import (
    OptionError, boolean, choice, dims, fraction, nonneg_int, optional, positive_float, positive_int, string,
)

__all__ = ["RunConfig", "RunRecord", "ConfigError", "OPTIMIZERS", "SCHEDULES", "PRECISION_CHOICES",
           "STRATEGIES", "read_config_file"]

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "step", "exponential")
PRECISION_CHOICES = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
STRATEGIES = ("default", "mirrored", "multiworker")


class ConfigError(OptionError):
    """A bad configuration value or file (one line: the option or file, expected vs got)."""


def _opt(default: Any, check: Callable[[str], Callable[[Any], Any]], help: str, flag_kind: str = "value") -> Any:
    """Declares one option: its default, its checker (built from the flag name) and its help."""
    return dataclasses.field(default=default, metadata={"check": check, "help": help, "kind": flag_kind})


def _unit_interval_open(name: str) -> Callable[[Any], float]:
    from lamina.options import float_where

    return float_where(name, lambda v: 0.0 < v < 1.0, "number in (0, 1)")


@dataclasses.dataclass
class RunConfig:
    """What ``lamina train`` runs: every option, with its default.

    Build one with keyword arguments (checked like the command line's flags),
    :meth:`from_dict` or :meth:`from_file`; :meth:`replace` gives a checked copy.
    """

    model: str = _opt("convnet", string, "model name (lamina train --help lists them)")
    data: str = _opt("digits", string, "data source: digits, a .npz, an IDX folder, an image folder, a .csv, "
                                       "mnist, cifar10, tfds:NAME")
    epochs: int = _opt(20, positive_int, "number of epochs")
    batch_size: int = _opt(32, positive_int, "global batch size (over all replicas)")
    lr: float = _opt(3e-3, positive_float, "peak learning rate")
    optimizer: str = _opt("adam", lambda n: choice(n, OPTIMIZERS), "optimizer: " + ", ".join(OPTIMIZERS))
    schedule: str = _opt("cosine", lambda n: choice(n, SCHEDULES), "learning-rate schedule: " + ", ".join(SCHEDULES))
    warmup_epochs: int = _opt(1, nonneg_int, "linear warm-up epochs (cosine schedule)")
    weight_decay: Optional[float] = _opt(None, lambda n: optional(positive_float(n)), "weight decay (decoupled for adamw)")
    label_smoothing: float = _opt(0.0, fraction, "label smoothing for the cross-entropy")
    precision: str = _opt("float32", lambda n: choice(n, PRECISION_CHOICES), "numeric precision: " + ", ".join(PRECISION_CHOICES))
    jit: bool = _opt(False, boolean, "compile the step with XLA", "flag")
    seed: int = _opt(0, nonneg_int, "random seed (initialization, data order, augmentation)")
    deterministic: bool = _opt(False, boolean, "bit-identical reruns (TensorFlow op determinism)", "flag")
    run_dir: Optional[str] = _opt(None, lambda n: optional(string(n)), "run directory [default: runs/<model>-<data>-<time>]")
    val_split: float = _opt(0.1, fraction, "fraction of the training split held out for validation")
    augment: Optional[str] = _opt(None, lambda n: optional(string(n)), "augmentations, e.g. crop or crop,flip")
    image_size: Optional[List[int]] = _opt(None, lambda n: optional(dims(n)), "resize images to H,W (image folders)")
    on_bad_file: Optional[str] = _opt(None, lambda n: optional(choice(n, ("skip", "fail"))),
                                      "a corrupt file met while streaming: skip it (counted, named) or fail "
                                      "[default: skip when streaming, fail at load in memory]")
    checkpoint_every: Optional[int] = _opt(None, lambda n: optional(positive_int(n)), "also checkpoint every N steps")
    keep_checkpoints: int = _opt(3, positive_int, "recent checkpoints to keep")
    patience: Optional[int] = _opt(None, lambda n: optional(positive_int(n)), "early stopping patience in epochs")
    grad_accum: int = _opt(1, positive_int, "gradient accumulation steps")
    clip_norm: Optional[float] = _opt(None, lambda n: optional(positive_float(n)), "clip gradients to this global norm")
    strategy: str = _opt("default", lambda n: choice(n, STRATEGIES), "distribution: " + ", ".join(STRATEGIES))
    max_steps: Optional[int] = _opt(None, lambda n: optional(positive_int(n)), "stop after N steps (smoke tests)")
    check_numerics: bool = _opt(False, boolean, "debug: stop right after the first non-finite step and name the module", "flag")
    ema: Optional[float] = _opt(None, lambda n: optional(_unit_interval_open(n)),
                                "keep a moving average of the weights with this decay (e.g. 0.999); "
                                "validation, best checkpoint and test use it")
    init_from: Optional[str] = _opt(None, lambda n: optional(string(n)),
                                    "start from the weights of a run directory or a .safetensors file "
                                    "(a head of another size is dropped with a note)")
    freeze: Optional[str] = _opt(None, lambda n: optional(string(n)),
                                 "freeze 'backbone' (everything but the head) or comma-separated module paths")
    mlflow: Optional[str] = _opt(None, lambda n: optional(string(n)),
                                 "log parameters, metrics, plots and the model to MLflow: a tracking URI, or "
                                 "'local' for ./mlruns (pip install 'lamina[mlflow]')")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            try:
                checked = f.metadata["check"](self.flag(f.name))(value)
            except OptionError as e:
                raise ConfigError(str(e)) from None
            object.__setattr__(self, f.name, checked)
        if self.model:
            self.model = self.model.lower()

    # ---------------------------------------------------------------- schema
    @staticmethod
    def flag(name: str) -> str:
        """``"batch_size"`` -> ``"--batch-size"``."""
        return "--" + name.replace("_", "-")

    @classmethod
    def options(cls) -> List[dataclasses.Field]:
        """The option fields, in declaration order (each with ``metadata["help"]`` and ``["kind"]``)."""
        return list(dataclasses.fields(cls))

    @classmethod
    def defaults(cls) -> "RunConfig":
        """A configuration with every default."""
        return cls()

    # ------------------------------------------------------------ conversion
    @classmethod
    def from_dict(cls, values: Dict[str, Any], source: Optional[str] = None) -> "RunConfig":
        """Builds a checked configuration from ``{option: value}`` (dashes or underscores).

        Args:
          values: option values; the rest take their defaults.
          source: what the values came from, prefixed to errors (``config file 'x.yaml'``);
            ``None`` for none (command-line flags name themselves).

        Returns:
          The configuration.

        Raises:
          ConfigError: for an unknown option or a bad value, naming ``source``.
        """
        names = {f.name for f in cls.options()}
        clean = {}
        for key, value in values.items():
            name = str(key).replace("-", "_")
            if name not in names:
                raise ConfigError(f"{source + ': ' if source else ''}unknown option {key!r}")
            clean[name] = value
        try:
            return cls(**clean)
        except ConfigError as e:
            if source is None:
                raise
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_file(cls, path: str, overrides: Optional[Dict[str, Any]] = None) -> "RunConfig":
        """Reads a YAML/TOML/JSON config file; ``overrides`` (e.g. flags) win over it.

        Args:
          path: the file.
          overrides: more values, applied after the file's.

        Returns:
          The configuration.

        Raises:
          ConfigError: for a missing/unreadable file, an unknown option or a bad value.
        """
        values = read_config_file(path)
        values.update(overrides or {})
        return cls.from_dict(values, source=f"config file {path!r}")

    def to_dict(self) -> Dict[str, Any]:
        """Returns ``{option: value}`` (JSON-serializable)."""
        return {f.name: getattr(self, f.name) for f in self.options()}

    def replace(self, **changes: Any) -> "RunConfig":
        """Returns a checked copy with ``changes`` applied.

        Raises:
          ConfigError: for a bad value.
        """
        return dataclasses.replace(self, **changes)

    def to_yaml(self) -> str:
        """The full configuration as a commented YAML file that :meth:`from_file` reads back.

        Returns:
          The text: one ``# help`` comment line and one ``option: value`` line per option.
        """
        import yaml

        lines = ["# lamina train configuration: `lamina train --config THIS_FILE` (flags override it).", ""]
        for f in self.options():
            value = getattr(self, f.name)
            text = yaml.safe_dump({f.name: value}, default_flow_style=True, width=1000).strip()
            lines.append(f"# {f.metadata['help']}")
            lines.append(text[1:-1] if text.startswith("{") else text)
        return "\n".join(lines) + "\n"


def read_config_file(path: str) -> Dict[str, Any]:
    """Reads ``{option: value}`` from a ``.yaml``/``.yml``, ``.toml`` or ``.json`` file.

    Args:
      path: the file.

    Returns:
      The mapping (empty for an empty file).

    Raises:
      ConfigError: for a missing file, another extension, a syntax error or a
        top level that is not a mapping.
    """
    if not os.path.exists(path):
        raise ConfigError(f"config file {path!r} does not exist")
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            with open(path) as f:
                data = yaml.safe_load(f)
        elif path.endswith(".toml"):
            import tomllib

            with open(path, "rb") as f:
                data = tomllib.load(f)
        elif path.endswith(".json"):
            with open(path) as f:
                data = json.load(f)
        else:
            raise ConfigError(f"config file {path!r}: expected a .yaml, .yml, .toml or .json file")
    except ConfigError:
        raise
    except Exception as e:  # parse errors of any of the three formats
        raise ConfigError(f"cannot read config file {path!r}: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r}: expected a mapping of option: value, got {type(data).__name__}")
    return dict(data)


# What a run found out, besides its options; stored flat next to them in config.json.
_RECORD_FIELDS = ("num_classes", "input_shape", "class_names", "preprocessing", "data_name", "model_kwargs",
                  "precision_resolved", "lamina_version")


@dataclasses.dataclass
class RunRecord:
    """A run's ``config.json``: its :class:`RunConfig` and what the data and machine resolved.

    Attributes:
      config: the options the run was started with.
      num_classes: the number of classes.
      input_shape: the per-example input shape.
      class_names: one name per class.
      preprocessing: how raw inputs are scaled (see ``lamina.data``), baked into exports.
      data_name: the data set's name.
      model_kwargs: extra constructor arguments of the model (e.g. ViT's image size).
      precision_resolved: the precision actually used (``auto`` resolved).
      lamina_version: the version that wrote the run.
    """

    config: RunConfig
    num_classes: int
    input_shape: List[int]
    class_names: List[str] = dataclasses.field(default_factory=list)
    preprocessing: Dict[str, Any] = dataclasses.field(default_factory=dict)
    data_name: str = ""
    model_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    precision_resolved: str = "float32"
    lamina_version: str = ""

    def to_json(self) -> Dict[str, Any]:
        """The flat ``config.json`` mapping: every option, then the resolved fields."""
        out = self.config.to_dict()
        out.update({k: getattr(self, k) for k in _RECORD_FIELDS})
        return out

    @classmethod
    def from_json(cls, data: Dict[str, Any], source: str = "config.json") -> "RunRecord":
        """Reads a record back, checking every value.

        Args:
          data: the parsed ``config.json``.
          source: the file, for errors.

        Returns:
          The record.

        Raises:
          ConfigError: for a missing or malformed resolved field, or a bad option value.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in RunConfig.options()}
        config = RunConfig.from_dict({k: v for k, v in data.items() if k in names}, source=source)
        missing = [k for k in ("num_classes", "input_shape") if k not in data]
        if missing:
            raise ConfigError(f"{source}: missing {', '.join(missing)} (incomplete or not written by lamina train)")
        nc, shape = data["num_classes"], data["input_shape"]
        if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
            raise ConfigError(f"{source}: num_classes must be a positive integer, got {nc!r}")
        if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise ConfigError(f"{source}: input_shape must be a list of positive integers, got {shape!r}")
        kwargs = {k: data[k] for k in _RECORD_FIELDS if k in data and data[k] is not None}
        for key, kind in (("class_names", list), ("preprocessing", dict), ("model_kwargs", dict)):
            if key in kwargs and not isinstance(kwargs[key], kind):
                raise ConfigError(f"{source}: {key} must be a {kind.__name__}, got {type(kwargs[key]).__name__}")
        return cls(config=config, **kwargs)
