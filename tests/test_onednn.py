"""The ``lamina`` command turns on TensorFlow's oneDNN kernels where TensorFlow leaves them off (lamina/onednn.py)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from lamina import onednn

AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
LINUX = ("x86_64", "Linux")


@pytest.mark.parametrize(
    "flags, machine, system, environ, expected",
    [
        (AVX2, *LINUX, {}, True),                                    # AMD Zen 2/3, Intel Haswell..Cascade Lake w/o VNNI
        (AVX2 | {"avx512f"}, *LINUX, {}, True),                      # AVX-512 without VNNI (Skylake-SP)
        (AVX2 | {"avx512f", "avx512_vnni"}, *LINUX, {}, False),      # TensorFlow turns it on itself
        (AVX2 | {"avx_vnni"}, *LINUX, {}, False),
        (AVX2 | {"avx512_bf16"}, *LINUX, {}, False),
        (AVX2 | {"amx_tile", "amx_bf16"}, *LINUX, {}, False),
        (AVX2, *LINUX, {"TF_ENABLE_ONEDNN_OPTS": "0"}, False),       # the user's choice wins
        (AVX2, *LINUX, {"TF_ENABLE_ONEDNN_OPTS": "1"}, False),       # already on: nothing to set
        (frozenset({"sse4_2", "avx"}), *LINUX, {}, False),           # no AVX2 / FMA: not measured
        (frozenset({"asimd", "sve"}), "aarch64", "Linux", {}, False),
        (AVX2, "x86_64", "Darwin", {}, False),
        (AVX2, "AMD64", "Windows", {}, False),
    ],
)
def test_should_enable_follows_the_cpu_flags(flags, machine, system, environ, expected) -> None:
    assert onednn.should_enable(flags, machine, system, environ) is expected


def test_cpu_flags_reads_the_first_flags_line(tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert onednn.cpu_flags(str(info)) == {"fpu", "avx2", "fma"}
    assert onednn.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_enable_for_command_leaves_a_loaded_tensorflow_alone() -> None:
    import tensorflow  # noqa: F401  (loaded: the variable would be read too late)

    env: dict = {}
    assert onednn.enable_for_command(env) is False and env == {}


_PROBE = (
    "import sys; sys.argv = ['lamina']\n"
    "import lamina\n"
    "from tensorflow.python.util import _pywrap_util_port as port\n"
    "print(int(port.IsMklEnabled()), int(lamina.onednn.enabled_by_lamina()))\n"
)


def _probe(env_value: str | None) -> tuple:
    env = {k: v for k, v in os.environ.items() if k != onednn.ENV}
    if env_value is not None:
        env[onednn.ENV] = env_value
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    on, by_lamina = out.stdout.split()
    return bool(int(on)), bool(int(by_lamina))


def test_the_command_runs_tensorflow_on_onednn_where_this_cpu_calls_for_it() -> None:
    flags = onednn.cpu_flags()
    wanted = onednn.should_enable(flags, platform.machine(), platform.system(), {})
    on, by_lamina = _probe(None)
    assert by_lamina is wanted
    if wanted:
        assert on, "lamina set TF_ENABLE_ONEDNN_OPTS=1 but TensorFlow did not turn oneDNN on"
    # The user's 0 wins everywhere: TensorFlow's Eigen kernels, and lamina says it did nothing.
    assert _probe("0") == (False, False)


def test_another_programs_python_m_that_imports_lamina_is_not_the_command(tmp_path) -> None:
    # `python -m pytest`, `python -m myapp`: argv[0] is a `__main__.py` too; lamina must leave the process alone
    # (TensorFlow's own default, whatever it is on this CPU: the variable stays unset).
    (tmp_path / "myapp.py").write_text(
        "import os\nimport lamina\nimport lamina.onednn\n"
        f"print(int(lamina._CLI), int(lamina.onednn.enabled_by_lamina()), os.environ.get({onednn.ENV!r}, '-'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in (onednn.ENV, "TF_CPP_MIN_LOG_LEVEL")}
    out = subprocess.run([sys.executable, "-m", "myapp"], capture_output=True, text=True, timeout=300, env=env,
                         cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["0", "0", "-"]
