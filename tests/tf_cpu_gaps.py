"""Which TensorFlow CPU kernels this machine lacks, probed once on the raw ops.

Which kernels TensorFlow's CPU build runs depends on the CPU: oneDNN only where
TensorFlow turns it on (AVX-512 VNNI, AVX512_BF16, AMX, AVX-VNNI; not on
AVX2-only CPUs), and float16 3-D pooling only with AVX512_FP16; elsewhere
Eigen kernels, with their own gaps and bugs. (The gaps lamina works around,
dilated and unequally strided convolutions, are probed by the library itself:
``lamina.layers.kernel_gaps``.) Expected failures of those
cases are strict xfails only where the probe of the raw op fails here, so on
either kind of CPU a wrong result still fails.
"""

import pytest
import tensorflow as tf


def _tf_op_fails(op) -> bool:
    try:
        op()
    except (tf.errors.OpError, ValueError, TypeError):
        return True
    return False


def _conv_of_empty_batch_has_wrong_shape() -> bool:
    y = tf.nn.conv2d(tf.zeros((0, 4, 4, 3)), tf.zeros((3, 3, 3, 2)), 1, "SAME")
    return tuple(y.shape) != (0, 4, 4, 2)


TF_CPU_GAPS = {
    # No float16 MaxPool3D / AvgPool3D kernel (Eigen's fallback; oneDNN has them with AVX512_FP16).
    "f16_pool3d": _tf_op_fails(
        lambda: tf.nn.max_pool3d(tf.ones((1, 2, 2, 2, 1), tf.float16), 1, 1, "VALID").numpy()),
    # oneDNN's convolution returns the input's shape for an empty batch (Eigen's is right).
    "empty_batch_conv_shape": _conv_of_empty_batch_has_wrong_shape(),
}


def xfail_if_gap(gap, reason):
    """A strict xfail mark when ``TF_CPU_GAPS[gap]`` (the raw op fails on this CPU), else no mark."""
    return [pytest.mark.xfail(strict=True, reason=reason)] if TF_CPU_GAPS[gap] else []
