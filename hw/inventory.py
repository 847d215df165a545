"""What a generated design is made of, for boards/ and sim/: its ports and its memories.

Ports come from the component's signature, named as Amaranth's Verilog back end names them (the
signature path joined by `__`, after `clk` and `rst`). Memories are the `amaranth.lib.memory.Memory`
objects the design elaborates into (`shape`, `depth`, `init`, `read_ports`, `write_ports`).
`hw.top.generate` writes the accelerator's inventory beside accelerator.v as accelerator.json.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from amaranth import Shape
from amaranth.hdl import Fragment
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

INVENTORY_FILE = "accelerator.json"
VERSION = 1


@dataclass(frozen=True)
class Port:
    """One top-level port: `direction` is "input" or "output", `width` in bits."""

    direction: str
    width: int


@dataclass(frozen=True)
class MemoryInfo:
    """One memory: `name` its dotted submodule path, `initialised` when its init is not all zero."""

    name: str
    width: int
    depth: int
    initialised: bool
    read_ports: int
    write_ports: int

    @property
    def bits(self) -> int:
        return self.width * self.depth


@dataclass(frozen=True)
class Inventory:
    ports: dict[str, Port]
    memories: tuple[MemoryInfo, ...]

    def to_json(self) -> str:
        return json.dumps({"version": VERSION, "ports": {n: asdict(p) for n, p in self.ports.items()},
                           "memories": [asdict(m) for m in self.memories]}, indent=1)

    @classmethod
    def load(cls, path: str | Path) -> "Inventory":
        """Read an accelerator.json; a missing or foreign file is a ValueError naming it."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"{path}: no inventory; generate the design with `python -m hw generate`") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not an inventory ({e}); generate it again with `python -m hw generate`") from None
        if doc.get("version") != VERSION:
            raise ValueError(f"{path}: inventory version {doc.get('version')!r}, this hw writes {VERSION}; generate it again")
        return cls({n: Port(**p) for n, p in doc["ports"].items()}, tuple(MemoryInfo(**m) for m in doc["memories"]))


def ports_of(component: wiring.Component) -> dict[str, Port]:
    """The Verilog ports of `component` converted as a top level (sync domain: clk, rst)."""
    found = {"clk": Port("input", 1), "rst": Port("input", 1)}
    for path, member, _ in component.signature.flatten(component):
        name = "__".join(str(p) for p in path)
        found[name] = Port("input" if member.flow == In else "output", Shape.cast(member.shape).width)
    return found


def memories_of(design) -> tuple[MemoryInfo, ...]:
    """Every Memory of an elaboratable (elaborated here), in submodule order."""
    found: list[MemoryInfo] = []

    def walk(frag, path: tuple[str, ...]) -> None:
        for origin in frag.origins or ():
            if isinstance(origin, Memory):
                found.append(MemoryInfo(".".join(path), Shape.cast(origin.shape).width, origin.depth,
                                        any(int(v) for v in origin.init), len(origin.read_ports),
                                        len(origin.write_ports)))
                return
        for sub, name, _ in frag.subfragments:
            walk(sub, (*path, str(name)))

    walk(Fragment.get(design, None), ())
    return tuple(found)


def inventory(component: wiring.Component) -> Inventory:
    return Inventory(ports_of(component), memories_of(component))


__all__ = ["INVENTORY_FILE", "Inventory", "MemoryInfo", "Port", "inventory", "memories_of", "ports_of"]
