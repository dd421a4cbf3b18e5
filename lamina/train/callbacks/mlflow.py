"""``MLflowLogger``: the run's parameters, per-epoch metrics, plots and exported model in an MLflow tracking store.

Optional: ``pip install 'lamina[mlflow]'``. The tracking store is the one given
(``tracking_uri``), else ``MLFLOW_TRACKING_URI``, else MLflow's own default;
``"local"`` means a file store in ``./mlruns`` (MLflow keeps the file store in
maintenance mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE=true``; asking
for ``"local"`` sets that for this process). A resumed lamina run continues the
same MLflow run: its id is kept in ``run_dir/mlflow_run_id``.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, Optional

from lamina.train.callbacks.base import Callback

__all__ = ["MLflowLogger", "MISSING_MESSAGE"]

MISSING_MESSAGE = "the MLflow logger needs the mlflow package: pip install 'lamina[mlflow]'"
_RUN_ID_FILE = "mlflow_run_id"


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise ImportError(MISSING_MESSAGE) from None
    return mlflow


class MLflowLogger(Callback):
    """Logs a training run to MLflow.

    Parameters: every option of the run's ``config.json`` (or the Trainer's
    settings without one); metrics: every number of each epoch's logs at
    ``step = epoch``; artifacts at the end: ``history.png``, ``confusion.png``
    (once written), ``metrics.jsonl``, ``config.json`` and, with ``log_model``,
    a SavedModel export of the best checkpoint under ``model/``.

    Args:
      tracking_uri: where to log (``"local"``: ``./mlruns``; ``None``: MLflow's default).
      experiment: the experiment name.
      run_name: the MLflow run's name (default the run directory's name).
      log_model: export the best checkpoint as a SavedModel and log it.

    Raises:
      ImportError: at the start of training, when mlflow is not installed.
    """

    def __init__(self, tracking_uri: Optional[str] = None, experiment: str = "lamina", run_name: Optional[str] = None,
                 log_model: bool = True) -> None:
        super().__init__(name="mlflow_logger")
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.log_model = log_model
        self.run_id: Optional[str] = None

    def _uri(self) -> Optional[str]:
        if self.tracking_uri == "local":
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            return "file:" + os.path.abspath("mlruns")
        return self.tracking_uri

    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        """Starts (or, for a resumed run, continues) the MLflow run and logs the parameters."""
        trainer = self.trainer
        if not trainer.is_chief:
            return
        mlflow = _mlflow()
        uri = self._uri()
        if uri:
            mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(self.experiment)
        run_dir = trainer.run_dir
        id_file = os.path.join(run_dir, _RUN_ID_FILE) if run_dir else None
        previous = open(id_file).read().strip() if id_file and os.path.exists(id_file) else None
        name = self.run_name or (os.path.basename(os.path.normpath(run_dir)) if run_dir else None)
        run = mlflow.start_run(run_id=previous) if previous else mlflow.start_run(run_name=name)
        self.run_id = run.info.run_id
        if id_file and not previous:
            with open(id_file, "w") as f:
                f.write(self.run_id + "\n")
        if not previous:
            mlflow.log_params(self._params())

    def _params(self) -> Dict[str, Any]:
        trainer = self.trainer
        path = os.path.join(trainer.run_dir, "config.json") if trainer.run_dir else None
        if path and os.path.exists(path):
            with open(path) as f:
                config = json.load(f)
            return {k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in config.items()
                    if k not in ("class_names", "preprocessing")}
        return {"precision": trainer.precision.name, "grad_accum_steps": trainer.grad_accum_steps,
                "ema": trainer.ema_decay, "seed": trainer.seed, "epochs": trainer.epochs,
                **{f"optimizer/{k}": repr(v) for k, v in trainer.optimizers.items()}}

    def on_epoch_end(self, epoch: int, logs: Dict[str, Any]) -> None:
        """Logs every number of the epoch's logs at ``step = epoch`` (1-based)."""
        if self.run_id is None:
            return
        numbers = {k.replace("/", "_"): float(v) for k, v in logs.items()
                   if k not in ("epoch", "step") and isinstance(v, (int, float))}
        _mlflow().log_metrics(numbers, step=epoch + 1)

    def on_train_end(self, logs: Optional[Dict[str, Any]] = None) -> None:
        """Logs the run directory's files and the exported model, then ends the MLflow run."""
        if self.run_id is None:
            return
        mlflow = _mlflow()
        run_dir = self.trainer.run_dir
        if run_dir:
            for name in ("history.png", "metrics.jsonl", "config.json"):
                path = os.path.join(run_dir, name)
                if os.path.exists(path):
                    mlflow.log_artifact(path)
            if self.log_model and os.path.exists(os.path.join(run_dir, "config.json")):
                from lamina.export.run_export import export_run

                with tempfile.TemporaryDirectory() as tmp:
                    out = export_run(run_dir, "savedmodel", output=os.path.join(tmp, "model"), verbose=False)
                    mlflow.log_artifacts(out, artifact_path="model")
        mlflow.end_run()
        self.run_id = None

    def log_file(self, path: str) -> None:
        """Adds one more file (e.g. ``confusion.png``) to the MLflow run last trained with this logger.

        Args:
          path: the file.
        """
        mlflow = _mlflow()
        run_id = self.run_id or self._last_run_id()
        if run_id is None or not os.path.exists(path):
            return
        with mlflow.start_run(run_id=run_id):
            mlflow.log_artifact(path)

    def _last_run_id(self) -> Optional[str]:
        run_dir = self.trainer.run_dir if self._attached.trainer is not None else None
        path = os.path.join(run_dir, _RUN_ID_FILE) if run_dir else None
        return open(path).read().strip() if path and os.path.exists(path) else None
