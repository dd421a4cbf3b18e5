"""``MetricsLog``: ``run_dir/metrics.jsonl``, one JSON line per epoch, and the history on resume."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Optional

from lamina.train.callbacks.base import Callback

__all__ = ["MetricsLog", "read_metrics"]


def read_metrics(path: str, warn: bool = True) -> List[Dict[str, Any]]:
    """Reads a ``metrics.jsonl``, tolerating a torn last line.

    A process killed while appending leaves a partial last line: it is dropped
    (the checkpoint, not the log, is the truth) with a warning naming the file.
    A damaged line elsewhere is an error.

    Args:
      path: the file.
      warn: print the warning for a dropped torn line.

    Returns:
      The records, in order.

    Raises:
      ValueError: for a line that is not a JSON object, other than a torn last one.
    """
    with open(path, "rb") as f:
        lines = f.read(1 << 28).split(b"\n")
    records: List[Dict[str, Any]] = []
    # A complete file ends with "\n": the last split item is empty.
    last = len(lines) - 1
    for i, raw in enumerate(lines):
        text = raw.strip()
        if not text:
            continue
        try:
            rec = json.loads(text.decode("utf-8"))
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            if i == last:  # no newline after it: an interrupted append
                if warn:
                    print(f"lamina: warning: {path}: dropped an incomplete last line ({len(raw)} bytes)",
                          file=sys.stderr, flush=True)
                break
            raise ValueError(f"{path}: line {i + 1} is not a JSON record ({e})") from None
        records.append(rec)
    return records


class MetricsLog(Callback):
    """Appends each epoch's logs to ``metrics.jsonl`` (fsync'ed) and reloads them on resume.

    On ``on_train_begin`` the trainer's ``history`` becomes the file's records
    up to the checkpointed epoch; lines of epochs logged after the checkpoint
    (a crash between the two) are dropped, and the file rewritten atomically.

    Args:
      path: the file (default ``run_dir/metrics.jsonl``).
    """

    def __init__(self, path: Optional[str] = None) -> None:
        super().__init__(name="metrics_log")
        self._path = path

    @property
    def path(self) -> str:
        """The file written."""
        return self._path or os.path.join(self.trainer.run_dir, "metrics.jsonl")

    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        """Loads the history of a resumed run and drops records the checkpoint does not cover."""
        trainer = self.trainer
        trainer.resume()  # the checkpoint decides how many epochs are done
        trainer.history = []
        if not os.path.exists(self.path):
            return
        if self._path is None:
            from lamina.fileio import is_inside

            if not is_inside(trainer.run_dir, self.path):
                raise OSError(f"{self.path} is a symbolic link to {os.path.realpath(self.path)}, outside the run "
                              "directory; refusing to read or append to it")
        done = int(trainer.epoch.numpy())
        records = read_metrics(self.path)
        trainer.history = [r for r in records if r.get("epoch", 0) <= done]
        if trainer.is_chief and (len(trainer.history) != len(records) or self._needs_rewrite()):
            from lamina.fileio import atomic_write

            atomic_write(self.path, "".join(json.dumps(rec) + "\n" for rec in trainer.history))

    def _needs_rewrite(self) -> bool:
        with open(self.path, "rb") as f:
            data = f.read()
        return bool(data) and not data.endswith(b"\n")

    def on_epoch_end(self, epoch: int, logs: Dict[str, Any]) -> None:
        """Appends the epoch's record."""
        if not self.trainer.is_chief:
            return
        from lamina.fileio import append_line

        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        append_line(self.path, json.dumps(logs))  # one write: a crash leaves at most a torn last line
