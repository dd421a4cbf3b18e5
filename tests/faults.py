"""Fault injection for the files lamina writes, and the crash/rerun scenarios run over it.

``FaultInjector(root, handler)`` wraps, for paths under ``root`` and calls
made by the main thread: ``os.replace``, ``os.rename``, ``os.link``,
``os.remove``/``os.unlink``, ``shutil.rmtree``, ``lamina.fileio.exchange``
(the atomic folder swap), ``open`` and ``os.open`` for writing, ``os.write``
on those descriptors (the append of ``metrics.jsonl``),
``tf.train.Checkpoint.write`` and ``tf.saved_model.save``. Before each such
call (a *fault point*) it calls ``handler(point, phase)``; for an
``os.write`` it also calls it with ``phase="torn"`` after half of the bytes
went out (a process killed in the middle of a write). The handler may:

* copy ``root`` away (:meth:`Snapshots.take`): what a ``kill -9`` at that
  instant leaves on disk — the process keeps running, so one uninterrupted
  run yields the crash states of all its fault points;
* raise ``OSError(ENOSPC)`` (a full disk) or :class:`Crash`;
* ``SIGKILL`` the process (a real kill, in a subprocess).

Run as a script (``python tests/faults.py SCENARIO WORKDIR REPORT``) it runs a
scenario (:func:`train_scenario`, :func:`export_scenario`) and writes a JSON
report: every fault point, what was done there, and the outcome.
``tests/test_faults.py`` runs the scenarios in subprocesses and checks the
reports; docs/errors.md lists what they cover.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


class Crash(BaseException):
    """A simulated kill at a fault point (a ``BaseException``: no ``except Exception`` stops it)."""


class Point(NamedTuple):
    """One fault point: its index in the run, the operation and the path (relative to the root)."""

    index: int
    op: str
    path: str

    @property
    def site(self) -> str:
        """The path with the random parts of temporary names blanked (``checkpoints/.tmp-ckpt-3-*.index``)."""
        text = re.sub(r"\.tmp-(\d+-)?[A-Za-z0-9_]{8}(?=[./]|$)", ".tmp-*", self.path)  # mkstemp, mkdtemp
        return re.sub(r"-[0-9a-f]{8}(?=[./]|$)", "-*", text)  # uuid suffixes


def _writes(mode: str) -> bool:
    return any(c in mode for c in "wax+")


class FaultInjector:
    """Calls ``handler(point, phase)`` before every write-side file operation under ``root``.

    Args:
      root: only operations on paths under it are fault points.
      handler: ``handler(point, phase)``; ``phase`` is ``"before"`` or ``"torn"``.
    """

    def __init__(self, root: str, handler: Callable[[Point, str], None]) -> None:
        self.root = os.path.realpath(root)
        self.handler = handler
        self.points: List[Point] = []
        self._fds: Dict[int, str] = {}
        self._depth = threading.local()
        self._saved: List[Tuple[Any, str, Any]] = []

    # ----------------------------------------------------------- internals
    def _rel(self, path: Any) -> Optional[str]:
        if isinstance(path, int) or path is None:
            return None
        try:
            path = os.fspath(path)
        except TypeError:
            return None
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        real = os.path.realpath(os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))),
                                             os.path.basename(path)))
        if real != self.root and not real.startswith(self.root + os.sep):
            return None
        return os.path.relpath(real, self.root)

    def _busy(self) -> bool:
        return getattr(self._depth, "n", 0) > 0 or threading.current_thread() is not threading.main_thread()

    @contextlib.contextmanager
    def _inside(self) -> Any:
        self._depth.n = getattr(self._depth, "n", 0) + 1
        try:
            yield
        finally:
            self._depth.n -= 1

    def _point(self, op: str, path: Any) -> Optional[Point]:
        if self._busy():
            return None
        rel = self._rel(path)
        if rel is None:
            return None
        point = Point(len(self.points), op, rel)
        self.points.append(point)
        with self._inside():
            self.handler(point, "before")
        return point

    def _wrap(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = getattr(owner, name)
        self._saved.append((owner, name, original))
        setattr(owner, name, make(original))

    # ------------------------------------------------------------- install
    def __enter__(self) -> "FaultInjector":
        import tensorflow as tf

        import lamina.fileio as fileio

        inj = self

        def two_paths(op: str) -> Callable[[Any], Any]:
            def make(real: Any) -> Any:
                def call(src: Any, dst: Any, *a: Any, **k: Any) -> Any:
                    if not k:
                        inj._point(op, dst)
                    with inj._inside():
                        return real(src, dst, *a, **k)
                return call
            return make

        def one_path(op: str) -> Callable[[Any], Any]:
            def make(real: Any) -> Any:
                def call(path: Any, *a: Any, **k: Any) -> Any:
                    if "dir_fd" not in k:
                        inj._point(op, path)
                    with inj._inside():
                        return real(path, *a, **k)
                return call
            return make

        for op in ("replace", "rename", "link"):
            self._wrap(os, op, two_paths(op))
        self._wrap(os, "remove", one_path("remove"))
        self._wrap(os, "unlink", one_path("remove"))
        self._wrap(shutil, "rmtree", one_path("rmtree"))
        self._wrap(fileio, "exchange", two_paths("exchange"))

        def make_open(real: Any) -> Any:
            def call(file: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
                if isinstance(mode, str) and _writes(mode):
                    inj._point(f"open-{mode.replace('b', '').replace('t', '')}", file)
                with inj._inside():
                    return real(file, mode, *a, **k)
            return call

        self._wrap(builtins, "open", make_open)

        def make_os_open(real: Any) -> Any:
            def call(path: Any, flags: int, *a: Any, **k: Any) -> int:
                point = None
                if flags & WRITE_FLAGS and "dir_fd" not in k:
                    point = inj._point("os.open", path)
                with inj._inside():
                    fd = real(path, flags, *a, **k)
                if point is not None:
                    inj._fds[fd] = point.path
                return fd
            return call

        self._wrap(os, "open", make_os_open)

        def make_close(real: Any) -> Any:
            def call(fd: int) -> None:
                inj._fds.pop(fd, None)
                return real(fd)
            return call

        self._wrap(os, "close", make_close)

        def make_write(real: Any) -> Any:
            def call(fd: int, data: Any) -> int:
                rel = self._fds.get(fd)
                if rel is None or self._busy():
                    return real(fd, data)
                point = Point(len(inj.points), "write", rel)
                inj.points.append(point)
                data = bytes(data)
                with inj._inside():
                    inj.handler(point, "before")
                half = len(data) // 2
                done = 0
                while done < half:
                    done += real(fd, data[done:half])
                with inj._inside():
                    inj.handler(point, "torn")
                while done < len(data):
                    done += real(fd, data[done:])
                return done
            return call

        self._wrap(os, "write", make_write)

        def make_ckpt_write(real: Any) -> Any:
            def call(ckpt: Any, prefix: Any, *a: Any, **k: Any) -> Any:
                inj._point("checkpoint-write", prefix)
                with inj._inside():
                    return real(ckpt, prefix, *a, **k)
            return call

        self._wrap(tf.train.Checkpoint, "write", make_ckpt_write)

        def make_sm_save(real: Any) -> Any:
            def call(obj: Any, export_dir: Any, *a: Any, **k: Any) -> Any:
                inj._point("savedmodel-write", export_dir)
                with inj._inside():
                    return real(obj, export_dir, *a, **k)
            return call

        self._wrap(tf.saved_model, "save", make_sm_save)
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved = []


# ------------------------------------------------------------------ snapshots
IGNORED_DIRS = ("tensorboard",)  # TensorFlow's own event files (appended by C++ code, read with CRCs)


def tree(root: str) -> Dict[str, str]:
    """``{relative path: sha256}`` of the files under ``root``, TensorBoard's folder left out."""
    out = {}
    if not os.path.isdir(root):
        return out
    for top, dirs, files in os.walk(root):
        rel_top = os.path.relpath(top, root)
        dirs[:] = sorted(d for d in dirs if not (rel_top == "." and d in IGNORED_DIRS))
        for name in sorted(files):
            path = os.path.join(top, name)
            rel = os.path.normpath(os.path.join(rel_top, name))
            if os.path.islink(path):
                out[rel] = "link:" + os.readlink(path)
                continue
            with open(path, "rb") as f:
                out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def hidden(rel: str) -> bool:
    """Whether a relative path is (inside) a hidden temporary; the lock file is not one."""
    return any(part.startswith(".") and part != ".lamina.lock" for part in rel.split(os.sep))


class Snapshots:
    """Copies of a folder taken at fault points (what a crash at each would leave)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.taken: List[Dict[str, Any]] = []
        os.makedirs(folder, exist_ok=True)

    def take(self, root: str, point: Point, phase: str) -> None:
        """Copies ``root`` as it is now."""
        dst = os.path.join(self.folder, f"{len(self.taken):04d}")
        if os.path.isdir(root):
            shutil.copytree(root, dst, symlinks=True, ignore=shutil.ignore_patterns(*IGNORED_DIRS))
        else:
            os.makedirs(dst)
        files = tree(dst)
        visible = {k: v for k, v in files.items() if not hidden(k) and k != ".lamina.lock"}
        self.taken.append({"dir": dst, "point": point, "phase": phase, "visible": visible,
                           "hidden": sorted(k for k in files if hidden(k))})

    def representatives(self) -> List[Dict[str, Any]]:
        """One snapshot per distinct visible state: the one with the most hidden temporaries.

        Two crash states that differ only in hidden temporaries (which every
        reader ignores and the next writer removes) resume the same way; the
        one kept exercises the clean-up most.
        """
        best: Dict[str, Dict[str, Any]] = {}
        order: List[str] = []
        for snap in self.taken:
            key = json.dumps(snap["visible"], sort_keys=True)
            if key not in best:
                order.append(key)
                best[key] = snap
            elif len(snap["hidden"]) > len(best[key]["hidden"]):
                best[key] = snap
        return [best[k] for k in order]


def restore(snapshot: str, root: str) -> None:
    """Puts a snapshot back at ``root`` (what the rerun finds)."""
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(snapshot, root, symlinks=True)


# --------------------------------------------------------------- the CLI
def cli(argv: List[str]) -> Tuple[int, str, str]:
    """Runs ``lamina.cli.main`` in-process; returns ``(code, stdout, stderr)``."""
    from conftest import run_cli

    return run_cli(argv)


def fast_process() -> None:
    """Makes a scenario's many short runs cheap without changing what lands on disk at a fault point.

    matplotlib renders a tiny PNG (:func:`fast_figures`); TensorBoard's summary
    ops are made unavailable (its event files are TensorFlow's, written by C++
    code, and left out of every comparison); ``fsync`` returns at once (it
    decides what survives a power cut, not what a killed process leaves).
    """
    fast_figures()
    sys.modules["tensorboard.summary.v2"] = None  # type: ignore[assignment]
    os.fsync = lambda fd: None


def fast_figures() -> None:
    """Makes matplotlib's ``savefig`` write a tiny valid PNG without laying out the figure.

    Rendering takes most of a tiny run's time and is not what is under test:
    the file is still written through lamina's own (atomic) path.
    """
    import matplotlib.figure
    from PIL import Image

    def savefig(self: Any, fname: Any, *a: Any, **k: Any) -> None:
        fmt = k.get("format") or "png"
        Image.new("RGB", (2, 2), (255, 255, 255)).save(fname, format=fmt.upper())

    matplotlib.figure.Figure.savefig = savefig


# -------------------------------------------------------------- comparing
TIME_KEYS = ("time", "images_per_sec", "train_time_s", "total_time_s")


def _checkpoint_state(folder: str) -> Dict[str, Any]:
    import numpy as np
    import tensorflow as tf

    path = tf.train.latest_checkpoint(folder) if os.path.isdir(folder) else None
    if path is None:
        return {"latest": None}
    reader = tf.train.load_checkpoint(path)
    tensors = {}
    for key in sorted(reader.get_variable_to_shape_map()):
        if key.startswith(("save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH")):
            continue
        value = np.asarray(reader.get_tensor(key))
        tensors[key] = hashlib.sha256(value.tobytes() + str(value.dtype).encode()).hexdigest()
    listed = [os.path.basename(p) for p in tf.train.get_checkpoint_state(folder).all_model_checkpoint_paths]
    return {"latest": os.path.basename(path), "listed": listed, "tensors": tensors}


def _jsonl(path: str) -> Any:
    if not os.path.exists(path):
        return None
    return [{k: v for k, v in json.loads(line).items() if k not in TIME_KEYS} for line in open(path) if line.strip()]


def _json(path: str, drop: Tuple[str, ...] = ()) -> Any:
    if not os.path.exists(path):
        return None
    data = json.load(open(path))
    return {k: v for k, v in data.items() if k not in drop} if isinstance(data, dict) else data


def run_state(run_dir: str, written_at: Optional[str] = None) -> Dict[str, Any]:
    """What must be identical between a resumed run and an uninterrupted one.

    The path the run was written at (``written_at``, default ``run_dir``: a
    folder moved after its run keeps its old path in its files) reads ``RUN``.
    """
    files = tree(run_dir)
    state = {
        "checkpoints": _checkpoint_state(os.path.join(run_dir, "checkpoints")),
        "best": _checkpoint_state(os.path.join(run_dir, "best")),
        "metrics": _jsonl(os.path.join(run_dir, "metrics.jsonl")),
        "results": _json(os.path.join(run_dir, "results.json"), TIME_KEYS),
        "config": _json(os.path.join(run_dir, "config.json")),
        "files": sorted(k for k in files if not hidden(k)),
        "leftovers": sorted(k for k in files if hidden(k)),
    }
    return json.loads(json.dumps(state).replace(json.dumps(written_at or run_dir)[1:-1], "RUN"))


def differences(got: Dict[str, Any], want: Dict[str, Any]) -> List[str]:
    """The top-level keys (and checkpoint tensors) that differ."""
    out = []
    for key in want:
        if got.get(key) == want[key]:
            continue
        if key in ("checkpoints", "best") and got.get(key, {}).get("tensors") and want[key].get("tensors"):
            a, b = got[key], want[key]
            bad = [k for k in b["tensors"] if a["tensors"].get(k) != b["tensors"][k]]
            out.append(f"{key}: latest {a.get('latest')} vs {b.get('latest')}, listed {a.get('listed')} vs "
                       f"{b.get('listed')}, tensors differing: {bad[:4]}")
        else:
            out.append(f"{key}: {json.dumps(got.get(key))[:300]} vs {json.dumps(want[key])[:300]}")
    return out


def _one_error_line(err: str) -> Optional[str]:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    errors = [l for l in lines if not l.startswith("lamina: warning: ")]
    return errors[0] if len(errors) == 1 and errors[0].startswith("lamina: error: ") else None


def _outcome_ok(code: int, err: str) -> Optional[str]:
    """``None`` for a clean run (exit 0, warnings only), else what was wrong."""
    extra = [l for l in err.strip().splitlines() if l.strip() and not l.startswith("lamina: warning: ")]
    if code != 0 or extra:
        return f"exit {code}: {' | '.join(extra)[:400]}"
    return None


# ----------------------------------------------------------- the scenarios
def tiny_data(path: str) -> str:
    """48 random 4x4 examples of 3 classes (+12 test): 3 steps per epoch at batch 12 with --val-split 0.25."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((60, 4, 4), dtype=np.float32)
    y = np.arange(60) % 3
    np.savez(path, x_train=x[:48], y_train=y[:48], x_test=x[48:], y_test=y[48:])
    return path


def train_argv(data: str, run_dir: str) -> List[str]:
    """2 epochs of 3 steps; a periodic checkpoint every 3 steps lands on each epoch end (a re-save of
    that number), and keeping 1 checkpoint drops the previous one at every new number."""
    return ["train", "--data", data, "--model", "mlp", "--epochs", "2", "--batch-size", "12", "--val-split", "0.25",
            "--checkpoint-every", "3", "--keep-checkpoints", "1", "--deterministic", "--seed", "0",
            "--run-dir", run_dir, "--quiet"]


def _enospc(at: int) -> Callable[[Point, str], None]:
    def handler(point: Point, phase: str) -> None:
        if point.index == at and phase == "before":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), point.path)
    return handler


def _enospc_sites(points: List[Point]) -> List[Point]:
    """Where a full disk is tried: the first point of each operation on each kind of file.

    ``checkpoints/`` and ``best/`` are written by the same manager: one set of
    its operations is tried (and ``best/``'s write); a whole-file atomic write
    (results, plots) is tried once per file, ``config.json`` at each step.
    """
    seen, out = set(), []
    for p in points:
        top = p.path.split(os.sep)[0]
        if top in ("checkpoints", "best"):
            key = (p.op, "best" if top == "best" and p.op == "checkpoint-write" else "manager")
        elif os.sep not in p.path and not p.site.startswith((".config.json", "config.json")) and p.op != "write":
            key = ("file", re.sub(r"^\.|\.tmp-\*$", "", p.site))
        else:
            key = (p.op, p.site)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def train_scenario(work: str) -> Dict[str, Any]:
    """Kill points and full disks over every write of ``lamina train`` (checkpoints, best, logs, artifacts)."""
    fast_process()
    data = tiny_data(os.path.join(work, "tiny.npz"))
    run = os.path.join(work, "run")
    argv = train_argv(data, run)
    snaps = Snapshots(os.path.join(work, "snaps"))
    with FaultInjector(run, lambda p, phase: snaps.take(run, p, phase)) as inj:
        code, out, err = cli(argv)
    assert code == 0, err
    points = inj.points
    ref = os.path.join(work, "ref")
    os.rename(run, ref)
    want = run_state(ref, written_at=run)
    cases: List[Dict[str, Any]] = []
    # 1. A kill at every fault point, then the same command again.
    for snap in snaps.representatives():
        restore(snap["dir"], run)
        code, out, err = cli(argv)
        problem = _outcome_ok(code, err)
        diffs = differences(run_state(run), want) if problem is None else []
        p = snap["point"]
        cases.append({"kind": "kill -9" if snap["phase"] == "before" else "kill -9 mid-write", "op": p.op,
                      "site": p.site, "point": p.index, "hidden_left": snap["hidden"],
                      "outcome": "resumed, bit-identical" if problem is None and not diffs else "FAILED",
                      "detail": problem or "; ".join(diffs), "warnings": [l for l in err.splitlines() if l]})
    verified = {json.dumps(s["visible"], sort_keys=True) for s in snaps.representatives()}
    # 2. A full disk at the first point of every kind: one line, exit 2, nothing lost.
    for p in _enospc_sites(points):
        shutil.rmtree(run, ignore_errors=True)
        with FaultInjector(run, _enospc(p.index)):
            code, out, err = cli(argv)
        line = _one_error_line(err)
        failed = None
        if code == 0:
            failed = None if "No space" not in err else "exit 0 with an error"
        elif code != 2 or line is None or "No space left on device" not in line:
            failed = f"exit {code}: {err.strip()[:400]}"
        problem, diffs = None, []
        state = json.dumps({k: v for k, v in tree(run).items() if not hidden(k) and k != ".lamina.lock"}, sort_keys=True)
        known = state in verified  # the state a kill point left too: its rerun was checked above
        if failed is None and not known:
            code2, _, err2 = cli(argv)  # space freed: the same command again
            problem = _outcome_ok(code2, err2)
            diffs = differences(run_state(run), want) if problem is None else []
        ok = failed is None and problem is None and not diffs
        then = "the state of a kill point above" if known else "rerun bit-identical"
        cases.append({"kind": "full disk (ENOSPC)", "op": p.op, "site": p.site, "point": p.index,
                      "outcome": (f"exit 2, one line; {then}" if code == 2 else
                                  f"finished (best-effort write); {then}") if ok else "FAILED",
                      "detail": failed or problem or "; ".join(diffs), "message": line or ""})
    return {"points": len(points), "snapshots": len(snaps.taken), "cases": cases,
            "sites": sorted({(p.op, p.site) for p in points})}


def export_scenario(work: str) -> Dict[str, Any]:
    """Kill points and full disks over every write of ``lamina export`` replacing an export (SavedModel, TFLite)."""
    import numpy as np

    import lamina as lm

    fast_process()
    data = tiny_data(os.path.join(work, "tiny.npz"))
    run = os.path.join(work, "run")
    code, out, err = cli(train_argv(data, run))
    assert code == 0, err
    x = np.load(data)["x_test"][..., None]
    cases: List[Dict[str, Any]] = []
    total_points = 0
    sites = set()
    for fmt in ("savedmodel", "tflite"):
        # ``watch`` holds the published export and nothing else: its siblings are the export's temporaries.
        watch = os.path.join(work, f"{fmt}-out")
        published = "1" if fmt == "savedmodel" else "model"
        output = watch if fmt == "savedmodel" else os.path.join(watch, published)
        argv = ["export", run, "--format", fmt, "--output", output] + (["--version", "1"] if fmt == "savedmodel" else [])
        code, out, err = cli(argv)
        assert code == 0, err
        want = lm.export.load(os.path.join(watch, published))(x)["probabilities"]

        def check(root: str) -> Optional[str]:
            try:
                got = lm.export.load(os.path.join(root, published))(x)["probabilities"]
            except Exception as e:  # noqa: BLE001 - the published export must load
                return f"published export does not load: {type(e).__name__}: {str(e)[:200]}"
            return None if np.allclose(got, want, atol=1e-5) else "published export computes something else"

        snaps = Snapshots(os.path.join(work, f"snaps-{fmt}"))
        with FaultInjector(watch, lambda p, phase: snaps.take(watch, p, phase)) as inj:
            code, out, err = cli(argv)
        assert code == 0, err
        total_points += len(inj.points)
        sites |= {(p.op, p.site) for p in inj.points}
        reps = [r["dir"] for r in snaps.representatives()]
        scratch = os.path.join(work, "scratch")
        for snap in snaps.taken:
            restore(snap["dir"], scratch)
            problem = check(scratch)
            cleaned = snap["dir"] in reps and bool(snap["hidden"])
            if problem is None and cleaned:
                # The next export to the same path removes what the killed one left.
                restore(snap["dir"], watch)
                code, out, err = cli(argv)
                left = [k for k in tree(watch) if hidden(k)]
                if code != 0 or left:
                    problem = f"re-export after the crash: exit {code}, left {left}: {err.strip()[:200]}"
                problem = problem or check(watch)
            cases.append({"kind": "kill -9", "format": fmt, "op": snap["point"].op, "site": snap["point"].site,
                          "point": snap["point"].index, "hidden_left": snap["hidden"],
                          "outcome": ("an intact export published (old or new)" + (", re-export cleans up" if cleaned else ""))
                          if problem is None else "FAILED", "detail": problem or ""})
        shutil.rmtree(scratch, ignore_errors=True)
        for p in _enospc_sites(inj.points):
            with FaultInjector(watch, _enospc(p.index)):
                code, out, err = cli(argv)
            line = _one_error_line(err)
            problem = None
            if code not in (0, 2) or (code == 2 and (line is None or "No space" not in line)):
                problem = f"exit {code}: {err.strip()[:300]}"
            left = [k for k in tree(watch) if hidden(k)]
            if code == 2 and left:
                problem = f"left {left}"
            problem = problem or check(watch)
            cases.append({"kind": "full disk (ENOSPC)", "format": fmt, "op": p.op, "site": p.site, "point": p.index,
                          "outcome": ("exit 2, one line; the previous export intact" if code == 2 else
                                      "exported (clean-up is best effort)") if problem is None else "FAILED",
                          "detail": problem or "", "message": line or ""})
    return {"points": total_points, "cases": cases, "sites": sorted(sites)}


def kill_scenario(work: str) -> Dict[str, Any]:
    """The issue's case with a real ``SIGKILL``: killed inside the re-save of step 3 (a periodic save on an epoch end).

    The new files of ``ckpt-3`` are listed under their temporary name; the
    process is killed between linking the data file and the index into place.
    Nothing returns: the process dies (the test then runs ``resume``).
    """
    fast_process()
    data = tiny_data(os.path.join(work, "tiny.npz"))
    run = os.path.join(work, "run")
    links = []

    def handler(point: Point, phase: str) -> None:
        if point.op == "link" and point.path.startswith("checkpoints" + os.sep):
            links.append(point)
            if len(links) == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    with FaultInjector(run, handler):
        cli(train_argv(data, run))
    return {"error": "not killed: the re-save made no hard links"}


def resume_scenario(work: str) -> Dict[str, Any]:
    """After :func:`kill_scenario`: what the kill left, the same command again, and an uninterrupted run to compare."""
    import tensorflow as tf

    fast_process()
    data = os.path.join(work, "tiny.npz")
    run = os.path.join(work, "run")
    folder = os.path.join(run, "checkpoints")
    left = {"listed": [os.path.basename(p) for p in tf.train.get_checkpoint_state(folder).all_model_checkpoint_paths],
            "files": sorted(os.listdir(folder))}
    code, out, err = cli(train_argv(data, run))
    ref = os.path.join(work, "ref")
    cli(train_argv(data, ref))
    got, want = run_state(run), run_state(ref)
    return {"left": left, "code": code, "stdout": out, "stderr": err, "differences": differences(got, want)}


SCENARIOS = {"train": train_scenario, "export": export_scenario, "kill": kill_scenario, "resume": resume_scenario}


def main(argv: List[str]) -> int:
    """``python tests/faults.py SCENARIO WORKDIR REPORT``: runs a scenario, writes its JSON report."""
    name, work, report = argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.makedirs(work, exist_ok=True)
    os.chdir(work)
    t0 = time.monotonic()
    try:
        result = SCENARIOS[name](work)
    except BaseException:  # noqa: BLE001 - reported to the test
        result = {"error": traceback.format_exc()}
    result["seconds"] = round(time.monotonic() - t0, 1)
    with open(report, "w") as f:
        json.dump(result, f, indent=1, default=list)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
