"""Crash-safe checkpoints: atomic saves, SHA-256 sidecars, verified restores.

What ``tf.train.CheckpointManager`` already guarantees (TensorFlow 2.x): the
tensors are written under ``<prefix>_temp/`` and merged into
``<prefix>.index`` / ``<prefix>.data-*`` by ``MergeV2Checkpoints``; only after
that does the manager rewrite the ``checkpoint`` state file, atomically (a
temporary file renamed over the old one). So a crash in the middle of a save
normally leaves the state file pointing at the previous checkpoint. It does
not guarantee: that the files reach the disk (nothing is fsync'ed), that a
listed checkpoint is still intact when it is read back (nothing is checked
before ``restore``, which then fails with ``DataLossError`` or, for a bad
``.index``, may refuse to open at all), nor that re-saving an existing number
(lamina saves step ``N`` twice when a periodic save falls on an epoch end)
keeps the old, listed files valid while the new ones are written over them.

:class:`SafeCheckpointManager` adds what is missing, and keeps the same files
and ``checkpoint`` state file, so ``tf.train.latest_checkpoint`` and
``tf.train.load_checkpoint`` still work on its folders:

* **atomic save**: ``Checkpoint.write`` goes to a hidden temporary prefix
  (``.tmp-ckpt-40-<random>``); the files are fsync'ed, a SHA-256 sidecar
  (``ckpt-40.sha256``, JSON) is written, the files are renamed to the final
  prefix and only then is the state file replaced (temporary file, fsync,
  rename, fsync of the folder). A checkpoint is visible only once complete.
  Re-saving a number that exists never touches listed files: the new files
  are first listed under their temporary name (with their own sidecar), then
  hard-linked (or copied) to the final name, which is listed last; the next
  save or resume (:meth:`SafeCheckpointManager.recover`) finishes a re-save
  that a crash cut short. ``SIGINT``/``SIGTERM`` are held back during a save.
* **verified restore**: :meth:`SafeCheckpointManager.latest_good` checks the
  listed checkpoints, newest first — every file's size and SHA-256 against the
  sidecar, else (checkpoints written by plain TensorFlow) that the index opens
  and every tensor can be read (TensorFlow checks each tensor's CRC32C) — and
  prints ``lamina: warning: checkpoint runs/x/checkpoints/ckpt-40 is corrupt
  (...); using ckpt-35`` for each bad one.
* **failed writes** (a full disk, an unwritable folder) raise
  :class:`CheckpointError`, one line naming the folder and the OS error; the
  partial files are removed and the earlier checkpoints are left as they were.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sys
import uuid
from typing import Any, Callable, Dict, List, Optional

import tensorflow as tf

from lamina.fileio import atomic_write_json, fsync_dir, fsync_file
from lamina.train.interrupts import deferred_interrupts

__all__ = ["CheckpointError", "SafeCheckpointManager", "verify_checkpoint", "latest_good_checkpoint", "SIDECAR_SUFFIX"]

SIDECAR_SUFFIX = ".sha256"
STATE_FILE = "checkpoint"
_TMP_PREFIX = ".tmp-"
_CHUNK = 1 << 20


class CheckpointError(RuntimeError):
    """A checkpoint could not be written, or none of a folder's checkpoints is intact.

    The message is one line naming the folder (or checkpoint) and the problem.
    """

    def __init__(self, message: str) -> None:
        """Builds the error; line breaks in ``message`` are folded into one line.

        Args:
          message: what went wrong, naming the folder or checkpoint.
        """
        super().__init__(" ".join(str(message).split()))


_warned: set = set()


def _warn(message: str) -> None:
    # The same line twice in one process (a run read by two steps of one command) says nothing new.
    if message in _warned:
        return
    _warned.add(message)
    print(f"lamina: warning: {message}", file=sys.stderr, flush=True)


def _reason(err: BaseException) -> str:
    """One short line describing an OS or TensorFlow error."""
    if isinstance(err, OSError) and err.strerror:
        return f"[Errno {err.errno}] {err.strerror}" if err.errno else err.strerror
    text = getattr(err, "message", None) or str(err) or type(err).__name__
    text = re.sub(r"\{\{[^}]*\}\}", "", str(text))
    text = re.sub(r"\s*\[Op:[^\]]*\]", "", text)
    # TensorFlow names the temporary file it was writing: the folder is named by the caller.
    text = re.sub(r"\S*" + re.escape(_TMP_PREFIX) + r"\S*?;\s*", "", text)
    return (" ".join(text.split()) or type(err).__name__)[:300]


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files_of(prefix: str) -> List[str]:
    """The checkpoint files of ``prefix``: ``.index`` and ``.data-*`` (not the sidecar)."""
    folder, base = os.path.split(prefix)
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return []
    out = []
    for name in names:
        if name == base + ".index" or (name.startswith(base + ".data-") and not name.endswith(".tmp")):
            out.append(os.path.join(folder, name))
    return sorted(out)


def _remove(paths: List[str]) -> None:
    for path in paths:
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                for root, dirs, files in os.walk(path, topdown=False):
                    for name in files:
                        os.remove(os.path.join(root, name))
                    for name in dirs:
                        os.rmdir(os.path.join(root, name))
                os.rmdir(path)
            else:
                os.remove(path)
        except FileNotFoundError:
            pass


def _display(prefix: str) -> str:
    """A checkpoint prefix as the user gave its folder (relative stays relative)."""
    return os.path.normpath(prefix)


def _checkpoint_files(prefix: str, names: Any) -> Optional[str]:
    """Why the file names a sidecar lists are not plain files of ``prefix`` in its folder (``None`` if they are)."""
    base = os.path.basename(prefix)
    for name in names:
        if not isinstance(name, str) or os.path.basename(name) != name or not (
                name == base + ".index" or name.startswith(base + ".data-")):
            return f"its checksum file lists {name!r}, which is not one of its files"
    return None


def verify_checkpoint(prefix: str, full_read: Optional[bool] = None) -> Optional[str]:
    """Checks that a checkpoint is complete and intact.

    With a SHA-256 sidecar (written by :class:`SafeCheckpointManager`), every
    listed file must exist with the recorded size and hash. Without one
    (checkpoints written by plain TensorFlow), or with ``full_read=True``,
    the index is opened and every tensor is read, which makes TensorFlow check
    each tensor's CRC32C. Its files must be regular files of its folder: a
    symbolic link (to another run, say) makes it corrupt.

    Args:
      prefix: a checkpoint prefix such as ``runs/x/checkpoints/ckpt-40``.
      full_read: force (``True``) or skip (``False``) reading every tensor;
        default: only when there is no sidecar.

    Returns:
      ``None`` if the checkpoint is good, else a short reason.
    """
    index = prefix + ".index"
    folder = os.path.dirname(prefix)
    sidecar = prefix + SIDECAR_SUFFIX
    for path in [index, sidecar] + _files_of(prefix):
        if os.path.islink(path):
            return f"{os.path.basename(path)} is a symbolic link (to {os.path.realpath(path)})"
    if not os.path.isfile(index):
        return "its .index file is missing"
    has_sidecar = os.path.isfile(sidecar)
    if has_sidecar:
        try:
            with open(sidecar) as f:
                record = json.load(f)
            files = record["files"]
            if not isinstance(files, dict) or not files:
                raise ValueError("no files listed")
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"unreadable checksum file {os.path.basename(sidecar)}: {_reason(e)}"
        bad_name = _checkpoint_files(prefix, files)
        if bad_name:
            return bad_name
        for name, info in sorted(files.items()):
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                return f"{name} is missing"
            if not isinstance(info, dict):
                return f"unreadable checksum file {os.path.basename(sidecar)}: entry {name!r} is not a record"
            size = os.path.getsize(path)
            if size != info.get("size"):
                return f"{name} has {size} bytes, {info.get('size')} were written"
            if _sha256(path) != info.get("sha256"):
                return f"{name} does not match its SHA-256 checksum"
    if full_read is None:
        full_read = not has_sidecar
    try:
        reader = tf.train.load_checkpoint(prefix)
        if full_read:
            for key in sorted(reader.get_variable_to_shape_map()):
                reader.get_tensor(key)
    except Exception as e:  # noqa: BLE001 - any failure to read means "corrupt"
        return _reason(e)
    return None


def _number(prefix: str) -> int:
    """The checkpoint number of a prefix: ``ckpt-40`` and a staged ``.tmp-ckpt-40-1a2b3c4d`` give 40."""
    match = re.search(r"-(\d+)(?:-[0-9a-f]{8})?$", os.path.basename(prefix))
    return int(match.group(1)) if match else -1


def _is_staged(prefix: str) -> bool:
    """Whether ``prefix`` is a hidden temporary one (a re-save staged under its temporary name)."""
    return os.path.basename(prefix).startswith(_TMP_PREFIX)


def _is_temporary(name: str) -> bool:
    """Whether a file name is one of the hidden temporaries a save makes (``.tmp-...``, ``.<name>.tmp-...``)."""
    return name.startswith(_TMP_PREFIX) or (name.startswith(".") and ".tmp-" in name)


def _read_state(folder: str, rejected: Optional[List[str]] = None) -> Optional[List[str]]:
    """The checkpoint prefixes listed in ``folder/checkpoint``, oldest first; ``None`` if unreadable.

    Entries that lead outside ``folder`` (an absolute path or ``..`` into
    another run, a symbolic link) are left out and appended to ``rejected``.
    """
    path = os.path.join(folder, STATE_FILE)
    if not os.path.isfile(path) or os.path.islink(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(1 << 20)
    except (OSError, UnicodeDecodeError):
        return None
    latest = None
    listed: List[str] = []
    real_folder = os.path.realpath(folder)
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        match = re.fullmatch(r'(model_checkpoint_path|all_model_checkpoint_paths):\s*"((?:[^"\\]|\\.)*)"', line)
        if match is None:
            if re.fullmatch(r"(all_model_checkpoint_timestamps|last_preserved_timestamp):\s*[-+0-9.eE]+", line):
                continue
            return None
        value = re.sub(r"\\(.)", r"\1", match.group(2))
        joined = os.path.join(folder, value)
        if os.path.dirname(os.path.realpath(joined)) != real_folder:  # (an absolute path inside is fine)
            if rejected is not None and value not in rejected:
                rejected.append(value)
            continue
        value = os.path.join(folder, os.path.basename(os.path.normpath(value)))
        if match.group(1) == "model_checkpoint_path":
            latest = value
        elif value not in listed:
            listed.append(value)
    if latest is None:
        return None if not listed else listed
    if latest in listed:
        listed.remove(latest)
    return listed + [latest]


def _write_state(folder: str, prefixes: List[str]) -> None:
    """Replaces ``folder/checkpoint`` atomically (or removes it when ``prefixes`` is empty)."""
    path = os.path.join(folder, STATE_FILE)
    if not prefixes:
        _remove([path])
        fsync_dir(folder)
        return

    def rel(p: str) -> str:
        return json.dumps(os.path.basename(p), ensure_ascii=False)  # a valid text-proto string

    lines = [f"model_checkpoint_path: {rel(prefixes[-1])}"]
    lines += [f"all_model_checkpoint_paths: {rel(p)}" for p in prefixes]
    tmp = os.path.join(folder, f"{_TMP_PREFIX}{STATE_FILE}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove([tmp])
        raise
    fsync_dir(folder)


def _scan(folder: str, name: str) -> List[str]:
    """Checkpoint prefixes found on disk (``<name>-N.index``), oldest first."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = []
    for entry in names:
        match = re.fullmatch(re.escape(name) + r"-(\d+)\.index", entry)
        if match:
            found.append((int(match.group(1)), os.path.join(folder, entry[: -len(".index")])))
    return [p for _, p in sorted(found)]


def _scan_all(folder: str, name: str) -> List[str]:
    """Every checkpoint prefix with any file on disk (an index, a data shard or a sidecar left alone)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = set()
    for entry in names:
        match = re.fullmatch(re.escape(name) + r"-(\d+)(?:\.index|\.data-.*|" + re.escape(SIDECAR_SUFFIX) + ")", entry)
        if match:
            found.add((int(match.group(1)), os.path.join(folder, f"{name}-{match.group(1)}")))
    return [p for _, p in sorted(found)]


def _candidates(folder: str, name: str, warn: Optional[Callable[[str], None]]) -> List[str]:
    """The checkpoints to consider, oldest first: those listed in the state file, else those on disk."""
    rejected: List[str] = []
    listed = _read_state(folder, rejected)
    state = os.path.join(folder, STATE_FILE)
    if rejected and warn is not None:
        warn(f"checkpoint state file {_display(state)} lists {', '.join(repr(r) for r in rejected[:3])} "
             "outside its folder; ignored")
    if listed is None or (rejected and not listed):
        listed = _scan(folder, name)
        if listed and warn is not None and os.path.lexists(state) and not rejected:
            warn(f"checkpoint state file {_display(state)} is unreadable; looking at the checkpoint files instead")
    return listed


def latest_good_checkpoint(
    folder: str, name: str = "ckpt", warn: Optional[Callable[[str], None]] = _warn
) -> Optional[str]:
    """The newest intact checkpoint of a folder, warning about each corrupt newer one.

    Candidates are those listed in ``folder/checkpoint``, newest first; when
    that file is missing or unreadable, the ``<name>-N.index`` files found on
    disk. Entries of the state file that lead outside ``folder`` are ignored
    with a warning.

    Args:
      folder: a checkpoint folder (``run_dir/checkpoints``).
      name: the checkpoint base name.
      warn: called with each warning line (default: print ``lamina: warning: ...``
        to standard error); ``None`` for silence.

    Returns:
      A checkpoint prefix, or ``None`` when the folder holds no checkpoint.

    Raises:
      CheckpointError: when there are checkpoints but none of them is intact.
    """
    listed = _candidates(folder, name, warn)
    bad = []
    for prefix in reversed(listed):
        reason = verify_checkpoint(prefix)
        if reason is None:
            if warn is not None:
                for p, r in bad:
                    warn(f"checkpoint {_display(p)} is corrupt ({r}); using {os.path.basename(prefix)}")
            return prefix
        bad.append((prefix, reason))
    if bad:
        p, r = bad[0]
        raise CheckpointError(
            f"{_display(folder)}: no intact checkpoint: {os.path.basename(p)} is corrupt ({r})"
            + (f" and {len(bad) - 1} older one(s) too" if len(bad) > 1 else "")
            + "; move the folder away to start over"
        )
    return None


def _link_or_copy(src: str, dst: str, folder: str) -> None:
    """Makes ``dst`` a second name of ``src`` (a hard link, or a fsync'ed copy), replacing ``dst`` atomically."""
    part = os.path.join(folder, f"{_TMP_PREFIX}link-{uuid.uuid4().hex[:8]}")
    try:
        try:
            os.link(src, part)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
                raise
            shutil.copyfile(src, part)  # a file system without hard links
            fsync_file(part)
        os.replace(part, dst)
    except BaseException:
        _remove([part])
        raise


class SafeCheckpointManager:
    """Keeps the last ``max_to_keep`` checkpoints of a ``tf.train.Checkpoint``, crash-safely.

    A drop-in for the parts of ``tf.train.CheckpointManager`` that lamina uses
    (``save``, ``latest_checkpoint``, ``checkpoints``, ``directory``), with the
    same file names and state file; see the module docstring for the guarantees.

    Args:
      checkpoint: the ``tf.train.Checkpoint`` to save.
      directory: the folder (created at the first save).
      max_to_keep: how many recent checkpoints to keep (>= 1).
      checkpoint_name: the file base name (``ckpt`` gives ``ckpt-<number>``).
      warn: warning sink for :meth:`latest_good` (default: standard error).

    Raises:
      ValueError: for ``max_to_keep < 1``.
    """

    def __init__(
        self,
        checkpoint: tf.train.Checkpoint,
        directory: str,
        max_to_keep: int = 3,
        checkpoint_name: str = "ckpt",
        warn: Optional[Callable[[str], None]] = _warn,
    ) -> None:
        if not isinstance(max_to_keep, int) or max_to_keep < 1:
            raise ValueError(f"SafeCheckpointManager: max_to_keep must be an int >= 1, got {max_to_keep!r}")
        self._checkpoint = checkpoint
        self._directory = str(directory)
        self._max_to_keep = max_to_keep
        self._name = checkpoint_name
        self._warn = warn

    @property
    def directory(self) -> str:
        """The checkpoint folder."""
        return self._directory

    @property
    def checkpoints(self) -> List[str]:
        """The listed checkpoint prefixes, oldest first (not verified)."""
        return _read_state(self._directory) or []

    @property
    def latest_checkpoint(self) -> Optional[str]:
        """The newest listed checkpoint prefix (not verified; see :meth:`latest_good`)."""
        listed = self.checkpoints
        return listed[-1] if listed else None

    def latest_good(self) -> Optional[str]:
        """The newest intact checkpoint, after :meth:`recover`; warns about each corrupt newer one.

        Returns:
          A prefix, or ``None`` when there is no checkpoint.

        Raises:
          CheckpointError: when every checkpoint is corrupt.
        """
        self.recover()
        return latest_good_checkpoint(self._directory, self._name, self._warn)

    def _final(self, number: int) -> str:
        return os.path.join(self._directory, f"{self._name}-{int(number)}")

    def _cleanup_temporaries(self, listed: Optional[List[str]] = None) -> None:
        """Removes hidden temporaries, except the files of a listed (staged) checkpoint."""
        try:
            names = os.listdir(self._directory)
        except OSError:
            return
        keep = {os.path.basename(p) for p in (self.checkpoints if listed is None else listed) if _is_staged(p)}

        def kept(n: str) -> bool:
            return any(n in (b + ".index", b + SIDECAR_SUFFIX) or n.startswith(b + ".data-") for b in keep)

        _remove([os.path.join(self._directory, n) for n in names if _is_temporary(n) and not kept(n)])

    def _publish(self, staged: str, record: Dict[str, Dict[str, object]], listed: List[str]) -> List[str]:
        """Gives a listed, staged checkpoint its final name; returns the new list (the staged files are removed).

        ``record`` holds the staged files' sizes and hashes, keyed by their names.
        The state file lists ``staged`` until the final files are complete, so
        a crash at any point leaves one intact listed copy.
        """
        folder = self._directory
        final = self._final(_number(staged))
        base = os.path.basename(staged)
        old = set(_files_of(final))
        renamed: Dict[str, Dict[str, object]] = {}
        for name in sorted(record, key=lambda n: n.endswith(".index")):  # data first, the index after
            suffix = name[len(base):]
            _link_or_copy(os.path.join(folder, name), final + suffix, folder)
            old.discard(final + suffix)
            renamed[os.path.basename(final) + suffix] = record[name]
        _remove(sorted(old))  # data shards of the replaced checkpoint that the new one lacks
        atomic_write_json(final + SIDECAR_SUFFIX, {"files": renamed}, indent=1, sort_keys=True)
        listed = [final if p == staged else p for p in listed]
        _write_state(folder, listed)
        try:  # the staged copy is no longer listed: removing it is clean-up (the next save retries)
            _remove(_files_of(staged) + [staged + SIDECAR_SUFFIX])
        except OSError:
            pass
        return listed

    def recover(self) -> None:
        """Finishes what an interrupted save left: gives a staged checkpoint its name, drops temporaries.

        Best effort (the folder may be read-only): nothing is lost if it cannot.
        """
        folder = self._directory
        if not os.path.isdir(folder):
            return
        try:
            with deferred_interrupts():
                listed = _read_state(folder) or []
                for staged in [p for p in listed if _is_staged(p)]:
                    if verify_checkpoint(staged) is not None:
                        continue
                    with open(staged + SIDECAR_SUFFIX) as f:
                        record = json.load(f)["files"]
                    listed = self._publish(staged, record, listed)
                self._cleanup_temporaries(listed)
        except (OSError, ValueError, KeyError, TypeError, tf.errors.OpError):
            pass

    def save(self, checkpoint_number: int) -> str:
        """Writes ``<name>-<checkpoint_number>`` atomically and drops the oldest beyond ``max_to_keep``.

        Re-saving an existing number (a periodic save on an epoch end, the
        interrupt's save after one) never touches the listed files: the new
        checkpoint is listed under its temporary name first, then copied (hard
        links) to the final name, then listed under it. Interrupts (``SIGINT``,
        ``SIGTERM``) that arrive during a save are handled after it.

        Args:
          checkpoint_number: the number in the file name (lamina: the global step).

        Returns:
          The checkpoint prefix.

        Raises:
          CheckpointError: if the folder cannot be written (full disk,
            permissions...); earlier checkpoints are kept.
        """
        with deferred_interrupts():
            return self._save(int(checkpoint_number))

    def _save(self, number: int) -> str:
        folder = self._directory
        final = self._final(number)
        tmp = os.path.join(folder, f"{_TMP_PREFIX}{self._name}-{number}-{uuid.uuid4().hex[:8]}")
        try:
            os.makedirs(folder, exist_ok=True)
            self.recover()
            counter = getattr(self._checkpoint, "save_counter", None)
            if counter is not None:
                # As tf.train.CheckpointManager does: the counter is saved too, so
                # tf.train.Checkpoint(...).restore(...).assert_existing_objects_matched() holds.
                counter.assign_add(1)
            written = self._checkpoint.write(tmp)
            files = _files_of(written)
            if not any(f.endswith(".index") for f in files):
                raise OSError(f"TensorFlow wrote no index file for {written}")
            record: Dict[str, Dict[str, object]] = {}
            for path in files:
                fsync_file(path)
                record[os.path.basename(path)] = {"size": os.path.getsize(path), "sha256": _sha256(path)}
            # Every earlier save of this number is superseded (a listed staged copy too).
            listed = [p for p in self.checkpoints if _number(p) != number]
            superseded = [p for p in self.checkpoints if _number(p) == number and p != final]
            if os.path.lexists(final + ".index") or os.path.lexists(final + SIDECAR_SUFFIX) or _files_of(final):
                # Re-saving a number: list the new checkpoint under its temporary name, then publish it.
                atomic_write_json(tmp + SIDECAR_SUFFIX, {"files": record}, indent=1, sort_keys=True)
                staged = listed + [tmp]
                _write_state(folder, staged)
                listed = self._publish(tmp, record, staged)
            else:
                base = os.path.basename(written)
                renamed = {os.path.basename(final) + n[len(base):]: v for n, v in record.items()}
                sidecar_tmp = tmp + SIDECAR_SUFFIX
                with open(sidecar_tmp, "x", encoding="utf-8") as f:
                    json.dump({"files": renamed}, f, indent=1, sort_keys=True)
                    f.flush()
                    os.fsync(f.fileno())
                # Data first, the index after, the sidecar last; then the state file.
                for path in sorted(files, key=lambda p: p.endswith(".index")):
                    os.replace(path, final + os.path.basename(path)[len(base):])
                os.replace(sidecar_tmp, final + SIDECAR_SUFFIX)
                fsync_dir(folder)
                listed.append(final)
            keep, drop = listed[-self._max_to_keep:], listed[: -self._max_to_keep]
            _write_state(folder, keep)
        except (OSError, tf.errors.OpError) as e:
            self._cleanup_temporaries()
            raise CheckpointError(
                f"cannot write checkpoint {os.path.basename(final)} in {_display(folder)}: {_reason(e)}"
            ) from None
        # An interruption anywhere above leaves the state file listing complete checkpoints
        # only; its hidden temporaries are removed by the next save.
        # Dropping old checkpoints is best effort: a failure here loses nothing.
        try:
            oldest = min((_number(p) for p in keep), default=0)
            stale = [p for p in _scan_all(folder, self._name) if _number(p) < oldest]
            for prefix in {os.path.abspath(p): p for p in drop + stale + superseded}.values():
                _remove(_files_of(prefix) + [prefix + SIDECAR_SUFFIX])
        except OSError:
            pass
        return final
