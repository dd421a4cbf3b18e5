"""Every public lamina module and model, with a small constructor and input.

One :class:`lamina.testing.Descriptor` per module (plus variants that take
another code path). ``tests/conformance/test_conformance.py`` runs each through
the same checks; a public ``lm.Module`` subclass with no descriptor and not in
:data:`EXCLUDED` fails ``test_every_public_module_has_a_descriptor``.

Known failures are written beside the descriptor as ``xfail={check: reason}``
and run as strict expected failures (a fix makes them fail until removed).
"""

from __future__ import annotations

import os
import sys

import tensorflow as tf

import lamina as lm
from lamina.testing import Descriptor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tf_cpu_gaps import TF_CPU_GAPS  # noqa: E402

M = lm.models

# Public classes that need no descriptor of their own, and why.
EXCLUDED = {
    lm.Module: "the abstract base class (every descriptor exercises it)",
    lm.RNNCore: "an abstract base: initial_state and __call__ raise NotImplementedError",
}


def _cf(factory, *args, **kwargs):
    """``lambda: factory(*args, **kwargs, data_format="channels_first")``."""
    return lambda: factory(*args, **kwargs, data_format="channels_first")


def _f16_gap(gap, reason):
    """``{"mixed_float16": reason}`` where this CPU lacks the float16 kernel (``tf_cpu_gaps``), else ``{}``."""
    return {"mixed_float16": reason} if TF_CPU_GAPS[gap] else {}


def _d(name, create, shape, **kw):
    return Descriptor(name, create, tuple(shape), **kw)


IMAGE = (6, 6, 2)

# TensorFlow limitations (CPU kernels), not lamina's: on a GPU these run, and on a CPU with
# AVX512_FP16 oneDNN runs them (so they are expected failures only where tf_cpu_gaps says so).
# (Dilated and unequally strided convolutions have no such entry: lamina.layers.kernel_gaps
# computes them where TensorFlow's CPU kernels are missing.)
# Not a bug: each replica draws its own dropout masks from its own random stream.
DROPOUT_REPLICAS = ("under a strategy every replica draws its own dropout masks (its tf.random.Generator stream), so "
                    "training cannot equal one device's; the strategy run itself must not fail")
POOL3D_F16 = ("TF CPU registers MaxPool3D / AvgPool3D for float32 and bfloat16 only, float16 only under XLA "
              "('Could not find device for node: MaxPool3D[T=DT_HALF]')")

LAYERS = [
    # ----------------------------------------------------------- linear / conv
    _d("Linear", lambda: lm.Linear(3, activation="relu"), (5,)),
    _d("Linear(rank 3)", lambda: lm.Linear(3), (2, 5)),
    _d("Conv1D", lambda: lm.Conv1D(3, 3), (7, 2), channels_first=_cf(lm.Conv1D, 3, 3)),
    _d("Conv1D(causal, dilation 2)", lambda: lm.Conv1D(3, 3, padding="CAUSAL", dilation=2), (7, 2)),
    _d("Conv2D", lambda: lm.Conv2D(4, 3, activation="relu"), IMAGE,
       channels_first=_cf(lm.Conv2D, 4, 3, activation="relu")),
    _d("Conv2D(stride 2, pad 1, groups 2)", lambda: lm.Conv2D(4, 3, strides=2, padding=1, groups=2), IMAGE,
       channels_first=_cf(lm.Conv2D, 4, 3, strides=2, padding=1, groups=2)),
    _d("Conv2D(dilation 2, VALID)", lambda: lm.Conv2D(3, 3, dilation=2, padding="VALID"), IMAGE),
    _d("Conv3D", lambda: lm.Conv3D(3, 2), (4, 4, 4, 2), channels_first=_cf(lm.Conv3D, 3, 2)),
    _d("Conv3D(dilation 2)", lambda: lm.Conv3D(2, 2, dilation=2), (5, 5, 5, 2)),
    _d("ConvND(2)", lambda: lm.ConvND(2, 3, 3), IMAGE),
    _d("Conv1DTranspose", lambda: lm.Conv1DTranspose(3, 3, strides=2), (5, 2),
       channels_first=_cf(lm.Conv1DTranspose, 3, 3, strides=2)),
    _d("Conv2DTranspose", lambda: lm.Conv2DTranspose(3, 3, strides=2), (4, 4, 2),
       channels_first=_cf(lm.Conv2DTranspose, 3, 3, strides=2)),
    _d("Conv3DTranspose", lambda: lm.Conv3DTranspose(2, 2, strides=2), (3, 3, 3, 2),
       channels_first=_cf(lm.Conv3DTranspose, 2, 2, strides=2)),
    _d("ConvNDTranspose(2)", lambda: lm.ConvNDTranspose(2, 3, 3, padding="VALID"), (4, 4, 2)),
    _d("Conv2DTranspose(stride 2, dilation 2)", lambda: lm.Conv2DTranspose(3, 3, strides=2, dilation=2), (4, 4, 2)),
    _d("DepthwiseConv2D", lambda: lm.DepthwiseConv2D(3, depth_multiplier=2), IMAGE,
       channels_first=_cf(lm.DepthwiseConv2D, 3, depth_multiplier=2)),
    _d("DepthwiseConv2D(strides (1, 2))", lambda: lm.DepthwiseConv2D(3, strides=(1, 2)), IMAGE),
    # ----------------------------------------------------------------- pooling
    _d("MaxPool1D", lambda: lm.MaxPool1D(2), (6, 2), channels_first=_cf(lm.MaxPool1D, 2)),
    _d("MaxPool2D", lambda: lm.MaxPool2D(2), IMAGE, channels_first=_cf(lm.MaxPool2D, 2)),
    _d("MaxPool3D", lambda: lm.MaxPool3D(2), (4, 4, 4, 2), channels_first=_cf(lm.MaxPool3D, 2),
       xfail=_f16_gap("f16_pool3d", POOL3D_F16)),
    _d("MaxPool3D(SAME, stride 3 > window 2)", lambda: lm.MaxPool3D(2, strides=3, padding="SAME"), (4, 5, 4, 2),
       xfail=_f16_gap("f16_pool3d", POOL3D_F16)),
    _d("AvgPool1D", lambda: lm.AvgPool1D(3, strides=2, padding="SAME"), (7, 2),
       channels_first=_cf(lm.AvgPool1D, 3, strides=2, padding="SAME")),
    _d("AvgPool2D", lambda: lm.AvgPool2D(2), IMAGE, channels_first=_cf(lm.AvgPool2D, 2)),
    _d("AvgPool3D", lambda: lm.AvgPool3D(2), (4, 4, 4, 2), channels_first=_cf(lm.AvgPool3D, 2),
       xfail=_f16_gap("f16_pool3d", POOL3D_F16)),
    _d("PoolND(2, max)", lambda: lm.PoolND(2, "max", 3, strides=1, padding="SAME"), IMAGE),
    _d("GlobalAvgPool", lambda: lm.GlobalAvgPool(), IMAGE, channels_first=_cf(lm.GlobalAvgPool)),
    _d("GlobalMaxPool(keepdims)", lambda: lm.GlobalMaxPool(keepdims=True), IMAGE,
       channels_first=_cf(lm.GlobalMaxPool, keepdims=True)),
    _d("GlobalPool(avg)", lambda: lm.GlobalPool("avg"), (5, 3)),
    # ----------------------------------------------------------- normalization
    _d("BatchNorm", lambda: lm.BatchNorm(), (4, 4, 3), channels_first=_cf(lm.BatchNorm)),
    _d("BatchNorm(rank 2)", lambda: lm.BatchNorm(), (5,)),
    _d("LayerNorm", lambda: lm.LayerNorm(), (2, 5)),
    _d("GroupNorm", lambda: lm.GroupNorm(2), (4, 4, 4), channels_first=_cf(lm.GroupNorm, 2)),
    _d("InstanceNorm", lambda: lm.InstanceNorm(), (4, 4, 3), channels_first=_cf(lm.InstanceNorm)),
    _d("RMSNorm", lambda: lm.RMSNorm(), (2, 5)),
    # ------------------------------------------------------ shape / regularize
    _d("Dropout", lambda: lm.Dropout(0.5), (5,), xfail={"strategy": DROPOUT_REPLICAS}),
    _d("Flatten", lambda: lm.Flatten(), (2, 3, 2)),
    _d("Reshape", lambda: lm.Reshape((2, 3)), (6,)),
    _d("Embedding", lambda: lm.Embedding(10, 4), (5,), dtype=tf.int32, maxval=10),
    _d("Upsample(nearest, x2)", lambda: lm.Upsample(scale=2), (3, 3, 2), channels_first=_cf(lm.Upsample, scale=2)),
    _d("Upsample(bilinear, size)", lambda: lm.Upsample(size=(5, 7), mode="bilinear"), (3, 4, 2),
       channels_first=_cf(lm.Upsample, size=(5, 7), mode="bilinear")),
    _d("Bias", lambda: lm.Bias(), (3, 2)),
    _d("BatchApply(Conv2D)", lambda: lm.BatchApply(lm.Conv2D(3, 3)), (2, 4, 4, 2)),
    # Codes spread wide: a half-precision input must not land on another nearest code (a tie within
    # the rounding, which moves that vector by the distance between two codes).
    _d("VectorQuantizer", lambda: lm.VectorQuantizer(6, 3, w_init=lm.initializers.Uniform(-3, 3)), (4, 3)),
    _d("VectorQuantizerEMA", lambda: lm.VectorQuantizerEMA(6, 3, decay=0.9, w_init=lm.initializers.Uniform(-3, 3)),
       (4, 3)),
    # ------------------------------------------------------------- activations
    _d("Activation(tanh)", lambda: lm.Activation("tanh"), (5,)),
    _d("ReLU", lambda: lm.ReLU(), (5,)),
    _d("GELU", lambda: lm.GELU(), (5,)),
    _d("GELU(approximate)", lambda: lm.GELU(approximate=True), (5,)),
    _d("SiLU", lambda: lm.SiLU(), (5,)),
    _d("LeakyReLU", lambda: lm.LeakyReLU(0.2), (5,)),
    _d("ELU", lambda: lm.ELU(), (5,)),
    _d("Tanh", lambda: lm.Tanh(), (5,)),
    _d("Sigmoid", lambda: lm.Sigmoid(), (5,)),
    _d("Softmax", lambda: lm.Softmax(), (5,)),
    # -------------------------------------------------------------- containers
    _d("Sequential", lambda: lm.Sequential([lm.Linear(4), lm.ReLU(), lm.Dropout(0.1), lm.BatchNorm(), lm.Linear(2)]),
       (5,), xfail={"strategy": DROPOUT_REPLICAS}),
    _d("Residual", lambda: lm.Residual(lm.Linear(5), activation="relu"), (5,)),
    _d("Residual(shortcut)", lambda: lm.Residual(lm.Linear(3), shortcut=lm.Linear(3)), (5,)),
    _d("Remat(Sequential)", lambda: lm.remat(lm.Sequential([lm.Linear(4), lm.GELU(), lm.LayerNorm(), lm.Linear(3)])),
       (5,)),
    _d("Remat(BasicBlock)", lambda: lm.Remat(M.BasicBlock(2, 2)), IMAGE),
    # --------------------------------------------------------------- recurrent
    _d("RNN(LSTM)", lambda: lm.RNN(lm.LSTM(4)), (5, 3), covers=(lm.RNN, lm.LSTM)),
    _d("RNN(GRU, last output)", lambda: lm.RNN(lm.GRU(4), return_sequences=False), (5, 3), covers=(lm.GRU,)),
    _d("RNN(SimpleRNN, reverse)", lambda: lm.RNN(lm.SimpleRNN(4), reverse=True), (5, 3), covers=(lm.SimpleRNN,)),
    _d("RNN(DeepRNN, return_state)", lambda: lm.RNN(lm.DeepRNN([lm.LSTM(4), lm.GRU(3)], skip_connections=True),
                                                    return_state=True), (5, 3), covers=(lm.DeepRNN,)),
    _d("RNN(LSTM(projection))", lambda: lm.RNN(lm.LSTM(4, projection_size=2)), (5, 3)),
    _d("RNN(ConvLSTM2D)", lambda: lm.RNN(lm.ConvLSTM2D(3, 3)), (3, 4, 4, 2), covers=(lm.ConvLSTM2D,)),
    _d("Bidirectional", lambda: lm.Bidirectional(lm.LSTM(3), lm.GRU(3)), (5, 3)),
    _d("RNN(Bidirectional, last output)", lambda: lm.RNN(lm.Bidirectional(lm.GRU(3), lm.GRU(3), merge="sum"),
                                                         return_sequences=False), (5, 3), covers=(lm.RNN,)),
    # --------------------------------------------------------------- attention
    _d("MultiHeadAttention", lambda: lm.MultiHeadAttention(2, 3), (5, 4)),
    _d("MultiHeadAttention(causal)", lambda: lm.MultiHeadAttention(2, 3, output_size=6), (5, 4),
       call_kwargs={"causal": True}),
    _d("MultiHeadAttention(grouped, rotary, causal)",
       lambda: lm.MultiHeadAttention(4, 2, num_kv_heads=2, rotary=lm.RotaryEmbedding()), (5, 4),
       call_kwargs={"causal": True}),
    _d("TransformerEncoderBlock", lambda: lm.TransformerEncoderBlock(2, 4, 8, dropout=0.0), (5, 4)),
    _d("TransformerEncoderBlock(rms, causal)", lambda: lm.TransformerEncoderBlock(2, 4, 8, dropout=0.0, norm="rms"),
       (5, 4), call_kwargs={"causal": True}),
    _d("RotaryEmbedding", lambda: lm.RotaryEmbedding(), (2, 5, 4)),
    _d("SinusoidalPositionalEmbedding", lambda: lm.SinusoidalPositionalEmbedding(8), (5, 4)),
    _d("LearnedPositionalEmbedding", lambda: lm.LearnedPositionalEmbedding(8, 4), (5, 4)),
]

MODELS = [
    # The convolutions end on 1x1 maps, so Flatten orders the features alike in both data
    # formats and the same weights serve the channels_first twin.
    _d("ConvNet", lambda: M.ConvNet(3, widths=(4, 8), hidden=8), (4, 4, 1),
       channels_first=_cf(M.ConvNet, 3, widths=(4, 8), hidden=8)),
    _d("ConvNet(batch_norm)", lambda: M.ConvNet(3, widths=(4,), batch_norm=True, hidden=8), (2, 2, 1),
       channels_first=_cf(M.ConvNet, 3, widths=(4,), batch_norm=True, hidden=8)),
    _d("ConvNet(8x8, 3 blocks)", lambda: M.ConvNet(3, widths=(4, 4, 4), convs_per_block=1, hidden=None), (8, 8, 1)),
    _d("ConvBlock", lambda: M.ConvBlock(4), IMAGE, channels_first=_cf(M.ConvBlock, 4)),
    _d("MLP", lambda: M.MLP([8], 3), (5,)),
    _d("MLP(batch_norm)", lambda: M.MLP([8], 3, batch_norm=True), (2, 3)),
    _d("MLP(dropout)", lambda: M.MLP([8, 8], 3, dropout=0.3), (5,), xfail={"strategy": DROPOUT_REPLICAS}),
    _d("ResNet(basic)", lambda: M.ResNet("basic", (1, 1), num_classes=3, width=4), (8, 8, 2),
       channels_first=_cf(M.ResNet, "basic", (1, 1), num_classes=3, width=4)),
    # expensive=False: the slowest to trace under a strategy (~13 s); ResNet(basic) and
    # Bottleneck cover the same classes there.
    _d("ResNet(bottleneck, imagenet stem)", lambda: M.ResNet("bottleneck", (1,), num_classes=3, width=2, stem="imagenet"),
       (8, 8, 2), expensive=False),
    _d("BasicBlock", lambda: M.BasicBlock(2, 4, stride=2), IMAGE, channels_first=_cf(M.BasicBlock, 2, 4, stride=2)),
    _d("Bottleneck", lambda: M.Bottleneck(2, 2), IMAGE, channels_first=_cf(M.Bottleneck, 2, 2)),
    _d("Transformer(tokens)", lambda: M.Transformer(11, 3, model_dim=8, num_heads=2, num_layers=1, max_len=8,
                                                    dropout=0.0, pad_id=0), (6,), dtype=tf.int32,
       maxval=11),
    _d("Transformer(features, mean)", lambda: M.Transformer(num_classes=3, input_dim=5, model_dim=8, num_heads=2,
                                                            num_layers=1, max_len=8, pooling="mean", dropout=0.0,
                                                            positional="sinusoidal"), (6, 5), expensive=False),
    _d("ViT", lambda: M.ViT(3, patch_size=4, model_dim=8, num_heads=2, num_layers=1), (8, 8, 1)),
    _d("GPT", lambda: M.GPT(13, max_len=8, model_dim=8, num_heads=2, num_layers=1), (6,), dtype=tf.int32, maxval=13),
    _d("GPT(rope, grouped, untied)", lambda: M.GPT(13, max_len=8, model_dim=8, num_heads=2, num_layers=1,
                                                   positional="rope", num_kv_heads=1, tie_embeddings=False),
       (6,), dtype=tf.int32, maxval=13, expensive=False),
    _d("UNet", lambda: M.UNet(3, depth=1, widths=(4, 8)), (4, 4, 1),
       channels_first=_cf(M.UNet, 3, depth=1, widths=(4, 8))),
    _d("UNet(transpose, no norm)", lambda: M.UNet(2, depth=2, widths=(2, 2, 4), upsampling="transpose",
                                                  batch_norm=False), (4, 4, 1), expensive=False),
    # expensive=False: UNet and MobileNetV2 run these blocks through the strategy and SavedModel checks.
    _d("DoubleConv", lambda: M.DoubleConv(3), IMAGE, channels_first=_cf(M.DoubleConv, 3), expensive=False),
    # Two stages and a 16-wide last convolution keep the trace small (and SGD on 1280 pooled features
    # diverges in the strategy check); the full layout is tested in test_vision_models.py.
    _d("MobileNetV2", lambda: M.MobileNetV2(3, width_multiplier=0.25, blocks=[(1, 8, 1, 1), (6, 8, 2, 2)],
                                            last_channels=16, dropout=0.0), (8, 8, 3),
       channels_first=_cf(M.MobileNetV2, 3, width_multiplier=0.25, blocks=[(1, 8, 1, 1), (6, 8, 2, 2)],
                          last_channels=16, dropout=0.0)),
    _d("InvertedResidual", lambda: M.InvertedResidual(2, 2, expansion=3), IMAGE,
       channels_first=_cf(M.InvertedResidual, 2, 2, expansion=3), expensive=False),
]

DESCRIPTORS = LAYERS + MODELS
