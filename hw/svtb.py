"""A self-checking SystemVerilog testbench for simulators outside cocotb (xsim, Questa, Verilator).

`accelerator_tb.sv` streams one image (`tb_image.hex`, HWC order) into `accelerator` with a
valid/ready handshake, collects the logits and compares them with the values the plan's integer
reference computes for that image (equal to ONNX Runtime, verification ladder step 1). It prints
PASS or the first differing logit and exits through $finish / $fatal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.atomic import atomic_write_text
from export.plan import Plan
from export.reference import logits as reference_logits
from hw.stream_io import pixel_bytes

TEMPLATE = """\
// Self-checking testbench of `accelerator`, generated from the layer plan.
// Image: tb_image.hex ({n_pixels} bytes, HWC order). Expected logits: the plan's integer reference.
`timescale 1ns/1ps
module accelerator_tb;
  localparam int N_PIXELS = {n_pixels};
  localparam int N_CLASSES = {n_classes};
  localparam int TIMEOUT = {timeout};
  logic clk = 0, rst = 1;
  logic start = 0;
  logic pixels__valid = 0;
  logic [7:0] pixels__payload = 0;
  wire pixels__ready;
  wire logits__valid;
  logic logits__ready = 1;
  wire [31:0] logits__payload;
  wire busy, done;
  wire [31:0] cycles;
  logic [7:0] image [0:N_PIXELS-1];
  logic signed [31:0] expected [0:N_CLASSES-1];
  logic signed [31:0] got [0:N_CLASSES-1];
  int n_got = 0, t = 0, p = 0, errors = 0;
  logic xfer_pix, xfer_log, finished = 0;
  logic signed [31:0] logit;

  accelerator dut (
    .clk(clk), .rst(rst), .start(start), .busy(busy), .done(done), .cycles(cycles),
    .pixels__valid(pixels__valid), .pixels__ready(pixels__ready), .pixels__payload(pixels__payload),
    .logits__valid(logits__valid), .logits__ready(logits__ready), .logits__payload(logits__payload)
  );

  always #5 clk = ~clk;

  initial begin
    $readmemh("tb_image.hex", image);
{expected}
    // Drive on the falling edge, decide each transfer before the rising edge that makes it.
    repeat (4) @(negedge clk);
    rst = 0;
    @(negedge clk);
    start = 1;
    @(negedge clk);
    start = 0;
    while (!finished && t < TIMEOUT) begin
      pixels__valid = p < N_PIXELS;
      pixels__payload = p < N_PIXELS ? image[p] : 8'd0;
      #1;  // combinational ready/valid settle
      xfer_pix = pixels__valid && pixels__ready;
      xfer_log = logits__valid && logits__ready;
      logit = logits__payload;
      @(posedge clk);
      if (xfer_pix) p++;
      if (xfer_log && n_got < N_CLASSES) begin
        got[n_got] = logit;
        n_got++;
      end
      @(negedge clk);
      t++;
      finished = done;
    end
    if (!finished) $fatal(1, "FAIL: no done after %0d cycles (%0d pixels sent, %0d logits)", TIMEOUT, p, n_got);
    if (n_got != N_CLASSES) $fatal(1, "FAIL: %0d logits, expected %0d", n_got, N_CLASSES);
    for (int i = 0; i < N_CLASSES; i++)
      if (got[i] !== expected[i]) begin
        $display("FAIL: logit %0d: expected %0d, got %0d", i, expected[i], got[i]);
        errors++;
      end
    if (errors) $fatal(1, "FAIL: %0d of %0d logits differ", errors, N_CLASSES);
    $display("PASS: %0d logits bit-exact, %0d cycles", N_CLASSES, cycles);
    $finish;
  end
endmodule
"""


def test_image(plan: Plan, seed: int = 0) -> np.ndarray:
    """The seeded (C, H, W) integer image the testbench uses, over the plan's input range."""
    t = plan.input_type
    return np.random.default_rng(seed).integers(t.min, t.max + 1, size=plan.input_shape, dtype=np.int16)


def write_testbench(plan: Plan, out_dir: str | Path, timeout_cycles: int, image: np.ndarray | None = None) -> list[str]:
    """Write accelerator_tb.sv and tb_image.hex (the pixel stream's bytes) into `out_dir`; returns their names."""
    out_dir = Path(out_dir)
    image = test_image(plan) if image is None else np.asarray(image)
    want = reference_logits(plan, image)
    hwc = pixel_bytes(image.transpose(1, 2, 0).reshape(-1), plan.input_type)
    expected = "\n".join(f"    expected[{i}] = {'-' if v < 0 else ''}32'sd{abs(int(v))};" for i, v in enumerate(want))
    atomic_write_text(out_dir / "tb_image.hex", "".join(f"{int(v):02x}\n" for v in hwc))
    atomic_write_text(out_dir / "accelerator_tb.sv", TEMPLATE.format(
        n_pixels=hwc.size, n_classes=len(want), timeout=int(timeout_cycles), expected=expected))
    return ["accelerator_tb.sv", "tb_image.hex"]
