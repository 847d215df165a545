"""Amaranth generators of the plan-driven CNN accelerator (docs/architecture.md).

`hw.top.Accelerator(plan, ArrayConfig(rows, cols))` is the design; `hw.top.generate` writes its
Verilog (memory contents inline) and its port and memory inventory (`hw.inventory`);
`hw.cycles.predict` is the cycle model; `python -m hw generate` is the CLI. Blocks: pe, array
(+ engine), window, requant, pool, sparse (+ lanes), memories, stream_io; config (ArrayConfig),
engines (the engine units' signature and contract, Pass and Schedule), schedule (plan to schedule,
the unit registry), sequencer (a stage's FSM).
"""
