"""The layer kinds of a model description, one unit each: fields, validation, shape, modules.

A `LayerSpec` names its kind; the kind's unit says which fields it takes, checks them, computes
the output shape and builds the float or Brevitas modules. Adding a kind is one class here (and
its export unit in export/kinds/). The quantized modules follow the number contract
(docs/number-contract.md, rules 1-3, 9-12): power-of-two scales, Int32Bias, batch norm folded before QAT,
average pools over a power-of-two count followed by a requantizer. Brevitas is imported where a
quantized module is built, so a float model and the commands that only read descriptions do not
pay for its import.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn


class ConfigError(ValueError):
    """A model description that the toolkit cannot build."""


COMMON = {"kind"}
WEIGHT_FIELDS = {"out", "w_bits", "a_bits", "cls", "sparsity", "relu", "dropout", "per_channel"}


def pair(v) -> tuple[int, int]:
    """A field that is one int for both axes, or [height, width]."""
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def is_pair(v, low: int) -> bool:
    """An int >= low, or a list of two such ints (height, width)."""
    ints = [v] if isinstance(v, int) and not isinstance(v, bool) else list(v) if isinstance(v, (list, tuple)) and len(v) == 2 else []
    return bool(ints) and all(isinstance(i, int) and not isinstance(i, bool) and i >= low for i in ints)


def conv_padding(l) -> tuple[int, int]:
    """The zero padding (height, width) on both sides of each axis: "same" for odd kernels, an int or a pair."""
    if l.padding == "same":
        kh, kw = pair(l.kernel)
        return ((kh - 1) // 2, (kw - 1) // 2)
    return pair(l.padding)


class Kind:
    """One layer kind. Subclasses set `name`, `fields` and override what they need."""

    name = ""
    fields: set[str] = set()
    weighted = False

    def validate(self, l, where: str) -> None:
        pass

    def out_shape(self, l, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        return shape

    def modules(self, l, shape: tuple[int, ...], quantized: bool, last: bool, bn_folded: bool) -> list[nn.Module]:
        return []


def _check_weighted(l, where: str) -> None:
    if not isinstance(l.out, int) or l.out < 1:
        raise ConfigError(f"{where}: field 'out' must be a positive integer (channels or features), got {l.out!r}")
    if not (2 <= l.w_bits <= 8 and 2 <= l.a_bits <= 8):
        raise ConfigError(f"{where}: fields 'w_bits'/'a_bits' must be 2..8, got w_bits={l.w_bits} a_bits={l.a_bits}")
    if l.cls not in ("NP", "P"):
        raise ConfigError(f"{where}: field 'cls' must be NP or P, got {l.cls!r}")
    if not 0.0 <= l.sparsity < 1.0 or (l.cls == "NP" and l.sparsity):
        raise ConfigError(f"{where}: field 'sparsity' {l.sparsity} must be in [0, 1), and 0 for NP layers")
    if not 0.0 <= l.dropout < 1.0:
        raise ConfigError(f"{where}: field 'dropout' {l.dropout} must be in [0, 1)")


def _act(l, quantized: bool) -> list[nn.Module]:
    if not l.relu:
        return []
    if not quantized:
        return [nn.ReLU()]
    import brevitas.nn as qnn

    from quant.quantizers import ActQuant
    return [qnn.QuantReLU(act_quant=ActQuant, bit_width=l.a_bits, return_quant_tensor=True)]


def _weight_kw(l, last: bool) -> dict:
    from quant.quantizers import BIAS_QUANT, PerChannelWeightQuant, WeightQuant
    return dict(weight_quant=PerChannelWeightQuant if l.per_channel else WeightQuant, weight_bit_width=l.w_bits,
                bias_quant=BIAS_QUANT, return_quant_tensor=not last)


class Conv(Kind):
    """kh x kw convolution (`kernel`, `stride`, `padding`: an int, or [height, width]), zero padding
    ("same" for odd kernels, or 0..k-1 per axis), `groups` (channels split into groups; groups equal
    to the input channels is a depthwise conv), optional batch norm, ReLU."""

    name = "conv"
    fields = WEIGHT_FIELDS | {"kernel", "stride", "padding", "bn", "groups"}
    weighted = True

    def validate(self, l, where: str) -> None:
        _check_weighted(l, where)
        if not is_pair(l.kernel, 1):
            raise ConfigError(f"{where}: field 'kernel' must be a positive integer or [height, width], got {l.kernel!r}")
        if not is_pair(l.stride, 1):
            raise ConfigError(f"{where}: field 'stride' must be a positive integer or [height, width], got {l.stride!r}")
        if not isinstance(l.groups, int) or isinstance(l.groups, bool) or l.groups < 1 or l.out % l.groups:
            raise ConfigError(f"{where}: field 'groups' must be a positive integer that divides 'out' ({l.out}), got {l.groups!r}")
        kh, kw = pair(l.kernel)
        if l.padding == "same":
            if kh % 2 == 0 or kw % 2 == 0:
                raise ConfigError(f"{where}: field 'padding' \"same\" needs an odd kernel (got {l.kernel}); give the pad as an integer")
        elif not is_pair(l.padding, 0) or any(p >= k for p, k in zip(pair(l.padding), (kh, kw))):
            raise ConfigError(f"{where}: field 'padding' must be \"same\", or an integer (or [height, width]) from 0 to the "
                              f"kernel size - 1, got {l.padding!r}")
        if l.cls == "P":
            raise ConfigError(f"{where}: field 'cls' P: the sparse engine runs linear layers only; mark convolutions NP")

    def out_shape(self, l, shape, where):
        if len(shape) != 3:
            raise ConfigError(f"{where}: a convolution needs a (C, H, W) input, got {shape}; put it before the flatten")
        c, h, w = shape
        if c % l.groups:
            raise ConfigError(f"{where}: field 'groups' {l.groups} does not divide the {c} input channels")
        (ph, pw), (kh, kw), (sh, sw) = conv_padding(l), pair(l.kernel), pair(l.stride)
        return (l.out, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)

    def modules(self, l, shape, quantized, last, bn_folded):
        args = (shape[0], l.out, pair(l.kernel))
        kw = dict(stride=pair(l.stride), padding=conv_padding(l), groups=l.groups)
        if quantized:
            import brevitas.nn as qnn
            if l.bn and not bn_folded:
                raise ConfigError("a quantized model with batch norm that is not folded; fold it first (contract rule 12): "
                                  "train the float model, then `python -m quant train --qat --init FLOAT.pt`")
            mods: list[nn.Module] = [qnn.QuantConv2d(*args, **kw, **_weight_kw(l, last))]
        else:
            mods = [nn.Conv2d(*args, **kw)]
        if l.bn:  # the slot keeps the parameter names of the float and the folded/quantized twins aligned
            mods.append(nn.Identity() if bn_folded else nn.BatchNorm2d(l.out))
        mods += [] if last else _act(l, quantized)
        return mods + ([nn.Dropout(l.dropout)] if l.dropout else [])


class Linear(Kind):
    """Fully connected layer on a flat input; NP (dense) or P (pruned, sparse engine)."""

    name = "linear"
    fields = WEIGHT_FIELDS
    weighted = True

    def validate(self, l, where):
        _check_weighted(l, where)

    def out_shape(self, l, shape, where):
        if len(shape) != 1:
            raise ConfigError(f"{where}: a linear layer needs a flat input, got {shape}; put a flatten layer before it")
        return (l.out,)

    def modules(self, l, shape, quantized, last, bn_folded):
        if quantized:
            import brevitas.nn as qnn
            mods: list[nn.Module] = [qnn.QuantLinear(shape[0], l.out, bias=True, **_weight_kw(l, last))]
        else:
            mods = [nn.Linear(shape[0], l.out)]
        mods += [] if last else _act(l, quantized)
        return mods + ([nn.Dropout(l.dropout)] if l.dropout else [])


class _Pool(Kind):
    fields = {"kernel"}

    def validate(self, l, where):
        if not is_pair(l.kernel, 1) or pair(l.kernel) == (1, 1):
            raise ConfigError(f"{where}: field 'kernel' must be an integer >= 2 or [height, width] (the window, and its "
                              f"stride), got {l.kernel!r}")

    def out_shape(self, l, shape, where):
        if len(shape) != 3:
            raise ConfigError(f"{where}: pooling needs a (C, H, W) input, got {shape}")
        c, h, w = shape
        kh, kw = pair(l.kernel)
        return (c, h // kh, w // kw)


class MaxPool(_Pool):
    """k x k max-pool, stride k, on the quantized values (contract rule 6)."""

    name = "maxpool"

    def modules(self, l, shape, quantized, last, bn_folded):
        return [nn.MaxPool2d(pair(l.kernel))]


def _requant(l) -> nn.Module:
    """The requantizer after an average; the float twin holds an Identity in its slot, so both
    have the same parameter names."""
    import brevitas.nn as qnn

    from quant.quantizers import ActQuant
    return qnn.QuantIdentity(act_quant=ActQuant, bit_width=l.a_bits, return_quant_tensor=True)


class AvgPool(_Pool):
    """kh x kw average pool, stride = window, then a requantizer. Over a power-of-two count it is a
    shift (contract rule 11); over any other count a multiply and shift that the compiler proves
    exact (rule 14)."""

    name = "avgpool"
    fields = {"kernel", "a_bits"}

    def modules(self, l, shape, quantized, last, bn_folded):
        return [nn.AvgPool2d(pair(l.kernel)), _requant(l) if quantized else nn.Identity()]


class GlobalAvgPool(Kind):
    """Average over the whole H x W map, then a requantizer; (C, 1, 1). Contract rule 11 for a
    power-of-two count, rule 14 for any other."""

    name = "globalavgpool"
    fields = {"a_bits"}

    def out_shape(self, l, shape, where):
        if len(shape) != 3:
            raise ConfigError(f"{where}: global pooling needs a (C, H, W) input, got {shape}")
        return (shape[0], 1, 1)

    def modules(self, l, shape, quantized, last, bn_folded):
        return [nn.AdaptiveAvgPool2d(1), _requant(l) if quantized else nn.Identity()]


class ResidualBlock(nn.Module):
    """out = relu(join(branch(x)) + join(shortcut(x))): one quantizer `join` on both summands gives
    them one power-of-two scale, so the add is exact in integers (contract rule 13)."""

    def __init__(self, branch: nn.Module, shortcut: nn.Module, join: nn.Module, act: nn.Module):
        super().__init__()
        self.branch, self.shortcut, self.join, self.act = branch, shortcut, join, act

    def forward(self, x):
        return self.act(self.join(self.branch(x)) + self.join(self.shortcut(x)))


class Residual(Kind):
    """A ResNet basic block: two 3x3 "same" convs (the first with `stride`, ReLU between), a shortcut
    (identity, or a 1x1 conv with `stride` when the stride or the width changes), the add, ReLU.
    With `bn`, each conv has batch norm, trained in float and folded before QAT (rule 12)."""

    name = "residual"
    fields = {"out", "stride", "bn", "per_channel", "w_bits", "a_bits"}
    weighted = False  # its convs are NP; pruning and the P/NP tags look at conv and linear layers only

    def validate(self, l, where):
        if not isinstance(l.out, int) or l.out < 1:
            raise ConfigError(f"{where}: field 'out' must be a positive integer (channels), got {l.out!r}")
        if not isinstance(l.stride, int) or l.stride not in (1, 2):
            raise ConfigError(f"{where}: field 'stride' must be 1 or 2, got {l.stride!r}")
        if not (2 <= l.w_bits <= 8 and 2 <= l.a_bits <= 8):
            raise ConfigError(f"{where}: fields 'w_bits'/'a_bits' must be 2..8, got w_bits={l.w_bits} a_bits={l.a_bits}")

    def out_shape(self, l, shape, where):
        if len(shape) != 3:
            raise ConfigError(f"{where}: a residual block needs a (C, H, W) input, got {shape}")
        c, h, w = shape
        return (l.out, (h - 1) // l.stride + 1, (w - 1) // l.stride + 1)

    def modules(self, l, shape, quantized, last, bn_folded):
        if last:
            raise ConfigError("a residual block cannot be the last layer; end the model with a linear layer")
        conv = Conv()

        def unit(ci, k, stride, relu):
            spec = _spec(l, out=l.out, kernel=k, stride=stride, padding=k // 2, relu=relu)
            return nn.Sequential(*conv.modules(spec, (ci, 1, 1), quantized, False, bn_folded))

        c = shape[0]
        branch = nn.Sequential(*unit(c, 3, l.stride, True), *unit(l.out, 3, 1, False))
        shortcut = unit(c, 1, l.stride, False) if (l.stride != 1 or c != l.out) else nn.Identity()
        if quantized:
            import brevitas.nn as qnn

            from quant.quantizers import SignedActQuant
            join: nn.Module = qnn.QuantIdentity(act_quant=SignedActQuant, bit_width=l.a_bits, return_quant_tensor=True)
        else:
            join = nn.Identity()
        act = _act(_spec(l, relu=True), quantized)[0]
        return [ResidualBlock(branch, shortcut, join, act)]


def _spec(l, **kw):
    """A copy of LayerSpec `l` with fields replaced (the conv units inside a block)."""
    return replace(l, **kw)


class Flatten(Kind):
    name = "flatten"

    def out_shape(self, l, shape, where):
        n = 1
        for s in shape:
            n *= s
        return (n,)

    def modules(self, l, shape, quantized, last, bn_folded):
        return [nn.Flatten()]


KINDS: dict[str, Kind] = {k.name: k for k in (Conv(), Linear(), MaxPool(), AvgPool(), GlobalAvgPool(), Residual(), Flatten())}
ALIASES = {"pool": "maxpool", "gap": "globalavgpool"}  # older names, still read in architecture files


def kind_of(name: str, where: str) -> Kind:
    unit = KINDS.get(ALIASES.get(name, name))
    if unit is None:
        raise ConfigError(f"{where}: unknown kind {name!r}; use one of {', '.join(KINDS)}")
    return unit
