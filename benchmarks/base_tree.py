"""lamina at another git revision, importable as ``lamina_base`` beside the current ``lamina``.

A change's A/B in one process (``train_step.py --base REV``): the same
round-robin windows then time both engines under the same load, which
separate processes cannot (their paired differences drown in the machine's
drift). The revision's ``lamina/`` folder is extracted with ``git archive``
into a temporary folder and its imports are rewritten from ``lamina`` to
``lamina_base``; nothing of the working tree changes.

Only the package's own imports are rewritten (``from lamina...``,
``import lamina...``, and ``"lamina.x"`` module-name strings such as those of
lazy imports); that covers every revision of this repository so far.
"""

from __future__ import annotations

import atexit
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from types import ModuleType

__all__ = ["load_base", "rewrite_imports"]

NAME = "lamina_base"
_FROM = re.compile(r"\bfrom lamina(?=[.\s])")
_IMPORT_AS = re.compile(r"^(\s*)import lamina((?:\.\w+)*) as ", re.M)
_IMPORT = re.compile(r"^(\s*)import lamina((?:\.\w+)*)\s*$", re.M)
_STRING = re.compile(r"""(["'])lamina\.""")


def rewrite_imports(source: str) -> str:
    """``source`` with every import of ``lamina`` turned into one of ``lamina_base``.

    ``import lamina.x`` (no ``as``) still binds the name ``lamina``, now to
    ``lamina_base``, on the same line (line numbers stay).

    Args:
      source: a module's text.

    Returns:
      The rewritten text.
    """
    source = _FROM.sub(f"from {NAME}", source)
    source = _IMPORT_AS.sub(lambda m: f"{m.group(1)}import {NAME}{m.group(2)} as ", source)
    source = _IMPORT.sub(lambda m: f"{m.group(1)}import {NAME}{m.group(2)}; import {NAME} as lamina", source)
    return _STRING.sub(lambda m: f"{m.group(1)}{NAME}.", source)


def load_base(rev: str, repo: str) -> ModuleType:
    """Imports ``lamina`` as it is at ``rev`` of the git repository ``repo``, named ``lamina_base``.

    Args:
      rev: a git revision (``f865df1``, ``main``, ``HEAD~3``).
      repo: a folder inside the repository.

    Returns:
      The imported ``lamina_base`` package.

    Raises:
      RuntimeError: if ``rev`` cannot be read, or a ``lamina_base`` is already imported.
    """
    if NAME in sys.modules:
        raise RuntimeError(f"base_tree: {NAME} is already imported (one base revision per process)")
    root = tempfile.mkdtemp(prefix="lamina_base_")
    atexit.register(shutil.rmtree, root, True)
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=repo, capture_output=True, text=True)
    if top.returncode != 0:
        raise RuntimeError(f"base_tree: {repo!r} is not inside a git repository: {top.stderr.strip()}")
    archive = subprocess.run(["git", "archive", rev, "lamina"], cwd=top.stdout.strip(), capture_output=True)
    if archive.returncode != 0:
        raise RuntimeError(f"base_tree: cannot read lamina/ at revision {rev!r}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", root], input=archive.stdout, check=True)
    os.rename(os.path.join(root, "lamina"), os.path.join(root, NAME))
    for folder, _, files in os.walk(os.path.join(root, NAME)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                with open(path, "w", encoding="utf-8") as f:
                    f.write(rewrite_imports(text))
    sys.path.insert(0, root)
    try:
        return importlib.import_module(NAME)
    finally:
        sys.path.remove(root)
