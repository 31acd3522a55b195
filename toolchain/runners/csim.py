"""The csim runner: a C simulation of hardware (hls4ml's, of an FPGA design) runs on this machine.

It runs the bundle as the host runner does, but its times are a simulation's on this CPU, so they
are labelled emulated: not the FPGA's latency, which only synthesis estimates.
"""

from . import register
from .base import RunnerCaps
from .host import HostRunner


class CsimRunner(HostRunner):
    name = "csim"
    caps = RunnerCaps(emulated=True, timing_note="C simulation wall time on this machine's CPU, not the FPGA's latency")


register(CsimRunner())
