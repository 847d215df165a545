"""Expected logits from ONNX Runtime, and where the RTL first departs from the reference.

Contract rule 7: the RTL's integer logits equal round(ort / 2**plan.logit_exp), and the argmax
agrees. On a mismatch the image is re-run with the harness's trace writer (every
activation-buffer write: layer, flat (C, H, W) address, data) and an FST waveform; the trace is
checked against export.reference layer by layer to name the first layer, channel and pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export import reference
from export.plan import Layer, Plan


def names_classes(onnx_path: str | Path) -> bool:
    """Whether the model's metadata names its classes (quant/'s export does; a plain Brevitas export does not)."""
    import onnx
    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(p.key == "class_names" for p in model.metadata_props)


def expected_logits(onnx_path: str | Path, plan: Plan, images: np.ndarray) -> np.ndarray:
    """int64 (N, classes): ONNX Runtime's logits for integer `images` fed as x * 2**input_type.exp
    (contract rule 2), in units of the last accumulator's LSB."""
    from export.ort import golden_session, run_logits
    session = golden_session(onnx_path)
    batch = session.get_inputs()[0].shape[0]  # a model exported with a fixed batch takes that many
    out = run_logits(session, images, exp=plan.input_type.exp,
                     **({"batch": batch} if isinstance(batch, int) else {})).astype(np.float64)
    return np.round(out * 2.0 ** -plan.logit_exp).astype(np.int64)


@dataclass(frozen=True)
class Write:
    """One traced activation-buffer element write, in the order the RTL made it."""

    layer: int
    addr: int
    raw: int


def read_trace(path: str | Path, elem_bits: int) -> list[Write]:
    """The harness's `layer addr count data-hex` lines, one Write per element: element i of a
    line is at `addr + i`, in bits [i*elem_bits, (i+1)*elem_bits) of the data."""
    out = []
    mask = (1 << elem_bits) - 1
    for line in Path(path).read_text().splitlines():
        layer, addr, count, data = line.split()
        word = int(data, 16)
        out += [Write(int(layer), int(addr) + i, (word >> (i * elem_bits)) & mask) for i in range(int(count))]
    return out


def as_int(raw: int, layer: Layer) -> int:
    """The written bits as the layer's output integer type (sign-extended when it is signed)."""
    t = layer.out or layer.inp
    v = raw & ((1 << t.bits) - 1)
    return v - (1 << t.bits) if t.signed and v >> (t.bits - 1) else v


def where(layer: Layer, index: int, i: int) -> str:
    """`layer 3 'conv2' (conv2d), channel 5, pixel (y=7, x=12)` for flat (C, H, W) `index`."""
    head = f"layer {i} {layer.name!r} ({layer.kind})"
    shape = layer.out_shape
    if len(shape) == 3:
        c, rem = divmod(index, shape[1] * shape[2])
        y, x = divmod(rem, shape[2])
        return f"{head}, channel {c}, pixel (y={y}, x={x})"
    return f"{head}, output {index}"


def first_difference(plan: Plan, image: np.ndarray, writes: list[Write],
                     got_logits: list[int] | None = None) -> str:
    """Name the first RTL write that differs from export.reference (in the RTL's write order),
    or the first output a traced layer never wrote, or else the first differing logit."""
    outs = reference.run(plan, image)
    seen: dict[int, set[int]] = {}
    for w in writes:
        if not 0 <= w.layer < len(plan.layers):
            return f"trace names layer {w.layer}, the plan has layers 0..{len(plan.layers) - 1}"
        layer = plan.layers[w.layer]
        ref = outs[w.layer].reshape(-1)
        if not 0 <= w.addr < ref.size:
            return f"{where(layer, 0, w.layer).split(',')[0]}: write to address {w.addr}, outside its {ref.size} outputs"
        got = as_int(w.raw, layer)
        if got != ref[w.addr]:
            return f"first difference: {where(layer, w.addr, w.layer)}: expected {int(ref[w.addr])}, got {got}"
        seen.setdefault(w.layer, set()).add(w.addr)
    for i, addrs in sorted(seen.items()):
        size = outs[i].size
        if len(addrs) != size:
            missing = min(set(range(size)) - addrs)
            return (f"{where(plan.layers[i], missing, i)} was never written "
                    f"({len(addrs)} of {size} outputs written)")
    last = len(plan.layers) - 1
    if got_logits is not None:
        ref = outs[-1].reshape(-1)
        for k, (e, g) in enumerate(zip(ref.tolist(), got_logits)):
            if e != g:
                traced = f"all {len(writes)} traced writes match the reference; " if writes else "no traced writes; "
                return f"{traced}first difference: {where(plan.layers[last], k, last)} (logit {k}): expected {e}, got {g}"
    return (f"the RTL equals export.reference on this image ({len(writes)} traced writes, logits equal), "
            "so the reference and ONNX Runtime disagree: check the export (verification step 1)")
