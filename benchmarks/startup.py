"""Start-up cost: ``import lamina`` against ``import tensorflow`` alone, and time to the first step.

Usage::

    python benchmarks/startup.py            # ~1-2 min
    python benchmarks/startup.py --smoke    # one run of each

Every measurement runs in a fresh interpreter, alternating between the
commands (so both see the same machine load), and the median of ``--repeats``
runs is reported:

* ``import tensorflow`` then ``import lamina`` in the same child, each timed
  (interpreter start-up excluded): the second is what lamina adds on top of
  TensorFlow (target: < 0.3 s), paired within one process; then
  ``lamina.train``/``optim``/``losses`` (lazy; what a training script adds);
* ``import lamina`` alone in a fresh child (TensorFlow + lamina);
* the first pair again with Keras made unimportable, as in an install without
  Keras (TensorFlow's own ``__init__`` imports ``keras.src.optimizers``
  whenever Keras is installed, which is why the "Keras loaded" column says yes
  even for plain ``import tensorflow``);
* ``lamina train --max-steps 1 --quiet``: wall time of the whole command, from
  process start to exit (bundled digits data, the default ConvNet: data
  loading, model build, step tracing, one step, the final evaluation and the
  run directory's files), run as ``python -m lamina`` in a temporary folder;
  for reference, ``python -c "import tensorflow"`` timed the same way.

* time to the first training step, lamina against Keras 3 on the same model
  and data (lamina also as it installs, without Keras, which TensorFlow's
  ``__init__`` otherwise imports): a fresh interpreter imports the framework, loads scikit-learn's
  digits (8x8x1, scaled to [0, 1]), builds the seed ConvNet (conv 32, conv 32,
  pool, conv 64, conv 64, pool, dense 128, dense 10), and runs one Adam step
  of batch 32 (lamina: ``Trainer.train_step``; Keras: ``compile`` +
  ``train_on_batch``), tracing included; the time from spawning the process
  to the end of that step (target: lamina / Keras <= 1.0), alternating
  between the two.

It also lists lamina's slowest own modules from ``python -X importtime`` and
says whether ``import lamina`` loaded Keras (it must not).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import format_table, machine_info, machine_line, median, python_env  # noqa: E402

# Makes `keras` / `tf_keras` unimportable, as in an install without Keras: TensorFlow's
# __init__ eagerly imports keras.src.optimizers whenever Keras is installed.
_HIDE_KERAS = "sys.modules['keras'] = None\nsys.modules['tf_keras'] = None\n"  # import -> ModuleNotFoundError
_TIMED_IMPORTS = (
    "import sys, time\n"
    "{prelude}"
    "for i, stmt in enumerate({stmts!r}):\n"
    "    t = time.perf_counter()\n"
    "    exec(stmt)\n"
    "    print('IMPORT', i, time.perf_counter() - t, int(sys.modules.get('keras') is not None))\n"
)
# One fresh child per group; its statements are timed one after the other, so
# "import lamina" right after "import tensorflow" is lamina's own cost, paired
# within one process (differences of separate processes' TensorFlow imports are
# dominated by noise on a loaded machine).
GROUPS: Dict[str, Tuple[Tuple[Tuple[str, str], ...], bool]] = {
    "keras": ((("import tensorflow", "import tensorflow"),
               ("import lamina (after tensorflow)", "import lamina"),
               ("+ lamina.train/optim/losses", "import lamina.train, lamina.optim, lamina.losses")), False),
    "fresh": ((("import lamina (fresh: tensorflow + lamina)", "import lamina"),), False),
    "no_keras": ((("import tensorflow, Keras not installed", "import tensorflow"),
                  ("import lamina (after tensorflow), Keras not installed", "import lamina")), True),
}


def timed_imports(stmts: Sequence[str], timeout: float, hide_keras: bool = False) -> List[Tuple[float, bool]]:
    """Seconds spent in each statement, run in order in one fresh interpreter, and whether Keras was loaded after it.

    With ``hide_keras`` the child cannot import Keras (as if it were not installed).
    """
    code = _TIMED_IMPORTS.format(stmts=list(stmts), prelude=_HIDE_KERAS if hide_keras else "")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                         env=python_env(), cwd=tempfile.gettempdir())
    res = [(float(parts[2]), parts[3] == "1") for parts in
           (line.split() for line in out.stdout.splitlines() if line.startswith("IMPORT "))]
    if len(res) != len(stmts):
        raise RuntimeError(f"{stmts!r} failed: {(out.stderr.strip().splitlines() or ['no output'])[-1]}")
    return res


# The first-step children: each prints ``FIRST_STEP <time.time()>`` when its first step has finished.
_FIRST_STEP_LAMINA = """
import time
import lamina as lm
import tensorflow as tf
data = lm.data.load("digits")
x, y = next(iter(data.batches("train", 32, shuffle=False)))
model = lm.models.ConvNet(data.num_classes)
trainer = lm.train.Trainer(model, lm.optim.Adam(3e-3), "cross_entropy", quiet=True, tensorboard=False)
loss = float(trainer.train_step(x, y)["loss"])
print("FIRST_STEP", time.time(), loss, flush=True)
"""
_FIRST_STEP_KERAS = """
import time
import numpy as np
import keras
from sklearn.datasets import load_digits
d = load_digits()
x = (d.images[:32, :, :, None] / 16.0).astype("float32")
y = d.target[:32].astype("int32")
L = keras.layers
model = keras.Sequential([keras.Input((8, 8, 1)),
    L.Conv2D(32, 3, padding="same", activation="relu"), L.Conv2D(32, 3, padding="same", activation="relu"),
    L.MaxPooling2D(2),
    L.Conv2D(64, 3, padding="same", activation="relu"), L.Conv2D(64, 3, padding="same", activation="relu"),
    L.MaxPooling2D(2),
    L.Flatten(), L.Dense(128, activation="relu"), L.Dense(10)])
model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
loss = float(model.train_on_batch(x, y))
print("FIRST_STEP", time.time(), loss, flush=True)
"""


def first_step_seconds(code: str, cwd: str, timeout: float) -> float:
    """Seconds from spawning a fresh interpreter running ``code`` to the end of its first step."""
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                         env=python_env(), cwd=cwd)
    marks = [line.split() for line in out.stdout.splitlines() if line.startswith("FIRST_STEP ")]
    if out.returncode != 0 or not marks:
        raise RuntimeError(f"first-step child exited {out.returncode}: {(out.stderr.strip().splitlines() or [''])[-1]}")
    return float(marks[-1][1]) - t0


def wall(cmd: List[str], cwd: str, timeout: float) -> float:
    """Wall seconds of ``cmd`` from spawn to exit; raises if it fails."""
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=python_env(), cwd=cwd)
    dt = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {out.returncode}: {(out.stderr.strip().splitlines() or [''])[-1]}")
    return dt


def lamina_import_profile(top: int) -> List[Tuple[float, str]]:
    """lamina's own modules with the largest self import time (seconds), from ``-X importtime``."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import tensorflow; import lamina"],
                         capture_output=True, text=True, env=python_env(), cwd=tempfile.gettempdir())
    rows = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = [p.strip() for p in line[len("import time:"):].split("|")]
        if len(parts) == 3 and parts[0].isdigit() and parts[2].lstrip().startswith("lamina"):
            rows.append((int(parts[0]) / 1e6, parts[2].strip()))
    return sorted(rows, reverse=True)[:top]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=None, help="fresh processes per import measurement (default 7; smoke 1)")
    p.add_argument("--train-repeats", type=int, default=None, help="`lamina train` runs (default 3; smoke 1)")
    p.add_argument("--no-train", action="store_true", help="skip the time-to-first-step measurement")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per child process")
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    p.add_argument("--smoke", action="store_true",
                   help="one run: the paired tensorflow/lamina import child and one `lamina train` (tests)")
    args = p.parse_args(argv)
    repeats = args.repeats or (1 if args.smoke else 7)
    train_repeats = args.train_repeats or (1 if args.smoke else 3)
    info = machine_info()
    print(machine_line(info), flush=True)

    times: Dict[str, List[float]] = {}
    keras_loaded: Dict[str, bool] = {}
    groups = ["keras"] if args.smoke else list(GROUPS)
    for r in range(repeats):
        for g in groups[r % len(groups):] + groups[: r % len(groups)]:  # rotate the order
            labels, hide = GROUPS[g]
            for (label, _), (dt, keras) in zip(labels, timed_imports([st for _, st in labels], args.timeout, hide)):
                times.setdefault(label, []).append(dt)
                keras_loaded[label] = keras_loaded.get(label, False) or keras
    med = {k: median(v) for k, v in times.items()}
    order = [label for g in groups for label, _ in GROUPS[g][0]]
    rows = [[k, f"{med[k]:.3f}", f"{min(times[k]):.3f}-{max(times[k]):.3f}", "yes" if keras_loaded[k] else "no"]
            for k in order]
    print()
    print(f"### Import time (seconds in the import statement, fresh interpreters, median of {repeats})")
    print()
    print(format_table(["statement", "seconds", "min-max", "Keras loaded"], rows))
    print()
    added = med["import lamina (after tensorflow)"]
    verdict = "met" if added < 0.3 else "BELOW"
    print(f"- lamina adds {added:.3f} s to `import tensorflow` (target < 0.3 s) -> {verdict}; "
          f"{added + med['+ lamina.train/optim/losses']:.3f} s with its lazy training modules")
    if "no_keras" in groups:
        print(f"- without Keras installed: lamina adds {med['import lamina (after tensorflow), Keras not installed']:.3f} s, "
              f"and TensorFlow imports {med['import tensorflow'] - med['import tensorflow, Keras not installed']:.2f} s faster: "
              "with Keras installed, TensorFlow's own __init__ imports keras.src.optimizers (lamina itself never imports Keras)")
    slow = [] if args.smoke else lamina_import_profile(5)
    if slow:
        print("- lamina's slowest own modules (self time, -X importtime): "
              + ", ".join(f"{name} {sec * 1000:.0f} ms" for sec, name in slow))

    result = {"machine": info, "import_s": med, "import_samples": times, "lamina_adds_s": added,
              "keras_loaded": keras_loaded}
    if not args.no_train:
        ttfs: List[float] = []
        bare: List[float] = []
        with tempfile.TemporaryDirectory(prefix="lamina_ttfs_") as tmp:
            for r in range(train_repeats):
                run_dir = os.path.join(tmp, f"run{r}")
                cmd = [sys.executable, "-m", "lamina", "train", "--max-steps", "1", "--quiet", "--run-dir", run_dir]
                if not args.smoke:
                    bare.append(wall([sys.executable, "-c", "import tensorflow"], tmp, args.timeout))
                ttfs.append(wall(cmd, tmp, args.timeout))
        bare = bare or [float("nan")]
        print()
        print(f"### Time to first step (wall, process start to exit, median of {train_repeats})")
        print()
        print(format_table(["command", "seconds", "min-max"], [
            ["python -c 'import tensorflow'", f"{median(bare):.2f}", f"{min(bare):.2f}-{max(bare):.2f}"],
            ["lamina train --max-steps 1 --quiet", f"{median(ttfs):.2f}", f"{min(ttfs):.2f}-{max(ttfs):.2f}"],
        ]))
        print()
        print(f"- `lamina train` spends {median(ttfs) - median(bare):.2f} s beyond starting Python + TensorFlow")
        result.update({"ttfs_s": median(ttfs), "ttfs_samples": ttfs, "python_tf_s": median(bare)})
        first: Dict[str, List[float]] = {"lamina": [], "keras": [], "lamina, Keras not installed": []}
        with tempfile.TemporaryDirectory(prefix="lamina_first_step_") as tmp:
            for r in range(train_repeats):
                pair = [("lamina", _FIRST_STEP_LAMINA), ("keras", _FIRST_STEP_KERAS),
                        ("lamina, Keras not installed", "import sys\n" + _HIDE_KERAS + _FIRST_STEP_LAMINA)]
                for name, code in (pair if r % 2 == 0 else pair[::-1]):
                    try:
                        first[name].append(first_step_seconds(code, tmp, args.timeout))
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        print(f"- first step, {name}: failed ({e})", flush=True)
        if first["lamina"] and first["keras"]:
            lam, ker = median(first["lamina"]), median(first["keras"])
            print()
            print(f"### Time to the first training step (spawn to the end of step 1, median of {train_repeats})")
            print()
            print(format_table(["framework", "seconds", "min-max"], [
                [name, f"{median(v):.2f}", f"{min(v):.2f}-{max(v):.2f}"] for name, v in first.items()]))
            print()
            ratio = lam / ker
            print(f"- target: lamina / Keras time to first step <= 1.0: {ratio:.2f} ({'met' if ratio <= 1.0 else 'not met'}), "
                  "both with Keras installed (TensorFlow's own __init__ then imports Keras for lamina too)")
            if first["lamina, Keras not installed"]:
                alone = median(first["lamina, Keras not installed"]) / ker
                print(f"- lamina as it installs (no Keras; TensorFlow imports faster) / Keras: {alone:.2f}")
                result["first_step_ratio_without_keras"] = alone
            result.update({"first_step_s": {k: median(v) for k, v in first.items()}, "first_step_samples": first,
                           "first_step_ratio": ratio})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print(f"done (load {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
