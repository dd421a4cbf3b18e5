"""kill -9 in the middle of training, then rerun: bit-identical to an uninterrupted run, for every kind of step.

The supervised step is covered in tests/test_reliability.py; here the three
other kinds the examples use: two optimizers (examples/dcgan.py), a custom step
on ``x`` alone (examples/vae.py) and an overridden ``compute_loss`` on token ids
(examples/char_lm.py), each on a small slice of its data.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILL_AT = 11  # steps; checkpoints every 4 steps: the rerun starts from step 8

_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, os, signal, sys
    kind, run_dir, kill_at, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    import numpy as np
    import tensorflow as tf
    import lamina as lm

    def example(name):
        spec = importlib.util.spec_from_file_location(name, os.path.join({repo!r}, "examples", name + ".py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    class KillAt(lm.train.Callback):
        def on_step_end(self, step, logs):
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    lm.set_seed(0)
    common = dict(seed=0, deterministic=True, run_dir=run_dir, checkpoint_every=4, quiet=True, tensorboard=False)
    if kind == "gan":
        ex = example("dcgan")
        gen, disc = ex.Generator(), ex.Discriminator()
        gen(tf.zeros([1, ex.LATENT])); disc(tf.zeros([1, 8, 8, 1]))
        g_opt, d_opt = lm.optim.Adam(2e-3, beta1=0.5, name="g"), lm.optim.Adam(2e-3, beta1=0.5, name="d")
        trainer = lm.train.Trainer({{"generator": gen, "discriminator": disc}}, {{"generator": g_opt, "discriminator": d_opt}},
                                   loss=None, metrics=(), step=ex.gan_step_for(gen, disc, g_opt, d_opt), **common)
        data = (ex.load_images()[:96],)
        modules = {{"gen": gen, "disc": disc}}
    elif kind == "vae":
        ex = example("vae")
        model = ex.VAE()
        model.encode(tf.zeros([1, 8, 8, 1])); model.decode(tf.zeros([1, ex.LATENT]))
        train_step, eval_step = ex.steps_for(model)
        trainer = lm.train.Trainer(model, lm.optim.Adam(2e-3), loss=None, metrics=(), step=train_step,
                                   eval_step=eval_step, ema=0.9, **common)
        data = (ex.load_images()[0][:96],)
        modules = {{"vae": model}}
    else:
        ex = example("char_lm")
        model = ex.build_model(max_len=16, dim=16, heads=2, layers=1, mlp=32)
        trainer = ex.LanguageModelTrainer(model, lm.optim.AdamW(1e-3, no_weight_decay="bias_and_norm"), loss=None,
                                          metrics=(), grad_accum_steps=3, **common)
        train, _ = ex.load_text(window=16)
        data = (train[:96],)
        modules = {{"lm": model}}
    history = trainer.fit(data, batch_size=16, epochs=3, callbacks=[KillAt()] if kill_at else [])
    weights = {{f"{{name}}/{{k}}": v for name, m in modules.items() for k, v in m.get_weights().items()}}
    for name, opt in trainer.optimizers.items():
        weights.update({{f"opt_{{name}}/{{i}}": v.numpy() for i, v in enumerate(opt.variables)}})
    if trainer.ema is not None:
        weights.update({{f"ema/{{i}}": v.numpy() for i, v in enumerate(trainer.ema.shadows)}})
    np.savez(out, **{{k.replace("/", "|"): v for k, v in weights.items()}})
    print("RESULT " + json.dumps({{"history": history}}), flush=True)
    """
).format(repo=REPO)


def _run(kind, run_dir, kill_at, out):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", _SCRIPT, kind, run_dir, str(kill_at), out], capture_output=True,
                          text=True, env=env, timeout=600, cwd=REPO)


@pytest.mark.parametrize("kind", ["gan", "vae", "lm"])
def test_kill_9_then_rerun_is_bit_identical(tmp_path, kind):
    full = _run(kind, str(tmp_path / "full"), 0, str(tmp_path / "full.npz"))
    assert full.returncode == 0, full.stderr[-3000:]
    killed = _run(kind, str(tmp_path / "run"), KILL_AT, str(tmp_path / "never.npz"))
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not os.path.exists(tmp_path / "never.npz")
    resumed = _run(kind, str(tmp_path / "run"), 0, str(tmp_path / "resumed.npz"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = np.load(tmp_path / "full.npz"), np.load(tmp_path / "resumed.npz")
    assert sorted(a.files) == sorted(b.files) and len(a.files) > 6
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    history = lambda proc: json.loads(proc.stdout.split("RESULT ", 1)[1])["history"]  # noqa: E731
    full_h, resumed_h = history(full), history(resumed)
    assert [h["epoch"] for h in resumed_h] == [1, 2, 3]
    for x, y in zip(full_h, resumed_h):
        for k in x:
            if k not in ("time", "images_per_sec"):
                assert x[k] == y[k], (k, x[k], y[k])
