"""Layer kinds, one unit each (FINN's one class per op): a kind's integer semantics (the reference)
and its accounting (MACs, stored bits, the rule-5 accumulator bound), looked up by the plan's `kind`.

The units read a plan layer and import nothing of the plan; how the compiler recognises each kind
in a QCDQ graph is in export/handlers.py. Adding a kind is one unit here, listed in `KINDS`, one
handler there, and their tests (and, for the hardware, an engine in hw/).
"""

from __future__ import annotations

from export.kinds.add import Add
from export.kinds.avgpool import AvgPool, GlobalAvgPool
from export.kinds.base import LayerKind
from export.kinds.conv2d import Conv2d
from export.kinds.flatten import Flatten
from export.kinds.linear import Linear
from export.kinds.maxpool import MaxPool
from export.kinds.requant import Requant

KINDS: dict[str, LayerKind] = {u.kind: u for u in (Add(), AvgPool(), GlobalAvgPool(), Conv2d(), Flatten(), Linear(),
                                                   MaxPool(), Requant())}


def unit(kind: str) -> LayerKind:
    """The unit of a plan layer's `kind`; an unknown kind is a ValueError naming the known ones."""
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown layer kind {kind!r}; this toolkit knows {', '.join(KINDS)}") from None
