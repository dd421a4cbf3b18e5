"""TF Serving's model layout: ``<model_base>/<integer version>/saved_model.pb``.

TensorFlow Serving watches a model's base folder, takes every child whose name
is a base-10 integer as a version and serves the highest one ("No versions of
servable found" when there is none). ``lamina export --format savedmodel``
writes into such a folder; the loaders accept the base folder (the highest
version is used), a version folder, and exports written before versions
existed (``saved_model.pb`` directly in the folder).
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Union

__all__ = ["version_dirs", "latest_version", "next_version", "versioned_path", "resolve_export_dir"]

_MARKERS = ("saved_model.pb", "lamina_export.json")


def _is_export(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, m)) for m in _MARKERS)


def version_dirs(base: str) -> Dict[int, str]:
    """The version folders of a model base folder.

    Args:
      base: the model's base folder (may not exist).

    Returns:
      ``{version: path}`` for every child named by digits only that holds an
      export (``saved_model.pb`` or ``lamina_export.json``), sorted by version.
    """
    if not os.path.isdir(base):
        return {}
    found = {}
    for name in os.listdir(base):
        path = os.path.join(base, name)
        if name.isdigit() and os.path.isdir(path) and _is_export(path):
            found[int(name)] = path
    return dict(sorted(found.items()))


def latest_version(base: str) -> Optional[int]:
    """The highest version in ``base`` (the one TF Serving serves), or ``None``.

    Args:
      base: the model's base folder.

    Returns:
      The version number or ``None`` when there is none.
    """
    versions = version_dirs(base)
    return max(versions) if versions else None


def next_version(base: str) -> int:
    """One more than the highest version in ``base``, or 1.

    Args:
      base: the model's base folder.

    Returns:
      The version number a new export gets by default.
    """
    latest = latest_version(base)
    return 1 if latest is None else latest + 1


def versioned_path(base: str, version: Union[int, str, None] = "next") -> str:
    """The folder an export of ``version`` goes to: ``base/<version>``.

    Args:
      base: the model's base folder.
      version: a positive integer, or ``"next"`` (:func:`next_version`).

    Returns:
      ``os.path.join(base, str(version))``.

    Raises:
      ValueError: for a version that is not a positive integer or ``"next"``.
    """
    if version is None or version == "next":
        return os.path.join(base, str(next_version(base)))
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"lamina.export: version must be a positive integer or 'next', got {version!r}")
    return os.path.join(base, str(version))


def resolve_export_dir(path: str) -> str:
    """The export folder to load for ``path``.

    Args:
      path: a version folder, an unversioned export folder, or a model base
        folder holding version folders.

    Returns:
      Its highest version folder when it has one (also when ``path`` itself
      holds an older, unversioned export), else ``path`` (the caller reports
      what is missing).
    """
    latest = latest_version(path)
    return version_dirs(path)[latest] if latest is not None else path
