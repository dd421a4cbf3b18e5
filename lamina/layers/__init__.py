"""Every lamina layer, one concept per file; all re-exported from ``lamina``."""

from lamina.layers.activations import *  # noqa: F401,F403
from lamina.layers.linear import *  # noqa: F401,F403
from lamina.layers.conv import *  # noqa: F401,F403
from lamina.layers.conv_transpose import *  # noqa: F401,F403
from lamina.layers.depthwise import *  # noqa: F401,F403
from lamina.layers.pool import *  # noqa: F401,F403
from lamina.layers.norm import *  # noqa: F401,F403
from lamina.layers.dropout import *  # noqa: F401,F403
from lamina.layers.reshape import *  # noqa: F401,F403
from lamina.layers.embedding import *  # noqa: F401,F403
from lamina.layers.containers import *  # noqa: F401,F403
from lamina.layers.recurrent import *  # noqa: F401,F403
from lamina.layers.attention import *  # noqa: F401,F403
from lamina.layers.positional import *  # noqa: F401,F403
from lamina.layers.remat import *  # noqa: F401,F403
from lamina.layers.upsample import *  # noqa: F401,F403
from lamina.layers.bias import *  # noqa: F401,F403
from lamina.layers.batch_apply import *  # noqa: F401,F403
from lamina.layers.vector_quantizer import *  # noqa: F401,F403
from lamina.layers.conv_lstm import *  # noqa: F401,F403
