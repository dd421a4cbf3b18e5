"""Ready-made models (``lm.models``)."""

from lamina.models.convnet import *  # noqa: F401,F403
from lamina.models.mlp import *  # noqa: F401,F403
from lamina.models.resnet import *  # noqa: F401,F403
from lamina.models.transformer import *  # noqa: F401,F403
from lamina.models.gpt import *  # noqa: F401,F403
from lamina.models.mobilenet import *  # noqa: F401,F403
from lamina.models.unet import *  # noqa: F401,F403
