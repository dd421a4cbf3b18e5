"""Verified, atomic, cached file downloads with clear, fast failures (on ``pooch``).

:func:`fetch` hands the download to :func:`pooch.retrieve`, which streams it
to a temporary file in the destination folder, checks its SHA-256 and moves it
into place (on any failure the temporary file is removed), and reuses a file
already there whose hash matches. lamina adds what pooch does not do:

* one-line :class:`~lamina.data.DataError` messages (unreachable host, time-out,
  HTTP error, short download, checksum mismatch), with a hint saying where to
  place the files by hand;
* separate connect and read time-outs: the connect time-out is short (a
  missing network fails in seconds), the read time-out applies to every read
  (``LAMINA_DATA_TIMEOUT`` seconds), so a stalled server fails too;
* a size cap: a download that goes past its expected size is stopped at once
  instead of filling the disk (pooch writes whatever the server sends and
  checks only the hash at the end);
* ``file://`` mirrors (pooch has no downloader for them) and an fsync of the
  file and its folder before the rename;
* a rich progress bar on a terminal (pooch's own bar is tqdm).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
import urllib.parse
import urllib.request
from typing import Any, BinaryIO, Iterator, Optional

from lamina.data.errors import DataError

__all__ = ["CONNECT_TIMEOUT", "READ_TIMEOUT", "read_timeout", "sha256_of", "verify_file", "fetch"]

CONNECT_TIMEOUT: float = 10.0
READ_TIMEOUT: float = 60.0
_CHUNK = 1 << 16


def read_timeout() -> float:
    """The read time-out in seconds: ``LAMINA_DATA_TIMEOUT`` if set, else :data:`READ_TIMEOUT`.

    Returns:
      Seconds to wait for each read from the server.

    Raises:
      DataError: if ``LAMINA_DATA_TIMEOUT`` is not a positive number.
    """
    value = os.environ.get("LAMINA_DATA_TIMEOUT")
    if not value:
        return float(READ_TIMEOUT)
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise DataError(f"LAMINA_DATA_TIMEOUT must be a positive number of seconds, got {value!r}")
    return seconds


def sha256_of(path: str) -> str:
    """SHA-256 hex digest of a file (``pooch.file_hash``).

    Args:
      path: the file.

    Returns:
      64 lowercase hex digits.
    """
    import pooch

    return pooch.file_hash(path, alg="sha256")


def verify_file(path: str, sha256: Optional[str], size: Optional[int], *, digest: Optional[str] = None) -> None:
    """Checks a file's size and SHA-256 against the expected values (``None`` = not checked).

    Args:
      path: the file.
      sha256: expected hex digest, or ``None``.
      size: expected size in bytes, or ``None``.
      digest: the file's digest if already computed.

    Raises:
      DataError: naming the file and the mismatch.
    """
    actual_size = os.path.getsize(path)
    if size is not None and actual_size != int(size):
        raise DataError(f"{path}: size mismatch: expected {size} bytes, found {actual_size}")
    if sha256 is not None:
        actual = digest or sha256_of(path)
        if actual.lower() != sha256.lower():
            raise DataError(f"{path}: SHA-256 mismatch: expected {sha256.lower()}, got {actual}")


class _Progress:
    """A rich download bar on a terminal, with the interface pooch drives (``total``, ``update``, ``reset``, ``close``)."""

    def __init__(self, label: str, total: Optional[int]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self._bar = Progress(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                             console=Console(stderr=True), transient=True)
        self._bar.start()
        self._task = self._bar.add_task("download", total=total)

    @property
    def total(self) -> Optional[float]:
        """Expected bytes (pooch sets it from ``Content-Length``; 0 = unknown)."""
        return self._bar.tasks[0].total

    @total.setter
    def total(self, value: Optional[int]) -> None:
        if value:
            self._bar.update(self._task, total=value)

    def update(self, n: int) -> None:
        """Adds ``n`` downloaded bytes."""
        self._bar.advance(self._task, n)

    def reset(self) -> None:
        """Back to zero (pooch resets before filling the bar to ``total`` at the end)."""
        self._bar.reset(self._task)

    def close(self) -> None:
        """Removes the bar."""
        self._bar.stop()


class _CappedFile:
    """A write-only file that refuses to grow past ``limit`` bytes (``None``: no limit).

    pooch writes every byte the server sends; this is where a download that
    goes past its expected size is stopped, after one chunk too many.
    """

    def __init__(self, out: BinaryIO, limit: Optional[int], what: str) -> None:
        self._out = out
        self._limit = limit
        self._what = what
        self.written = 0

    def write(self, data: bytes) -> int:
        """Writes ``data``; raises :class:`DataError` past the limit."""
        self.written += len(data)
        if self._limit is not None and self.written > self._limit:
            raise DataError(f"{self._what}: more than the expected {self._limit} bytes arrived; stopped and discarded")
        return self._out.write(data)

    def flush(self) -> None:
        """Flushes the underlying file."""
        self._out.flush()


class _Downloader:
    """The downloader :func:`pooch.retrieve` calls: ``downloader(url, output_file, pooch)``.

    ``http(s)://`` goes through ``pooch.HTTPDownloader`` (requests) with a
    ``(connect, read)`` time-out pair; ``file://`` is copied (pooch has no
    downloader for it). Either way the bytes pass through :class:`_CappedFile`
    and the file is checked for its size and fsynced before pooch checks its
    hash and renames it.
    """

    def __init__(self, limit: Optional[int], what: str, connect: float, read: float, progress: Optional[_Progress]) -> None:
        self.limit = limit
        self.what = what
        self.timeout = (connect, read)
        self.progress = progress

    def __call__(self, url: str, output_file: str, pooch_instance: Any) -> None:
        """Downloads ``url`` into ``output_file`` (pooch's temporary file)."""
        with open(output_file, "wb") as raw:
            out = _CappedFile(raw, self.limit, self.what)
            if urllib.parse.urlsplit(url).scheme == "file":
                with open(urllib.request.url2pathname(urllib.parse.urlsplit(url).path), "rb") as src:
                    shutil.copyfileobj(src, out, _CHUNK)  # type: ignore[misc]
            else:
                import pooch

                http = pooch.HTTPDownloader(progressbar=self.progress or False, chunk_size=_CHUNK, timeout=self.timeout,
                                            headers={"User-Agent": "lamina-data/1"})
                http(url, out, pooch_instance)
            if self.limit is not None and out.written != self.limit:
                raise DataError(f"{self.what} has {out.written} bytes, expected {self.limit}; discarded")
            raw.flush()
            os.fsync(raw.fileno())


def _fsync_dir(folder: str) -> None:
    """Best-effort fsync of a directory so a rename survives a crash."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _quiet_pooch() -> Iterator[None]:
    """Silences pooch's INFO log lines ("Downloading data from ...", "SHA256 hash of downloaded file ...")."""
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and the errors it wraps (``reason`` of urllib3 errors, ``args[0]``, causes and contexts)."""
    seen = set()
    todo = [err]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend(x for x in (getattr(e, "reason", None), e.args[0] if e.args else None, e.__cause__, e.__context__)
                    if isinstance(x, BaseException))


def _network_error(err: BaseException, url: str, connect: float, read: float, suffix: str) -> DataError:
    """The one-line :class:`DataError` for a requests/urllib3 failure."""
    import requests

    if isinstance(err, requests.exceptions.HTTPError) and err.response is not None:
        return DataError(f"cannot download {url}: HTTP {err.response.status_code} {err.response.reason}{suffix}")
    if isinstance(err, requests.exceptions.ConnectTimeout):
        return DataError(f"cannot download {url}: timed out connecting after {connect:g} s{suffix}")
    chain = list(_chain(err))
    names = {type(e).__name__ for e in chain}
    if isinstance(err, requests.exceptions.ReadTimeout) or "ReadTimeoutError" in names or any(
        isinstance(e, (socket.timeout, TimeoutError)) for e in chain
    ):
        return DataError(f"cannot download {url}: timed out: no data for {read:g} s{suffix}")
    if "NewConnectionError" in names or "NameResolutionError" in names:
        text = next((e.strerror for e in chain if isinstance(e, OSError) and e.strerror), None)
        if text is None:
            text = str(chain[-1]).split(": ")[-1]
        return DataError(f"cannot download {url}: cannot reach the server ({text}); no network?{suffix}")
    detail = " ".join(str(chain[-1]).split())[:200]
    return DataError(f"cannot download {url}: connection failed ({type(err).__name__}: {detail}){suffix}")


def fetch(
    url: str,
    dest: str,
    *,
    sha256: Optional[str] = None,
    size: Optional[int] = None,
    connect_timeout: Optional[float] = None,
    read_timeout_s: Optional[float] = None,
    progress: Optional[bool] = None,
    hint: str = "",
) -> str:
    """Downloads ``url`` to ``dest`` atomically with pooch, verifying size and SHA-256.

    A ``dest`` already present that passes the checks is kept and no request
    is made; one that fails them is downloaded again.

    Args:
      url: an ``http://``, ``https://`` or ``file://`` URL.
      dest: the final path; its folder is created.
      sha256: expected SHA-256 hex digest, or ``None`` (then only ``size``
        and the caller's format check protect the file).
      size: expected size in bytes, or ``None``. The download is stopped as
        soon as more arrives.
      connect_timeout: seconds to connect (default :data:`CONNECT_TIMEOUT`).
      read_timeout_s: seconds per read (default :func:`read_timeout`).
      progress: show a progress bar (default: when stderr is a terminal).
      hint: appended to network errors (e.g. where to place files by hand).

    Returns:
      ``dest``.

    Raises:
      DataError: one line, for an unreachable host, a time-out, an HTTP
        error, a short or oversized download or a checksum mismatch. No
        partial file is left behind.
    """
    import pooch
    import requests

    ct = float(CONNECT_TIMEOUT if connect_timeout is None else connect_timeout)
    rt = float(read_timeout() if read_timeout_s is None else read_timeout_s)
    folder = os.path.dirname(os.path.abspath(dest))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise DataError(f"{folder}: cannot create the download folder ({err.strerror or err})") from None
    if os.path.isfile(dest):
        try:
            verify_file(dest, sha256, size)
            return dest
        except DataError:
            if sha256 is None:  # pooch keeps a file it has no hash for: make room for the new download
                os.remove(dest)
    suffix = f"; {hint}" if hint else ""
    bar = _Progress(os.path.basename(dest), size) if (sys.stderr.isatty() if progress is None else progress) else None
    downloader = _Downloader(None if size is None else int(size), f"{dest}: download from {url}", ct, rt, bar)
    try:
        with _quiet_pooch():
            pooch.retrieve(url, known_hash=f"sha256:{sha256.lower()}" if sha256 else None,
                           fname=os.path.basename(dest), path=folder, downloader=downloader)
    except DataError:
        raise
    except requests.exceptions.RequestException as err:
        raise _network_error(err, url, ct, rt, suffix) from None
    except ValueError as err:  # pooch's hash mismatch (the temporary file is already deleted)
        text = " ".join(str(err).split()).split(". Deleted")[0]
        raise DataError(f"{dest}: download from {url} failed verification: {text}; discarded") from None
    except OSError as err:  # e.g. a missing file:// source, a full disk
        raise DataError(f"cannot download {url} to {dest}: {err.strerror or err}{suffix}") from None
    finally:
        if bar is not None:
            bar.close()
    _fsync_dir(folder)
    return dest
