"""Which TensorFlow CPU kernels this machine lacks, probed once on the raw ops.

Which float16 kernels TensorFlow's CPU build has depends on the CPU: oneDNN
runs float16 convolutions and 3-D pooling natively where the CPU has
AVX512_FP16 (Intel Sapphire Rapids and later); elsewhere TensorFlow falls back
to Eigen kernels that lack dilation and 3-D pooling. Expected failures of those
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


def _f16_dilated_conv2d_backprop_input():
    w = tf.ones((2, 2, 1, 1), tf.float16)
    x = tf.ones((1, 3, 3, 1), tf.float16)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.nn.conv2d(x, w, 1, "SAME", dilations=2)
    tape.gradient(y, x).numpy()


TF_CPU_GAPS = {
    # Conv2DBackpropInput (also the forward of a transposed conv) in float16 with dilation > 1.
    "f16_dilated_conv2d_backprop": _tf_op_fails(_f16_dilated_conv2d_backprop_input),
    "f16_dilated_conv3d": _tf_op_fails(
        lambda: tf.nn.conv3d(tf.ones((1, 5, 5, 5, 1), tf.float16), tf.ones((2, 2, 2, 1, 1), tf.float16),
                             (1, 1, 1, 1, 1), "VALID", dilations=(1, 2, 2, 2, 1)).numpy()),
    "f16_pool3d": _tf_op_fails(
        lambda: tf.nn.max_pool3d(tf.ones((1, 2, 2, 2, 1), tf.float16), 1, 1, "VALID").numpy()),
}


def xfail_if_gap(gap, reason):
    """A strict xfail mark when ``TF_CPU_GAPS[gap]`` (the raw op fails on this CPU), else no mark."""
    return [pytest.mark.xfail(strict=True, reason=reason)] if TF_CPU_GAPS[gap] else []
