"""Model registry: build a model from its name, as the command line and run directories do."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

__all__ = ["create_model", "model_names", "register_model", "model_task", "MODEL_TASKS"]

_REGISTRY: Dict[str, Callable[..., Any]] = {}

# The data each registered model trains on (a data set's ``task``); the others classify.
MODEL_TASKS: Dict[str, str] = {"gpt": "language_model", "unet": "segmentation"}


def model_task(name: str) -> str:
    """The data ``task`` a registered model trains on: ``"classification"``, ``"language_model"`` or ``"segmentation"``.

    Args:
      name: a registered model name.

    Returns:
      The task name.
    """
    return MODEL_TASKS.get(str(name).lower(), "classification")


def register_model(name: str, factory: Callable[..., Any]) -> None:
    """Registers ``factory(num_classes=..., **kwargs) -> model`` under ``name``.

    Args:
      name: the model's name (lower case), e.g. ``"convnet"``.
      factory: the constructor.
    """
    _REGISTRY[name.lower()] = factory


def model_names() -> List[str]:
    """Returns the registered model names, sorted."""
    _ensure_defaults()
    return sorted(_REGISTRY)


def _ensure_defaults() -> None:
    if _REGISTRY:
        return
    from lamina.models import convnet, mlp, resnet

    register_model("convnet", lambda num_classes, **kw: convnet.ConvNet(num_classes, **kw))
    register_model("mlp", lambda num_classes, **kw: mlp.MLP(kw.pop("hidden_sizes", (256, 128)), num_classes, **kw))
    def pretrained_ready(arch: str, plain: Any) -> Callable[..., Any]:
        # ``source=`` builds the architecture as that checkpoint source's weights need it
        # (lm.interop.create_model: ImageNet stem, v1/v1.5, biases, norm eps), so a run
        # fine-tuned from torchvision/timm/Keras/HF weights can be rebuilt from its config.json.
        def factory(num_classes: int, source: Optional[str] = None, **kw: Any) -> Any:
            if source is None and plain is not None:
                return plain(num_classes, **kw)
            from lamina.interop import create_model as interop_model

            return interop_model(arch, source or "torchvision", num_classes=num_classes, **kw)

        return factory

    for depth in (18, 34, 50, 101, 152):
        register_model(f"resnet{depth}", pretrained_ready(f"resnet{depth}", getattr(resnet, f"resnet{depth}")))
    try:
        from lamina.models import transformer
    except ImportError:  # pragma: no cover - sequence models not present
        return
    if hasattr(transformer, "ViT"):
        register_model("vit", lambda num_classes, image_size=None, **kw: transformer.ViT(num_classes, image_size=image_size, **kw))
    for arch in ("vit_b_16", "vit_b_32", "vit_l_16"):
        register_model(arch, pretrained_ready(arch, None))
    register_model("transformer", _sequence_transformer)
    from lamina.models import gpt, mobilenet, unet

    # A language model's classes are its tokens: num_classes is the vocabulary (lamina train sets max_len).
    register_model("gpt", lambda num_classes, **kw: gpt.GPT(vocab_size=num_classes, **kw))
    register_model("unet", lambda num_classes, **kw: unet.UNet(num_classes, **kw))
    register_model("mobilenet_v2", lambda num_classes, **kw: mobilenet.MobileNetV2(num_classes, **kw))


def _sequence_transformer(num_classes: int, sequence_shape: Any = None, **kw: Any) -> Any:
    """``transformer``: a Transformer classifier reading each example as a sequence.

    An example of shape ``(d0, d1, ...)`` is read as ``d0`` steps of
    ``d1 * ...`` features (an image as its rows, a table row as one feature per
    step); ``sequence_shape = [steps, features]`` is given by the run.
    """
    from lamina.layers.containers import Sequential
    from lamina.layers.reshape import Reshape
    from lamina.models.transformer import Transformer

    if sequence_shape is None:
        raise ValueError("model 'transformer' needs sequence_shape=[steps, features] (lamina train sets it from the data)")
    steps, features = (int(d) for d in sequence_shape)
    return Sequential([Reshape([steps, features], name="as_sequence"),
                       Transformer(num_classes=num_classes, input_dim=features, max_len=steps, **kw)],
                      name="transformer")


def create_model(name: str, num_classes: int, **kwargs: Any) -> Any:
    """Builds the model registered as ``name``.

    Args:
      name: a registered name (see :func:`model_names`), case-insensitive.
      num_classes: number of output classes.
      **kwargs: passed to the model's constructor.

    Returns:
      The (unbuilt) model.

    Raises:
      ValueError: for an unknown name.
    """
    _ensure_defaults()
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key](num_classes=num_classes, **kwargs)
