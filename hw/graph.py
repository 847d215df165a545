"""A plan's graph as steps (the passes to be) and the buffers that hold its tensors while they live.

An add runs on the store of a conv that feeds it (hw.residual): the conv's only reader must be the
add, and the add's other operand (the skip) waits in its buffer while the conv computes; a requant
layer that only an add reads is applied on that skip read. Such a fused step runs at the add's
place in the plan (both operands exist by then). A flatten is no step (a buffer read flat is its
output); a requant layer read otherwise runs as a step of its own. A tensor is named by the layer
that produced it (INPUT_TENSOR: the image) and lives in one buffer until its last reader's step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from export.plan import INPUT, Layer, Plan
from hw.engines import UnsupportedPlan, refuse

INPUT_TENSOR = -1  # the image, in buffer 0


@dataclass(frozen=True)
class Step:
    """One pass to be: the engine runs layer `run`, reading tensor `src`, and writes the output of
    layer `out` (the add's, when the step stores `add` with the skip tensor `skip`, requantized by
    layer `requant` on its read; `branch` is the add operand the conv's output is)."""

    run: int
    out: int
    src: int
    skip: int | None = None
    add: int | None = None
    requant: int | None = None
    branch: int = 0


def inputs_of(plan: Plan) -> list[list[int]]:
    """Each layer's input layers, in operand order (INPUT_TENSOR: the image; none named: the previous layer)."""
    index = {l.name: i for i, l in enumerate(plan.layers)}
    out = []
    for i, l in enumerate(plan.layers):
        names = l.inputs or ((plan.layers[i - 1].name if i else INPUT),)
        unknown = [n for n in names if n != INPUT and index.get(n, i) >= i]
        if unknown:
            raise refuse(i, l, f"reads {', '.join(map(repr, unknown))}, not an earlier layer; layers go in topological order")
        out.append([INPUT_TENSOR if n == INPUT else index[n] for n in names])
    return out


def steps(plan: Plan) -> list[Step]:
    """The plan's steps in order; refuses an add that no conv can store (naming the layer)."""
    layers, ins = plan.layers, inputs_of(plan)
    readers: dict[int, list[int]] = {}
    for i, srcs in enumerate(ins):
        for j in srcs:
            readers.setdefault(j, []).append(i)

    def tensor(j: int) -> int:  # the tensor a layer's output is (a flatten's is its input's)
        while j != INPUT_TENSOR and layers[j].kind == "flatten":
            j = ins[j][0]
        return j

    def shape(j: int) -> tuple[int, ...]:
        return tuple(plan.input_shape) if j == INPUT_TENSOR else tuple(layers[j].out_shape)

    fused: dict[int, Step] = {}  # add index -> its step
    absorbed: set[int] = set()  # convs and requants that a fused step runs
    for i, l in enumerate(layers):
        if l.kind != "add":
            continue
        if len(ins[i]) != 2 or any(shape(j) != tuple(l.in_shape) for j in ins[i]):
            raise refuse(i, l, "an add takes two operands of its own shape")
        best = None
        for b, p in enumerate(ins[i]):
            q = ins[i][1 - b]
            if p == INPUT_TENSOR or layers[p].kind != "conv2d" or readers[p] != [i] or p in absorbed:
                continue
            requant = q if q != INPUT_TENSOR and layers[q].kind == "requant" and readers[q] == [i] else None
            skip = tensor(ins[q][0] if requant is not None else q)
            if skip != tensor(ins[p][0]) and (best is None or p > best.run):
                best = Step(p, i, tensor(ins[p][0]), skip, i, requant, b)
        if best is None:
            raise refuse(i, l, "the add runs on the store of a conv that only the add reads, into another buffer "
                               "than the conv's input; neither operand is such a conv")
        fused[i] = best
        absorbed |= {best.run} | ({best.requant} if best.requant is not None else set())
    out = []
    for i, l in enumerate(layers):
        if i in fused:
            out.append(fused[i])
        elif l.kind != "flatten" and i not in absorbed:
            out.append(Step(i, i, tensor(ins[i][0])))
    return out


def check_shapes(plan: Plan) -> None:
    """Each layer's input shape is its input's output shape (a flatten's output read flat)."""
    ins = inputs_of(plan)
    for i, l in enumerate(plan.layers):
        if l.kind == "add":
            continue  # steps() checks both operands
        j = ins[i][0]
        shape = tuple(plan.input_shape) if j == INPUT_TENSOR else tuple(plan.layers[j].out_shape)
        if tuple(l.in_shape) != shape:
            raise refuse(i, l, f"input shape {tuple(l.in_shape)} does not follow its input's output {shape}")


class Buffers:
    """Buffers by liveness. Buffer 0 holds the image. A stage's steps share its own buffers: a step
    writes into a free one (the one nearest its size, grown if none is large enough) or a new one,
    and a tensor's buffer is free again after its last reader's step. A stage's last step writes a
    new buffer that hands the image on to the next stage; only that stage's first step may read it."""

    def __init__(self, plan: Plan, all_steps: list[Step], stage_of: list[int]):
        self.plan, self.steps, self.stage_of = plan, all_steps, stage_of
        self.sizes, self.reads = [int(np.prod(plan.input_shape))], [0]
        self.of: dict[int, int] = {INPUT_TENSOR: 0}
        self.free: dict[int, list[int]] = {}
        self.last_use: dict[int, int] = {}
        self.made_at: dict[int, int] = {INPUT_TENSOR: -1}
        for j, st in enumerate(all_steps):
            for t in (st.src, st.skip):
                if t is not None:
                    self.last_use[t] = j

    def read(self, j: int, t: int, top: int) -> int:
        """The buffer step `j` reads tensor `t` from, its vectors starting at most at `top`."""
        at = self.made_at[t]
        stage, layer = self.stage_of[j], self.plan.layers[self.steps[j].run]
        if (self.stage_of[at] if at >= 0 else 0) != stage:
            first = j == 0 or self.stage_of[j - 1] != stage
            handed = at == j - 1 and t == self.steps[j].src and self.last_use[t] == j
            if not (first and handed or t == INPUT_TENSOR and first and self.last_use[t] == j):
                raise refuse(self.steps[j].run, layer, "reads a tensor of an earlier pipeline stage other than the one it hands on; "
                                                       "only the next layer may read a stage's output")
        b = self.of[t]
        self.reads[b] = max(self.reads[b], top)
        return b

    def write(self, j: int, t: int, size: int) -> int:
        """The buffer step `j` writes tensor `t` (`size` elements) into; -1 for the last step."""
        if j == len(self.steps) - 1:
            return -1
        stage = self.stage_of[j]
        free = self.free.setdefault(stage, [])
        if self.stage_of[j + 1] != stage or not free:
            b = len(self.sizes)
            self.sizes.append(0)
            self.reads.append(0)
        else:
            fits = [b for b in free if self.sizes[b] >= size]
            b = min(fits, key=lambda b: self.sizes[b]) if fits else max(free, key=lambda b: self.sizes[b])
            free.remove(b)
        self.sizes[b] = max(self.sizes[b], size)
        self.of[t], self.made_at[t] = b, j
        return b

    def release(self, j: int) -> None:
        """After step `j`: the buffers whose tensors it read last are free in their stage."""
        st = self.steps[j]
        for t in {st.src, st.skip} - {None}:
            if self.last_use[t] == j and t != INPUT_TENSOR and self.stage_of[self.made_at[t]] == self.stage_of[j]:
                self.free.setdefault(self.stage_of[j], []).append(self.of[t])
