"""Text files for language models: a ``.txt`` file read as byte or character tokens, cut into windows.

``load_text_file(path, tokens="byte", window=128)`` returns a
:class:`~lamina.data.paired.PairedDataSet` (task ``"language_model"``) whose
examples are non-overlapping windows of ``window`` tokens (inputs) and the same
windows shifted by one token (targets, the next tokens). The last 10 % of the
text is the ``test`` split; ``validation_split`` takes a fraction of the rest
from its end (contiguous text, so no window is shared across splits).

* ``tokens="byte"``: the file's UTF-8 bytes, vocabulary 256 (any file);
* ``tokens="char"``: its characters, vocabulary = the sorted distinct
  characters of the file (``class_names`` lists them).

:class:`TextCodec` turns text into ids and back (for prompts and samples).
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

import numpy as np

from lamina.data.base import is_int
from lamina.data.errors import DataError
from lamina.data.paired import PairedDataSet

__all__ = ["TOKENIZATIONS", "TEST_FRACTION", "TextCodec", "load_text_file", "text_windows"]

TOKENIZATIONS = ("byte", "char")
TEST_FRACTION = 0.1
DEFAULT_WINDOW = 128


class TextCodec:
    """Byte- or character-level ids.

    Args:
      tokens: ``"byte"`` (ids are UTF-8 bytes) or ``"char"``.
      vocabulary: the characters of ``"char"`` ids, in id order.

    Raises:
      DataError: for an unknown tokenization or a ``"char"`` codec without vocabulary.
    """

    def __init__(self, tokens: str = "byte", vocabulary: Optional[Sequence[str]] = None) -> None:
        if tokens not in TOKENIZATIONS:
            raise DataError(f"tokens must be one of {', '.join(TOKENIZATIONS)}, got {tokens!r}")
        if tokens == "char" and not vocabulary:
            raise DataError("a character-level codec needs its vocabulary (the characters, in id order)")
        self.tokens = tokens
        self.vocabulary: List[str] = list(vocabulary) if tokens == "char" else []
        self._index = {c: i for i, c in enumerate(self.vocabulary)}

    @property
    def vocab_size(self) -> int:
        """The number of ids (256 for bytes)."""
        return 256 if self.tokens == "byte" else len(self.vocabulary)

    def encode(self, text: str) -> np.ndarray:
        """``text`` as int32 ids.

        Raises:
          DataError: for a character outside a character-level vocabulary.
        """
        if self.tokens == "byte":
            return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)
        missing = sorted(set(text) - set(self._index))
        if missing:
            raise DataError(f"characters not in the vocabulary: {''.join(missing)[:20]!r}")
        return np.asarray([self._index[c] for c in text], np.int32)

    def decode(self, ids: Sequence[int]) -> str:
        """Ids back to text (invalid UTF-8 byte sequences replaced)."""
        ids = [int(i) for i in np.asarray(ids).ravel()]
        if self.tokens == "byte":
            return bytes(ids).decode("utf-8", errors="replace")
        return "".join(self.vocabulary[i] for i in ids)


def text_windows(ids: np.ndarray, window: int) -> np.ndarray:
    """Non-overlapping ``window + 1``-token slices of ``ids`` (consecutive slices share one token).

    Args:
      ids: ``[n]`` token ids.
      window: the model's context length.

    Returns:
      ``[(n - 1) // window, window + 1]``.
    """
    count = max(0, (len(ids) - 1) // window)
    index = np.arange(count)[:, None] * window + np.arange(window + 1)[None, :]
    return ids[index] if count else np.zeros((0, window + 1), ids.dtype)


def load_text_file(path: str, tokens: Optional[str] = None, window: Optional[int] = None,
                   validation_split: float = 0.0, seed: int = 0, source: Optional[str] = None) -> PairedDataSet:
    """Reads a UTF-8 text file as next-token windows.

    Args:
      path: the ``.txt`` file.
      tokens: ``"byte"`` (default) or ``"char"``.
      window: tokens per example (default 128).
      validation_split: fraction of the non-test text held out as ``validation`` (its end).
      seed: the data set's default shuffle seed.
      source: the ``source`` string.

    Returns:
      A :class:`PairedDataSet` with ``input_shape == (window,)`` and ``num_classes`` the vocabulary size;
      ``extra`` records ``tokens``, ``window`` and (char-level) the vocabulary.

    Raises:
      DataError: for an unreadable or non-UTF-8 file, a bad option, or a text too short for the splits.
    """
    tokens = tokens or "byte"
    if tokens not in TOKENIZATIONS:
        raise DataError(f"{path}: tokens must be one of {', '.join(TOKENIZATIONS)}, got {tokens!r}")
    window = DEFAULT_WINDOW if window is None else window
    if not is_int(window) or window < 1:
        raise DataError(f"{path}: window must be a positive integer, got {window!r}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    codec = TextCodec(tokens, sorted(set(text)) if tokens == "char" else None)
    ids = codec.encode(text)
    cut_test = int(len(ids) * (1 - TEST_FRACTION))
    cut_val = int(cut_test * (1 - float(validation_split)))
    parts = {"train": ids[:cut_val], "test": ids[cut_test:]}
    if validation_split > 0:
        parts["validation"] = ids[cut_val:cut_test]
    splits = {}
    for split, part in parts.items():
        w = text_windows(part, window)
        if len(w) == 0:
            raise DataError(f"{path}: {len(ids)} tokens leave no {window + 1}-token window for the {split} split "
                            f"(its {len(part)} tokens); use a longer text or a smaller window")
        splits[split] = (w[:, :-1], w[:, 1:])
    extra = {"tokens": tokens, "window": int(window)}
    if tokens == "char":
        extra["vocabulary"] = codec.vocabulary
    names = codec.vocabulary if tokens == "char" else [str(i) for i in range(256)]
    name = os.path.splitext(os.path.basename(os.path.abspath(path)))[0]
    return PairedDataSet(name, splits, task="language_model", num_classes=codec.vocab_size, class_names=names,
                         seed=seed, source=source or path, extra=extra)
