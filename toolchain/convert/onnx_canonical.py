"""One canonical form for a converted ONNX graph, so that a conversion gives the same bytes every run.

tf2onnx's optimizers walk sets of Python objects, so from run to run the same graph comes out with
its nodes in another order and other counters in the names they generate ("Relu__5" or "Relu__8").
Here every tensor gets a fingerprint of what computes it (op, attributes, operand fingerprints,
weight bytes), independent of names and order; nodes are sorted topologically with ties broken by
fingerprint, and the generated names are renumbered in that order.
"""

import hashlib
import re

import onnx
from onnx import numpy_helper

GENERATED_COUNTER = re.compile(r"__\d+")  # tf2onnx's make_name suffix, e.g. "Relu__5:0"
OUTPUT_INDEX = re.compile(r"(:\d+)?$")  # a TensorFlow-style ":0" ending, kept last when numbering


def canonicalize(model: onnx.ModelProto) -> None:
    """Reorder and rename `model`'s main graph in place."""
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        return  # subgraphs refer to outer names; renaming them as well is not worth it for converted CNNs
    nodes = list(graph.node)
    fingerprints = _fingerprints(graph)
    ordered = _canonical_order(nodes, fingerprints)
    renamed = _canonical_names(graph, ordered, fingerprints)
    for node in ordered:
        node.name = renamed.get(("node", node.name), node.name)
        node.input[:] = [renamed.get(("tensor", name), name) for name in node.input]
        node.output[:] = [renamed.get(("tensor", name), name) for name in node.output]
    for tensor in graph.initializer:
        tensor.name = renamed[("tensor", tensor.name)]
    for value in graph.value_info:
        value.name = renamed.get(("tensor", value.name), value.name)
    position: dict[str, int] = {}
    for name in (n for node in ordered for n in node.input):
        position.setdefault(name, len(position))
    initializers = sorted(graph.initializer, key=lambda t: (position.get(t.name, len(position)), t.name))
    value_infos = sorted(graph.value_info, key=lambda v: v.name)
    _replace(graph.node, ordered)
    _replace(graph.initializer, initializers)
    _replace(graph.value_info, value_infos)
    _renumber_dim_params(graph)
    graph.doc_string = ""  # tf2onnx writes the traced function's name there, with TensorFlow's process-wide counter


def _renumber_dim_params(graph: onnx.GraphProto) -> None:
    """Symbolic dims ("unk__126") carry the same counter; renumber them in order of appearance."""
    renamed: dict[str, str] = {}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                if dim.dim_param not in renamed:
                    base = GENERATED_COUNTER.sub("", dim.dim_param)
                    renamed[dim.dim_param] = f"{base}_{len(renamed)}"
                dim.dim_param = renamed[dim.dim_param]


def _replace(field, items) -> None:
    copies = [type(item)() for item in items]
    for copy, item in zip(copies, items):
        copy.CopyFrom(item)
    del field[:]
    field.extend(copies)


def _digest(*parts) -> str:
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()


def _fingerprints(graph: onnx.GraphProto) -> dict[str, str]:
    """Tensor name -> fingerprint of what computes it; ONNX stores nodes in topological order."""
    fingerprints = {"": ""}  # an omitted optional operand
    for value in graph.input:
        fingerprints[value.name] = _digest("input", value.name)
    for tensor in graph.initializer:
        data = numpy_helper.to_array(tensor)
        fingerprints[tensor.name] = _digest(
            "weight", data.dtype, data.shape, hashlib.sha256(data.tobytes()).hexdigest()
        )
    for node in graph.node:
        node_print = _node_fingerprint(node, fingerprints)
        for k, output in enumerate(node.output):
            fingerprints[output] = _digest(node_print, k)
    return fingerprints


def _node_fingerprint(node: onnx.NodeProto, fingerprints: dict[str, str]) -> str:
    attributes = []
    for attribute in sorted(node.attribute, key=lambda a: a.name):
        anonymous = onnx.AttributeProto()
        anonymous.CopyFrom(attribute)
        anonymous.t.name = ""  # a tensor attribute's own name is generated too
        attributes.append(anonymous.SerializeToString(deterministic=True).hex())
    return _digest("node", node.domain, node.op_type, *attributes, *(fingerprints.get(i, i) for i in node.input))


def _canonical_order(nodes: list[onnx.NodeProto], fingerprints: dict[str, str]) -> list[onnx.NodeProto]:
    """Topological order (Kahn) taking, among the ready nodes, the smallest fingerprint first."""
    producer = {output: i for i, node in enumerate(nodes) for output in node.output}
    waiting_on = [{producer[name] for name in node.input if name in producer} for node in nodes]
    consumers: dict[int, list[int]] = {i: [] for i in range(len(nodes))}
    for i, producers in enumerate(waiting_on):
        for p in producers:
            consumers[p].append(i)
    key = [_node_fingerprint(node, fingerprints) for node in nodes]
    ready = {i for i, producers in enumerate(waiting_on) if not producers}
    ordered = []
    while ready:
        i = min(ready, key=lambda j: key[j])
        ready.remove(i)
        ordered.append(nodes[i])
        for c in consumers[i]:
            waiting_on[c].discard(i)
            if not waiting_on[c]:
                ready.add(c)
    return ordered


def _canonical_names(
    graph: onnx.GraphProto, ordered: list[onnx.NodeProto], fingerprints: dict[str, str]
) -> dict[tuple[str, str], str]:
    """New names without tf2onnx's counters, made unique in canonical order; graph inputs and outputs keep theirs."""
    kept = {v.name for v in graph.input} | {v.name for v in graph.output}
    taken = set(kept)
    renamed: dict[tuple[str, str], str] = {}

    def rename(kind: str, name: str) -> None:
        if not name or name in kept or (kind, name) in renamed:
            return
        base = GENERATED_COUNTER.sub("", name)
        ending = OUTPUT_INDEX.search(base).group(0)
        stem = base[: len(base) - len(ending)]
        candidate, n = base, 0
        while candidate in taken:
            n += 1
            candidate = f"{stem}_{n}{ending}"
        taken.add(candidate)
        renamed[(kind, name)] = candidate

    weights = {t.name for t in graph.initializer}
    for node in ordered:
        for name in node.input:
            if name in weights:
                rename("tensor", name)
        rename("node", node.name)
        for name in node.output:
            rename("tensor", name)
    for name in sorted(weights, key=lambda w: fingerprints[w]):
        rename("tensor", name)  # weights no node reads
    return renamed
