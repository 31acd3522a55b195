"""The static memory plan: where every tensor lives, and one arena for the model's working memory.

Tensor lifetimes come from the graph (from the layer that writes a tensor to the last that reads
it). A RESHAPE's output is its input under another shape, so the two share one storage; an
elementwise layer writes over an input that dies there (in place). The model's inputs and outputs
stay in the caller's buffers; constant tensors are weights in flash. Everything else, and each
layer's scratch buffer, is placed in the arena greedily, largest first, at the lowest offset free
for its whole lifetime (TFLite Micro's GreedyMemoryPlanner does the same).
"""

from dataclasses import dataclass, field

from .graph import Graph
from .lower import Layer

ALIGNMENT = 8  # bytes; LDRD and the int16 columns want at least 4


@dataclass(frozen=True)
class Storage:
    base: str  # "input" | "output" | "arena" | "constant"
    index: int = 0  # input or output number
    offset: int = 0  # bytes into the arena


@dataclass
class Buffer:
    """One arena allocation: a group of tensors sharing storage, or a layer's scratch."""

    label: str
    size: int
    first: int  # layer position of its first write (-1: before the first layer)
    last: int  # layer position of its last read
    offset: int = -1


@dataclass
class MemoryPlan:
    storage: dict[int, Storage]  # tensor index -> where it lives
    scratch: dict[int, int]  # layer position -> arena offset of its scratch buffer
    arena_bytes: int
    buffers: list[Buffer] = field(default_factory=list)  # the arena's timeline, for the report


def _aligned(size: int) -> int:
    return -(-size // ALIGNMENT) * ALIGNMENT


class _Groups:
    """Union-find over tensor indices: tensors that share one storage."""

    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, t: int) -> int:
        self.parent.setdefault(t, t)
        while self.parent[t] != t:
            self.parent[t] = self.parent[self.parent[t]]
            t = self.parent[t]
        return t

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(b)] = self.find(a)


def plan_memory(graph: Graph, layers: list[Layer]) -> tuple[MemoryPlan, list[int]]:
    """The plan, and the positions of RESHAPE layers that must copy (their input and output are both
    caller buffers: a model input reshaped straight to an output)."""
    io_kind = {t: ("input", i) for i, t in enumerate(graph.inputs)}
    io_kind.update({t: ("output", j) for j, t in enumerate(graph.outputs)})
    groups = _Groups()
    kinds: dict[int, tuple[str, int]] = {}  # group root -> caller buffer it lives in

    def kind_of(t: int):
        return kinds.get(groups.find(t))

    for t, kind in io_kind.items():
        kinds[groups.find(t)] = kind
    copies = []
    for position, layer in enumerate(layers):
        if layer.kernel is None:  # an alias, unless it would join two caller buffers
            source, result = layer.inputs[0], layer.outputs[0]
            if kind_of(source) and kind_of(result):
                copies.append(position)
                continue
            kind = kind_of(source) or kind_of(result)
            groups.union(source, result)
            if kind:
                kinds[groups.find(source)] = kind

    # Lifetimes per tensor, then per group.
    first_write: dict[int, int] = {t: -1 for t in graph.inputs}
    last_read: dict[int, int] = {t: len(layers) for t in graph.outputs}
    for position, layer in enumerate(layers):
        for t in layer.outputs:
            first_write.setdefault(t, position)
        for t in layer.inputs:
            last_read[t] = max(last_read.get(t, -1), position)

    def is_constant(t: int) -> bool:
        return graph.tensors[t].data is not None

    # In place: an elementwise layer's output takes an input's storage when the input dies there.
    for position, layer in enumerate(layers):
        if not layer.in_place or kind_of(layer.outputs[0]):
            continue
        output = graph.tensors[layer.outputs[0]]
        for t in layer.inputs:
            root = groups.find(t)
            members = [m for m in groups.parent if groups.find(m) == root]
            dies_here = max(last_read.get(m, -1) for m in members) == position
            if not is_constant(t) and not kind_of(t) and dies_here and graph.tensors[t].nbytes == output.nbytes:
                groups.union(t, layer.outputs[0])
                break

    buffers: dict[int, Buffer] = {}
    for t in set(first_write) | set(last_read):
        if is_constant(t) or kind_of(t):
            continue
        root = groups.find(t)
        buffer = buffers.setdefault(root, Buffer(graph.tensors[root].name, 0, len(layers), -1))
        buffer.size = max(buffer.size, graph.tensors[t].nbytes)
        buffer.first = min(buffer.first, first_write.get(t, -1))
        buffer.last = max(buffer.last, last_read.get(t, first_write.get(t, -1)))
    scratch_buffers = {position: Buffer(f"scratch of layer {layer.index} ({layer.op})", layer.scratch_bytes,
                                        position, position)
                       for position, layer in enumerate(layers) if layer.scratch_bytes}
    placed: list[Buffer] = []
    for buffer in sorted([*buffers.values(), *scratch_buffers.values()], key=lambda b: (-b.size, b.first, b.label)):
        offset = 0
        for other in sorted((o for o in placed if o.first <= buffer.last and buffer.first <= o.last),
                            key=lambda o: o.offset):
            if offset + _aligned(buffer.size) <= other.offset:
                break
            offset = max(offset, other.offset + _aligned(other.size))
        buffer.offset = offset
        placed.append(buffer)

    storage: dict[int, Storage] = {}
    for t in range(len(graph.tensors)):
        root = groups.find(t)
        if is_constant(t):
            storage[t] = Storage("constant")
        elif kind_of(t):
            base, index = kind_of(t)
            storage[t] = Storage(base, index)
        elif root in buffers:
            storage[t] = Storage("arena", offset=buffers[root].offset)
    arena = max((_aligned(b.offset + b.size) for b in placed), default=0)
    plan = MemoryPlan(storage, {p: b.offset for p, b in scratch_buffers.items()}, arena,
                      sorted(placed, key=lambda b: (b.first, b.offset)))
    return plan, copies
