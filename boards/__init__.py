"""Boards: profiles of the target FPGA boards, the fit check, the open-toolchain build, the board
top (accelerator + UART host link), and the `bitstream-rtl` flow that ties the chain together.

profiles.py  fit.py  build.py  clock.py  uart.py  top.py  host.py  report.py  flow.py  __main__.py
"""
