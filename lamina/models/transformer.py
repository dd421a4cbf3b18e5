"""Transformer classifiers: ``Transformer`` over sequences and ``ViT`` over images.

Both are stacks of pre-norm :class:`~lamina.layers.attention.TransformerEncoderBlock`
s followed by a final ``LayerNorm``, a pooling step (the class token, or the
mean over the valid positions) and a ``Linear`` classifier head.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import tensorflow as tf

from lamina.layers._utils import cast_like, normalize_data_format, positive_int
from lamina.layers.attention import TransformerEncoderBlock
from lamina.layers.conv import Conv2D
from lamina.layers.dropout import Dropout
from lamina.layers.embedding import Embedding
from lamina.layers.linear import Linear
from lamina.layers.norm import LayerNorm
from lamina.layers.positional import LearnedPositionalEmbedding, SinusoidalPositionalEmbedding
from lamina.module import InputSpec, Module, builds_first

__all__ = ["Transformer", "ViT"]

_POOLINGS = ("cls", "mean")


def _check_pooling(pooling: str, owner: str) -> str:
    if pooling not in _POOLINGS:
        raise ValueError(f"{owner}: pooling must be one of {list(_POOLINGS)}, got {pooling!r}")
    return pooling


def _check_rate(rate: Any, owner: str) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"{owner}: dropout must be a number in [0, 1), got {rate!r}")
    return float(rate)


def _masked_mean(x: tf.Tensor, mask: Optional[tf.Tensor]) -> tf.Tensor:
    """Mean of ``(B, T, D)`` over valid steps (all steps when ``mask`` is ``None``)."""
    if mask is None:
        return tf.reduce_mean(x, axis=1)
    w = tf.cast(mask, x.dtype)[:, :, tf.newaxis]
    return tf.reduce_sum(x * w, axis=1) / tf.maximum(tf.reduce_sum(w, axis=1), tf.cast(1.0, x.dtype))


class _EncoderMixin(Module):
    """The encoder stack, the class token and the head shared by both models."""

    def _make_encoder(self, num_classes: int, model_dim: int, num_heads: int, num_layers: int,
                      mlp_dim: Optional[int], dropout: float, pooling: str, eps: float = 1e-5) -> None:
        owner = self.describe()
        self.num_classes = positive_int(num_classes, "num_classes", owner)
        self.model_dim = positive_int(model_dim, "model_dim", owner)
        self.num_heads = positive_int(num_heads, "num_heads", owner)
        self.num_layers = positive_int(num_layers, "num_layers", owner)
        self.mlp_dim = positive_int(mlp_dim, "mlp_dim", owner) if mlp_dim is not None else 4 * self.model_dim
        if self.model_dim % self.num_heads:
            raise ValueError(f"{owner}: num_heads ({num_heads}) must divide model_dim ({model_dim})")
        self.rate = _check_rate(dropout, owner)
        self.pooling = _check_pooling(pooling, owner)
        self.norm_eps = eps
        self.blocks = [
            TransformerEncoderBlock(self.num_heads, self.model_dim, self.mlp_dim, dropout=self.rate, eps=eps,
                                    name=f"block_{i}")
            for i in range(self.num_layers)
        ]
        self.norm = LayerNorm(eps=eps, name="final_norm")
        self.head = Linear(self.num_classes, name="head")
        self.embed_dropout = Dropout(self.rate, name="embed_dropout") if self.rate > 0 else None

    def _make_cls_token(self) -> None:
        self.cls_token = tf.Variable(tf.zeros((1, 1, self.model_dim)), name="cls_token")

    def _prepend_cls(self, h: tf.Tensor, mask: Optional[tf.Tensor]) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
        batch = tf.shape(h)[0]
        # broadcast_to, not tile: tile's gradient transposes an int32 shape tensor, which oneDNN
        # refuses with a spurious "DT_INT32 only on platforms with AVX-512" error line on stderr.
        cls = tf.broadcast_to(cast_like(self.cls_token, h), tf.stack([batch, 1, self.model_dim]))
        h = tf.concat([cls, h], axis=1)
        if mask is not None:
            mask = tf.concat([tf.ones(tf.stack([batch, 1]), tf.bool), mask], axis=1)
        return h, mask

    def _encode_and_classify(self, h: tf.Tensor, mask: Optional[tf.Tensor], training: Any) -> tf.Tensor:
        h = self._embed_dropout(h, training)
        for block in self.blocks:
            h = block(h, mask=mask, training=training)
        h = self.norm(h)
        pooled = h[:, 0] if self.pooling == "cls" else _masked_mean(h, mask)
        return self.head(pooled)

    def _embed_dropout(self, h: tf.Tensor, training: Any) -> tf.Tensor:
        return self.embed_dropout(h, training=training) if self.embed_dropout is not None else h


class Transformer(_EncoderMixin):
    """A Transformer encoder classifier over token ids or float feature sequences.

    Pipeline: token ``Embedding(vocab_size, model_dim)`` (or ``Linear(model_dim)``
    on ``(B, T, input_dim)`` features) + learned (or sinusoidal) positions, a
    learned class token prepended when ``pooling="cls"``, ``num_layers`` pre-norm
    encoder blocks, a final ``LayerNorm``, pooling and a ``Linear`` head.

    Exactly one of ``vocab_size`` (token ids) and ``input_dim`` (float features) is given.

    Args:
      vocab_size: size of the token vocabulary (ids in ``[0, vocab_size)``).
      num_classes: number of output classes (required).
      model_dim: width of the encoder.
      num_heads: attention heads (must divide ``model_dim``).
      num_layers: number of encoder blocks.
      mlp_dim: hidden size of each block's MLP (default ``4 * model_dim``).
      max_len: longest input sequence (the class token excluded).
      pooling: ``"cls"`` (class token) or ``"mean"`` (mean over valid positions).
      dropout: dropout rate in the blocks and after the embeddings.
      input_dim: feature size of float inputs ``(B, T, input_dim)``.
      pad_id: token id treated as padding when no ``mask`` is passed (token inputs only).
      positional: ``"learned"`` or ``"sinusoidal"``.
      name: module name.

    Raises:
      ValueError / TypeError: for invalid arguments, naming the module.
    """

    def __init__(
        self,
        vocab_size: Optional[int] = None,
        num_classes: Optional[int] = None,
        model_dim: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        mlp_dim: Optional[int] = None,
        max_len: int = 512,
        pooling: str = "cls",
        dropout: float = 0.1,
        *,
        input_dim: Optional[int] = None,
        pad_id: Optional[int] = None,
        positional: str = "learned",
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        if num_classes is None:
            raise ValueError(f"{owner}: num_classes is required")
        if (vocab_size is None) == (input_dim is None):
            raise ValueError(
                f"{owner}: give exactly one of vocab_size (token ids) and input_dim (float features), "
                f"got vocab_size={vocab_size!r}, input_dim={input_dim!r}"
            )
        if pad_id is not None and vocab_size is None:
            raise ValueError(f"{owner}: pad_id only applies to token inputs (vocab_size)")
        self._make_encoder(num_classes, model_dim, num_heads, num_layers, mlp_dim, dropout, pooling)
        self.max_len = positive_int(max_len, "max_len", owner)
        self.vocab_size = positive_int(vocab_size, "vocab_size", owner) if vocab_size is not None else None
        self.input_dim = positive_int(input_dim, "input_dim", owner) if input_dim is not None else None
        self.pad_id = pad_id
        if self.vocab_size is not None:
            self.embed = Embedding(self.vocab_size, self.model_dim, name="embed")
            self.input_spec = InputSpec(rank=2, floating=False)
        else:
            self.embed = Linear(self.model_dim, name="embed")
            self.input_spec = InputSpec(rank=3, axes={-1: (self.input_dim, "input features (input_dim)")})
        if positional == "learned":
            self.positions = LearnedPositionalEmbedding(self.max_len, self.model_dim, name="positions")
        elif positional == "sinusoidal":
            self.positions = SinusoidalPositionalEmbedding(self.max_len, name="positions")
        else:
            raise ValueError(f"{owner}: positional must be 'learned' or 'sinusoidal', got {positional!r}")
        if self.pooling == "cls":
            self._make_cls_token()

    def __call__(self, x: tf.Tensor, mask: Optional[Any] = None, training: Any = False) -> tf.Tensor:
        """Computes class logits.

        Args:
          x: token ids ``(B, T)`` (integers) or features ``(B, T, input_dim)``.
          mask: optional ``(B, T)`` boolean, ``True`` for real (non-padding)
            positions. Padding positions are not attended to and not pooled.
          training: enables dropout.

        Returns:
          Logits ``(B, num_classes)``.

        Raises:
          TypeError: for float inputs to a token model.
          ValueError: for a sequence longer than ``max_len``.
        """
        if self.vocab_size is not None:
            if x.dtype.is_floating:
                raise TypeError(self.error(f"expected integer token ids, got dtype {x.dtype.name}"))
            if mask is None and self.pad_id is not None:
                mask = tf.not_equal(x, tf.cast(self.pad_id, x.dtype))
        if mask is not None:
            mask = tf.cast(tf.convert_to_tensor(mask), tf.bool)
            if mask.shape.rank is not None and mask.shape.rank != 2:
                raise ValueError(self.error(f"expected a (batch, time) mask, got shape {mask.shape}"))
        h = self.positions(self.embed(x))
        if self.pooling == "cls":
            h, mask = self._prepend_cls(h, mask)
        return self._encode_and_classify(h, mask, training)


class ViT(_EncoderMixin):
    """A Vision Transformer (Dosovitskiy et al., 2021).

    Non-overlapping ``patch_size`` patches are embedded by a strided ``Conv2D``
    (kernel = stride = ``patch_size``), a learned class token is prepended,
    learned positions (one per patch, plus the class token's) are added, then
    ``num_layers`` pre-norm encoder blocks, a final ``LayerNorm`` and a
    ``Linear`` head on the class token. With ``pooling="mean"`` there is no
    class token and the head reads the mean over the patches. Variables:
    ``patch_embed``, ``cls_token``, ``positions/embeddings``
    ``(num_patches + 1, model_dim)``, the blocks' and the head's. Patches are
    taken row by row, as torchvision, timm and Hugging Face do, so
    ``ViT(1000, patch_size=16, model_dim=768, num_heads=12, num_layers=12,
    mlp_dim=3072, image_size=224, norm_eps=1e-6)`` is torchvision's ``vit_b_16``
    (see :func:`lamina.interop.create_model`). ``model.features(x)`` returns
    the blocks' outputs as feature maps.

    Args:
      num_classes: number of output classes.
      patch_size: side of the square patches; must divide the image size.
      model_dim: width of the encoder.
      num_heads: attention heads (must divide ``model_dim``).
      num_layers: number of encoder blocks.
      mlp_dim: hidden size of each block's MLP (default ``4 * model_dim``).
      image_size: ``(H, W)`` or an int; ``None`` takes it from the first input.
      dropout: dropout rate.
      pooling: ``"cls"`` or ``"mean"``.
      norm_eps: epsilon of every LayerNorm (1e-6 in torchvision's and timm's
        ViTs, 1e-12 in Hugging Face's).
      data_format: ``"channels_last"`` (images ``(B, H, W, C)``) or
        ``"channels_first"`` (``(B, C, H, W)``).
      name: module name.

    Raises:
      ValueError / TypeError: for invalid arguments; at the first call, for
        images whose size differs from ``image_size`` or is not divisible by ``patch_size``.
    """

    def __init__(
        self,
        num_classes: int,
        patch_size: int = 4,
        model_dim: int = 64,
        num_heads: int = 4,
        num_layers: int = 4,
        mlp_dim: Optional[int] = None,
        image_size: Union[None, int, Sequence[int]] = None,
        dropout: float = 0.0,
        pooling: str = "cls",
        norm_eps: float = 1e-5,
        data_format: str = "channels_last",
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        self._make_encoder(num_classes, model_dim, num_heads, num_layers, mlp_dim, dropout, pooling, eps=norm_eps)
        self.data_format = normalize_data_format(data_format, owner)
        self.patch_size = positive_int(patch_size, "patch_size", owner)
        if image_size is None:
            self.image_size: Optional[Tuple[int, int]] = None
        else:
            size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
            if len(size) != 2:
                raise ValueError(f"{owner}: image_size must be an int or (height, width), got {image_size!r}")
            self.image_size = (positive_int(size[0], "image_size", owner), positive_int(size[1], "image_size", owner))
            self._check_size(self.image_size)
        self.patch_embed = Conv2D(self.model_dim, self.patch_size, strides=self.patch_size, padding="VALID",
                                  data_format=self.data_format, name="patch_embed")
        self.positions: Optional[LearnedPositionalEmbedding] = None
        self.input_spec = InputSpec(rank=4)

    def _check_size(self, size: Tuple[int, int]) -> None:
        if size[0] % self.patch_size or size[1] % self.patch_size:
            raise ValueError(self.error(f"patch_size {self.patch_size} must divide the image size, got {size}"))

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates the class token and the positions from the image size.

        Args:
          input_shape: ``(B, H, W, C)`` (``(B, C, H, W)`` for channels_first).

        Raises:
          ValueError: for an unknown, mismatched or indivisible image size.
        """
        rows = 1 if self.data_format == "channels_last" else 2
        size = (input_shape[rows], input_shape[rows + 1])
        if size[0] is None or size[1] is None:
            if self.image_size is None:
                raise ValueError(self.error(f"the image size must be known at the first call (or given), got shape {input_shape}"))
            size = self.image_size
        if self.image_size is not None and tuple(size) != self.image_size:
            raise ValueError(self.error(f"expected images of size {self.image_size}, got {tuple(size)}"))
        self._check_size(size)
        self.image_size = (int(size[0]), int(size[1]))
        self.num_patches = (size[0] // self.patch_size) * (size[1] // self.patch_size)
        extra = 0
        if self.pooling == "cls":
            self._make_cls_token()
            extra = 1
        self.positions = LearnedPositionalEmbedding(self.num_patches + extra, self.model_dim, name="positions")
        self.grid = (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)
        self.input_spec = InputSpec(rank=4, axes={rows: (size[0], "image rows"), rows + 1: (size[1], "image columns")})

    def _tokens(self, x: tf.Tensor) -> tf.Tensor:
        """Patch embeddings (+ class token) + positions: ``(B, [1 +] num_patches, D)``."""
        p = self.patch_embed(x)  # (B, H/p, W/p, D) or (B, D, H/p, W/p)
        if self.data_format == "channels_first":
            p = tf.transpose(p, [0, 2, 3, 1])
        shape = tf.shape(p)
        h = tf.reshape(p, tf.stack([shape[0], self.num_patches, self.model_dim]))
        if self.pooling == "cls":
            h, _ = self._prepend_cls(h, None)
        return self.positions(h)

    def __call__(self, x: tf.Tensor, training: Any = False) -> tf.Tensor:
        """Computes class logits.

        Args:
          x: images ``(B, H, W, C)`` (``(B, C, H, W)`` for channels_first).
          training: enables dropout.

        Returns:
          Logits ``(B, num_classes)``.
        """
        return self._encode_and_classify(self._tokens(x), None, training)

    @builds_first
    def features(self, x: tf.Tensor, indices: Optional[Sequence[int]] = None, training: Any = False) -> List[tf.Tensor]:
        """The blocks' outputs as feature maps (timm's ``forward_intermediates`` without the final norm).

        Args:
          x: images, as for ``__call__``.
          indices: which blocks (0-based; negative counts from the end); default all.
          training: enables dropout.

        Returns:
          One map per selected block, class token dropped: ``(B, H/p, W/p, D)``
          (``(B, D, H/p, W/p)`` for channels_first); all have stride ``patch_size``.

        Raises:
          ValueError: for an index outside ``[-num_layers, num_layers)``.
        """
        wanted = list(range(self.num_layers)) if indices is None else [int(i) for i in indices]
        for i in wanted:
            if not -self.num_layers <= i < self.num_layers:
                raise ValueError(self.error(f"features: block index {i} is out of range for {self.num_layers} blocks"))
        wanted_set = {i % self.num_layers for i in wanted}
        h = self._embed_dropout(self._tokens(x), training)
        maps = {}
        for i, block in enumerate(self.blocks[: max(wanted_set) + 1]):
            h = block(h, training=training)
            if i in wanted_set:
                grid = h[:, 1:] if self.pooling == "cls" else h
                shape = tf.shape(grid)
                m = tf.reshape(grid, tf.stack([shape[0], self.grid[0], self.grid[1], self.model_dim]))
                maps[i] = tf.transpose(m, [0, 3, 1, 2]) if self.data_format == "channels_first" else m
        return [maps[i % self.num_layers] for i in wanted]
