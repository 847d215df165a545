"""Amaranth generators of the plan-driven CNN accelerator (DESIGN.md, "Hardware shape").

`hw.top.Accelerator(plan, ArrayConfig(rows, cols))` is the design; `hw.top.generate` writes its
Verilog and memory init files; `hw.cycles.predict` is the cycle model; `python -m hw generate`
is the CLI. Blocks: pe, array (+ engine), window, requant, pool, sparse, memories, stream_io,
sequencer (schedule + FSM).
"""
