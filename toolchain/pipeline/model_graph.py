"""The model graph of report.html: report.json's `graph` laid out by Graphviz `dot` as inline SVG, each node
with its op, output shape and MACs, coloured by where the op runs."""

import re

from .. import proc
from ..console import one_line
from ..errors import EdgeyardError

DOT_TIMEOUT_S = 60
DOT_HINT = "apt-get install graphviz (./bootstrap.sh installs it)."
# Where an op runs -> fill colour; the legend of the drawing.
PLACES = {"NPU": "#88ccee", "CPU": "#ddcc77", "kernel library": "#44aa99", "generated code": "#aa4499",
          "runtime": "#dddddd"}


def placement(report: dict) -> dict:
    """{"by op": {op: place}, "default": place, "source": why}: where the build's ops run.

    Ethos-U (vela): the ops Vela's summary lists on the CPU, the rest on the NPU. The kernels backend runs
    every op in edgeyard's kernel library (it refuses a model with any other op); TVM's C for a
    microcontroller is generated code; other backends run every op in their runtime."""
    backend = report["backend"]
    estimate = report.get("estimate") or {}
    if backend == "vela" and "operators" in estimate:
        return {"by op": {op: "CPU" for op in estimate["operators"]["cpu_ops"]}, "default": "NPU",
                "source": "Vela's summary: the ops it left to the CPU, every other op on the NPU"}
    if backend == "kernels":
        return {"by op": {}, "default": "kernel library", "source": "the kernels backend runs every op in its library"}
    if backend == "tvm" and report.get("memory"):
        return {"by op": {}, "default": "generated code", "source": "TVM generates C for every op"}
    return {"by op": {}, "default": "runtime", "source": f"{backend} runs every op in its runtime"}


def _quoted(*lines: str) -> str:
    """A DOT string literal of these lines: each on one line, quotes and backslashes escaped (dot escapes the
    text again for the SVG), joined by DOT's line break."""
    return '"' + "\\n".join(one_line(line).replace("\\", "\\\\").replace('"', '\\"') for line in lines) + '"'


def dot_source(nodes: list[dict], places: dict) -> str:
    """The graph in DOT: a node per op (op, output shape, MACs), an edge per tensor from its producer."""
    producer = {name: index for index, node in enumerate(nodes) for name in node["outputs"]}
    lines = ["digraph model {", 'graph [rankdir=TB, nodesep=0.25, ranksep=0.3, bgcolor="transparent"];',
             'node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];']
    for index, node in enumerate(nodes):
        place = places["by op"].get(node["op"], places["default"])
        shape = "x".join(str(d) for d in node["shape"]) if node["shape"] is not None else "?"
        macs = [f"{node['macs']:,} MACs"] if node["macs"] else []
        lines.append(f'n{index} [label={_quoted(node["op"], shape, *macs)}, fillcolor="{PLACES[place]}", '
                     f'tooltip={_quoted(place)}];')
    for index, node in enumerate(nodes):
        for name in node["inputs"]:
            if name in producer:
                lines.append(f"n{producer[name]} -> n{index};")
    lines.append("}")
    return "\n".join(lines)


def graph_svg(nodes: list[dict], places: dict) -> tuple[str | None, str | None]:
    """(the <svg> element, None) or (None, why there is no drawing): a missing `dot` costs the drawing, not
    the build."""
    try:
        out = proc.run(["dot", "-Tsvg"], input=dot_source(nodes, places), timeout_s=DOT_TIMEOUT_S,
                       what="graphviz dot", install_hint=DOT_HINT).stdout
    except EdgeyardError as err:
        return None, str(err)
    svg = out[out.index("<svg"):]
    return re.sub(r"<!--.*?-->", "", svg, flags=re.DOTALL), None  # dot's comments hold the ops' names again
