"""Verification ladder step 3: the accelerator's RTL under cocotb + Verilator against ONNX Runtime.

runner (Verilator build cache, runs), harness (the Verilog around the accelerator), testbench (the
cocotb test), golden (expected logits, locating a mismatch), verify (the whole check), __main__ (CLI).
"""
