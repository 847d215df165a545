"""The quantizers of the number contract, named once (docs/number-contract.md, rules 1-3).

Every scale is a power of two (Brevitas FixedPoint quantizers), biases are int32 in the
accumulator's scale, and the input quantizer has the constant scale 2**-8 so that the image
p/256 enters as its integer pixel value p.
"""

from brevitas.inject.enum import ScalingImplType
from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int32Bias, Uint8ActPerTensorFixedPoint

BIAS_QUANT = Int32Bias  # rule 3: scale = s_in * s_w, 32-bit


class WeightQuant(Int8WeightPerTensorFixedPoint):
    """Signed narrow-range weights, one power-of-two scale per tensor; width set per layer."""


class ActQuant(Uint8ActPerTensorFixedPoint):
    """Unsigned activations after ReLU, learned power-of-two scale; width set per layer."""


class SignedActQuant(Int8ActPerTensorFixedPoint):
    """Signed activations (a residual add's summands), learned power-of-two scale; width set per layer."""


class InputQuant(Uint8ActPerTensorFixedPoint):
    """Rule 2: unsigned 8-bit with the constant scale 2**-8 (1.0 / 255 rounded up to a power of two)."""

    scaling_impl_type = ScalingImplType.CONST
    scaling_const = 1.0
    max_val = 1.0


class PerChannelWeightQuant(Int8WeightPerTensorFixedPoint):
    """Rule 10: one power-of-two scale per output channel (Brevitas 0.13 has no ready per-channel FixedPoint)."""

    scaling_per_output_channel = True


class SignedInputQuant(Int8ActPerTensorFixedPoint):
    """Rule 2 for signed inputs: int8 with the constant scale 2**-7, so q / 128 enters as q."""

    scaling_impl_type = ScalingImplType.CONST
    scaling_const = 1.0
    max_val = 1.0
    min_val = -1.0
