"""Training: the compiled ``Trainer``, precision policies, run directories."""

from lamina.train import callbacks, distribute  # noqa: F401
from lamina.train.checkpoints import CheckpointError, SafeCheckpointManager, latest_good_checkpoint, verify_checkpoint  # noqa: F401
from lamina.train.precision import (  # noqa: F401
    PRECISIONS,
    LossScale,
    Precision,
    auto_precision,
    resolve_precision,
    warn_if_slow,
)
from lamina.train.run import RunDirError, check_compatible, load_run, read_config, read_record, write_record  # noqa: F401
from lamina.train.run import load_run_checkpoint, original_config  # noqa: F401
from lamina.train.lock import RunLock, RunLockedError  # noqa: F401
from lamina.train.exclusive import TrainerBusyError  # noqa: F401
from lamina.train.config import RunConfig, RunRecord  # noqa: F401
from lamina.train.trainer import Trainer, TrainingError  # noqa: F401
from lamina.train.callbacks import Callback  # noqa: F401
from lamina.train.step import StepContext  # noqa: F401
from lamina.train.ema import WeightEMA  # noqa: F401

__all__ = [
    "Trainer",
    "Callback",
    "StepContext",
    "WeightEMA",
    "callbacks",
    "distribute",
    "CheckpointError",
    "SafeCheckpointManager",
    "latest_good_checkpoint",
    "verify_checkpoint",
    "TrainingError",
    "PRECISIONS",
    "Precision",
    "LossScale",
    "auto_precision",
    "resolve_precision",
    "warn_if_slow",
    "RunDirError",
    "RunLock",
    "RunLockedError",
    "TrainerBusyError",
    "load_run_checkpoint",
    "original_config",
    "load_run",
    "read_config",
    "write_record",
    "read_record",
    "RunConfig",
    "RunRecord",
    "check_compatible",
]

from lamina.train import summaries  # noqa: E402,F401
from lamina.train.numerics import first_non_finite  # noqa: E402,F401

__all__ += ["first_non_finite", "summaries"]
