"""SGD (with momentum / Nesterov), Adam (with AMSGrad), AdamW and RMSProp.

The update rules follow PyTorch's ``torch.optim`` formulas exactly (same
hyper-parameter meanings, ``weight_decay`` as in PyTorch), so a model trained
with the same hyper-parameters follows the same trajectory up to float
rounding. ``g`` is the gradient, ``p`` the variable, ``lr`` the learning rate
at this step and ``t`` the 1-based update count.

Half-precision (float16 / bfloat16) variables get float32 slots and their
update is computed in float32, then rounded once into the variable.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import tensorflow as tf

from lamina.optim.base import LearningRate, NoDecay, Optimizer, check_float
from lamina.optim.groups import ParamGroup

__all__ = ["SGD", "Adam", "AdamW", "RMSProp", "get"]


def _moving_average(slot: tf.Variable, value: tf.Tensor, decay: float) -> tf.Tensor:
    """``slot ← decay · slot + (1 - decay) · value``; returns the new value."""
    new = decay * tf.convert_to_tensor(slot) + (1.0 - decay) * value
    slot.assign(new)
    return new


def _momentum_step(slot: tf.Variable, value: tf.Tensor, momentum: float) -> tf.Tensor:
    """``slot ← momentum · slot + value`` (a momentum buffer, no dampening); returns the new value."""
    new = momentum * tf.convert_to_tensor(slot) + value
    slot.assign(new)
    return new


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (PyTorch's ``SGD``).

    ``g ← g + weight_decay · p``; with momentum ``μ > 0``: ``b ← μ b + g`` and
    ``d = g + μ b`` (Nesterov) or ``d = b``; without: ``d = g``. Then
    ``p ← p - lr · d``. (No dampening: the first step is ``b = g``.)

    Slots: ``momentum_buffer`` (only when ``momentum > 0``).

    Args:
      learning_rate: a float >= 0 or a schedule ``step -> lr``.
      momentum: ``μ`` in ``[0, 1]``.
      nesterov: use Nesterov momentum (needs ``momentum > 0``).
      weight_decay: L2 penalty coefficient (>= 0), added to the gradient.
      global_clipnorm / clipnorm / clipvalue: optional gradient clipping.
      groups / no_weight_decay: per-variable learning-rate scales and weight decay
        (:class:`lamina.optim.ParamGroup`, ``"bias_and_norm"``).
      name: module name.

    Raises:
      ValueError / TypeError: for out-of-range hyper-parameters.
    """

    def __init__(
        self,
        learning_rate: LearningRate = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        *,
        global_clipnorm: Optional[float] = None,
        clipnorm: Optional[float] = None,
        clipvalue: Optional[float] = None,
        groups: Sequence[ParamGroup] = (),
        no_weight_decay: NoDecay = None,
        name: Optional[str] = None,
    ) -> None:
        owner = f"SGD '{name or 'sgd'}'"
        momentum = check_float(momentum, "momentum", owner, 0.0, 1.0)
        weight_decay = check_float(weight_decay, "weight_decay", owner)
        if nesterov and momentum == 0.0:
            raise ValueError(f"{owner}: nesterov=True needs momentum > 0, got momentum={momentum}")
        super().__init__(
            learning_rate,
            slots=("momentum_buffer",) if momentum > 0.0 else (),
            global_clipnorm=global_clipnorm,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            groups=groups,
            no_weight_decay=no_weight_decay,
            name=name,
        )
        self.momentum = momentum
        self.nesterov = bool(nesterov)
        self.weight_decay = weight_decay

    def _hyper(self) -> Dict[str, Any]:
        return {"momentum": self.momentum, "nesterov": self.nesterov, "weight_decay": self.weight_decay}

    def _update(self, var: tf.Variable, grad: tf.Tensor, slots: Dict[str, tf.Variable], lr: tf.Tensor, step: tf.Tensor) -> None:
        dtype = grad.dtype
        decay = self.weight_decay_for(var)
        if decay:
            grad = grad + decay * self.read(var)
        if self.momentum > 0.0:
            b = _momentum_step(slots["momentum_buffer"], grad, self.momentum)
            d = grad + self.momentum * b if self.nesterov else b
        else:
            d = grad
        var.assign_sub(tf.cast(tf.cast(lr, dtype) * d, var.dtype))


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction, optionally AMSGrad.

    ``g ← g + weight_decay · p`` (L2, as PyTorch's ``Adam``);
    ``m ← β1 m + (1 - β1) g``; ``v ← β2 v + (1 - β2) g²``;
    (AMSGrad: ``v_max ← max(v_max, v)``, used in place of ``v``);
    ``p ← p - lr · (m / (1 - β1^t)) / (sqrt(v / (1 - β2^t)) + ε)``.

    ``epsilon`` defaults to ``1e-8`` (PyTorch's and the paper's; Keras uses
    ``1e-7``), added *outside* the square root.

    Slots: ``m``, ``v`` and, with AMSGrad, ``v_max``.

    Args:
      learning_rate: a float >= 0 or a schedule ``step -> lr``.
      beta1: first-moment decay in ``[0, 1)``.
      beta2: second-moment decay in ``[0, 1)``.
      epsilon: ``ε >= 0``.
      amsgrad: use the running maximum of ``v`` (Reddi et al., 2018).
      weight_decay: L2 penalty added to the gradient (>= 0); see :class:`AdamW`
        for decoupled decay.
      global_clipnorm / clipnorm / clipvalue: optional gradient clipping.
      groups / no_weight_decay: per-variable learning-rate scales and weight decay
        (:class:`lamina.optim.ParamGroup`, ``"bias_and_norm"``).
      name: module name.

    Raises:
      ValueError / TypeError: for out-of-range hyper-parameters.
    """

    _decoupled = False

    def __init__(
        self,
        learning_rate: LearningRate = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        amsgrad: bool = False,
        weight_decay: float = 0.0,
        *,
        global_clipnorm: Optional[float] = None,
        clipnorm: Optional[float] = None,
        clipvalue: Optional[float] = None,
        groups: Sequence[ParamGroup] = (),
        no_weight_decay: NoDecay = None,
        name: Optional[str] = None,
    ) -> None:
        owner = f"{type(self).__name__} '{name or type(self).__name__.lower()}'"
        beta1 = check_float(beta1, "beta1", owner, 0.0, 1.0, high_inclusive=False)
        beta2 = check_float(beta2, "beta2", owner, 0.0, 1.0, high_inclusive=False)
        epsilon = check_float(epsilon, "epsilon", owner)
        weight_decay = check_float(weight_decay, "weight_decay", owner)
        slots = ("m", "v", "v_max") if amsgrad else ("m", "v")
        super().__init__(
            learning_rate,
            slots=slots,
            global_clipnorm=global_clipnorm,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            groups=groups,
            no_weight_decay=no_weight_decay,
            name=name,
        )
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.amsgrad = bool(amsgrad)
        self.weight_decay = weight_decay

    def _hyper(self) -> Dict[str, Any]:
        return {
            "beta1": self.beta1,
            "beta2": self.beta2,
            "epsilon": self.epsilon,
            "amsgrad": self.amsgrad,
            "weight_decay": self.weight_decay,
        }

    def _can_fuse(self, var: tf.Variable, grad: tf.Tensor) -> bool:
        """Whether ``var``'s update can run as one ``ResourceApplyAdam`` kernel.

        Plain Adam (no AMSGrad, no weight decay) on a float32/float64 variable
        with a gradient of the same dtype, outside a ``tf.distribute`` strategy.
        """
        return (not self.amsgrad and not self.weight_decay_for(var) and not tf.distribute.has_strategy()
                and var.dtype == grad.dtype and var.dtype in (tf.float32, tf.float64))

    def _update(self, var: tf.Variable, grad: tf.Tensor, slots: Dict[str, tf.Variable], lr: tf.Tensor, step: tf.Tensor) -> None:
        if self._can_fuse(var, grad):
            # One fused kernel per variable instead of ~15 element-wise ops. The kernel
            # does p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps'); with
            # eps' = eps * sqrt(1 - b2^t) that is exactly the update below (epsilon
            # outside the bias-corrected square root, as PyTorch).
            dtype = var.dtype
            t = tf.cast(step, dtype)
            b1 = tf.constant(self.beta1, dtype)
            b2 = tf.constant(self.beta2, dtype)
            b1_power, b2_power = tf.pow(b1, t), tf.pow(b2, t)
            tf.raw_ops.ResourceApplyAdam(
                var=var.handle, m=slots["m"].handle, v=slots["v"].handle, beta1_power=b1_power,
                beta2_power=b2_power, lr=tf.cast(lr, dtype), beta1=b1, beta2=b2,
                epsilon=self.epsilon * tf.sqrt(1.0 - b2_power), grad=grad,
            )
            return
        dtype = grad.dtype
        p = self.read(var)
        decay = self.weight_decay_for(var)
        if decay and self._decoupled:
            p = p - tf.cast(lr * decay, dtype) * p
        elif decay:
            grad = grad + decay * p
        b1, b2 = self.beta1, self.beta2
        m = _moving_average(slots["m"], grad, b1)
        v = _moving_average(slots["v"], tf.square(grad), b2)
        if self.amsgrad:
            v = tf.maximum(tf.convert_to_tensor(slots["v_max"]), v)
            slots["v_max"].assign(v)
        # Scalar bias corrections in float32 (float64 for float64 variables).
        sdtype = tf.float64 if dtype == tf.float64 else tf.float32
        t = tf.cast(step, sdtype)
        bias1 = 1.0 - tf.pow(tf.constant(b1, sdtype), t)
        bias2 = 1.0 - tf.pow(tf.constant(b2, sdtype), t)
        denom = tf.sqrt(v) / tf.cast(tf.sqrt(bias2), dtype) + self.epsilon
        p = p - tf.cast(tf.cast(lr, sdtype) / bias1, dtype) * m / denom
        var.assign(tf.cast(p, var.dtype))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter; PyTorch's ``AdamW``).

    Each step first shrinks the variable, ``p ← p - lr · weight_decay · p``, then
    applies the :class:`Adam` update to the raw gradient (the decay never
    enters ``m`` or ``v``). ``lr`` is the scheduled learning rate of the step.

    Args:
      learning_rate: a float >= 0 or a schedule ``step -> lr``.
      weight_decay: the decoupled decay (>= 0, default 0.01 as PyTorch).
      beta1, beta2, epsilon, amsgrad: as :class:`Adam`.
      global_clipnorm / clipnorm / clipvalue: optional gradient clipping.
      groups / no_weight_decay: per-variable learning-rate scales and weight decay
        (:class:`lamina.optim.ParamGroup`, ``"bias_and_norm"``).
      name: module name.

    Raises:
      ValueError / TypeError: for out-of-range hyper-parameters.
    """

    _decoupled = True

    def __init__(
        self,
        learning_rate: LearningRate = 1e-3,
        weight_decay: float = 0.01,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        amsgrad: bool = False,
        *,
        global_clipnorm: Optional[float] = None,
        clipnorm: Optional[float] = None,
        clipvalue: Optional[float] = None,
        groups: Sequence[ParamGroup] = (),
        no_weight_decay: NoDecay = None,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(
            learning_rate,
            beta1=beta1,
            beta2=beta2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            weight_decay=weight_decay,
            global_clipnorm=global_clipnorm,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            groups=groups,
            no_weight_decay=no_weight_decay,
            name=name,
        )


class RMSProp(Optimizer):
    """RMSProp (Hinton, 2012), PyTorch's ``RMSprop`` formula.

    ``g ← g + weight_decay · p``; ``s ← ρ s + (1 - ρ) g²`` (``s`` starts at 0);
    centered: ``ḡ ← ρ ḡ + (1 - ρ) g`` and ``den = sqrt(s - ḡ²) + ε``, else
    ``den = sqrt(s) + ε`` (``ε`` *outside* the root, as PyTorch; Keras puts it
    inside). With momentum ``μ > 0``: ``b ← μ b + g / den`` and
    ``p ← p - lr · b``; without: ``p ← p - lr · g / den``.

    ``decay`` is PyTorch's ``alpha``. ``epsilon`` defaults to ``1e-7`` (PyTorch:
    ``1e-8``).

    Slots: ``square_avg``, plus ``grad_avg`` (centered) and ``momentum_buffer`` (μ > 0).

    Args:
      learning_rate: a float >= 0 or a schedule ``step -> lr``.
      decay: ``ρ`` in ``[0, 1)``.
      momentum: ``μ`` in ``[0, 1]``.
      epsilon: ``ε >= 0``.
      centered: normalize by the estimated variance instead of the second moment.
      weight_decay: L2 penalty added to the gradient (>= 0).
      global_clipnorm / clipnorm / clipvalue: optional gradient clipping.
      groups / no_weight_decay: per-variable learning-rate scales and weight decay
        (:class:`lamina.optim.ParamGroup`, ``"bias_and_norm"``).
      name: module name.

    Raises:
      ValueError / TypeError: for out-of-range hyper-parameters.
    """

    def __init__(
        self,
        learning_rate: LearningRate = 1e-3,
        decay: float = 0.9,
        momentum: float = 0.0,
        epsilon: float = 1e-7,
        centered: bool = False,
        weight_decay: float = 0.0,
        *,
        global_clipnorm: Optional[float] = None,
        clipnorm: Optional[float] = None,
        clipvalue: Optional[float] = None,
        groups: Sequence[ParamGroup] = (),
        no_weight_decay: NoDecay = None,
        name: Optional[str] = None,
    ) -> None:
        owner = f"RMSProp '{name or 'rms_prop'}'"
        decay = check_float(decay, "decay", owner, 0.0, 1.0, high_inclusive=False)
        momentum = check_float(momentum, "momentum", owner, 0.0, 1.0)
        epsilon = check_float(epsilon, "epsilon", owner)
        weight_decay = check_float(weight_decay, "weight_decay", owner)
        slots = ["square_avg"]
        if centered:
            slots.append("grad_avg")
        if momentum > 0.0:
            slots.append("momentum_buffer")
        super().__init__(
            learning_rate,
            slots=slots,
            global_clipnorm=global_clipnorm,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            groups=groups,
            no_weight_decay=no_weight_decay,
            name=name,
        )
        self.decay = decay
        self.momentum = momentum
        self.epsilon = epsilon
        self.centered = bool(centered)
        self.weight_decay = weight_decay

    def _hyper(self) -> Dict[str, Any]:
        return {
            "decay": self.decay,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "centered": self.centered,
            "weight_decay": self.weight_decay,
        }

    def _update(self, var: tf.Variable, grad: tf.Tensor, slots: Dict[str, tf.Variable], lr: tf.Tensor, step: tf.Tensor) -> None:
        dtype = grad.dtype
        decay = self.weight_decay_for(var)
        if decay:
            grad = grad + decay * self.read(var)
        rho = self.decay
        s = _moving_average(slots["square_avg"], tf.square(grad), rho)
        if self.centered:
            ga = _moving_average(slots["grad_avg"], grad, rho)
            s = s - tf.square(ga)
        den = tf.sqrt(s) + self.epsilon
        if self.momentum > 0.0:
            b = _momentum_step(slots["momentum_buffer"], grad / den, self.momentum)
            delta = tf.cast(lr, dtype) * b
        else:
            delta = tf.cast(lr, dtype) * grad / den
        var.assign_sub(tf.cast(delta, var.dtype))


_NAMES = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSProp}


def get(name: Any, **kwargs: Any) -> Optimizer:
    """Builds an optimizer by name.

    Args:
      name: ``"sgd"``, ``"adam"``, ``"adamw"`` or ``"rmsprop"``
        (case-insensitive); an :class:`Optimizer` is returned unchanged.
      **kwargs: the optimizer's arguments (``learning_rate=...``).

    Returns:
      The optimizer.

    Raises:
      ValueError: for an unknown name, or kwargs with an optimizer instance.
      TypeError: for a non-string name.
    """
    if isinstance(name, Optimizer):
        if kwargs:
            raise ValueError(f"optim.get: got an optimizer {name!r} and extra arguments {sorted(kwargs)}")
        return name
    if not isinstance(name, str):
        raise TypeError(f"optim.get: expected an optimizer name or Optimizer, got {name!r}")
    cls = _NAMES.get(name.lower())
    if cls is None:
        raise ValueError(f"optim.get: unknown optimizer {name!r}; expected one of {sorted(_NAMES)}")
    return cls(**kwargs)
