"""Which channels of a Keras model can be removed together, and the narrower model without them.

Structured pruning and the width multiplier of `invoke distill` both rebuild a model with fewer channels
in its hidden layers; this module is that rebuild. Every tensor's last axis is traced back to the layer
that made its channels (a channel *group*): Conv1D/Conv2D filters and Dense units make groups, layers
such as BatchNormalization or pooling pass them through, and an element-wise merge (Add, ...) ties its
inputs' groups together, so a residual block keeps the same channels on both branches. Removing a
group's channels then means slicing its producers' output axis and every consumer's input axis,
through Flatten and Concatenate. The model's inputs and outputs are never narrowed.
"""

from dataclasses import dataclass, field
from math import prod

import numpy as np

from ..errors import BadInput

# Layer types by what they do to the channel (last) axis; anything else stops structured pruning.
PRODUCERS = ("Conv1D", "Conv2D", "Dense")
CHANNELWISE = ("DepthwiseConv1D", "DepthwiseConv2D", "BatchNormalization")  # one weight slice per channel
PASS_THROUGH = (
    "InputLayer", "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "Identity", "MaxPooling1D", "MaxPooling2D",
    "AveragePooling1D", "AveragePooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D",
    "UpSampling1D", "UpSampling2D",
)
MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
RESHAPES = ("Flatten", "Concatenate")
SUPPORTED = PRODUCERS + CHANNELWISE + PASS_THROUGH + MERGES + RESHAPES


@dataclass
class _Channels:
    """What each position of a tensor's last axis is: channel `index` of group `group`."""

    group: np.ndarray
    index: np.ndarray


@dataclass
class ChannelGroup:
    """Channels that are kept or removed together: the outputs of `producers`, merged where they are added."""

    width: int
    producers: list[str] = field(default_factory=list)
    prunable: bool = True


class ChannelGraph:
    """The channel groups of a Keras model and its rebuild with fewer channels.

    Raises BadInput naming the first layer (in the model's layer order) whose channels it cannot follow.
    """

    def __init__(self, model, source: str):
        self.model = model
        self._parent: list[int] = []
        self._groups: list[ChannelGroup] = []
        self._in: dict[str, _Channels] = {}  # layer name -> channels of its (first) input
        self._out: dict[str, _Channels] = {}  # layer name -> channels of its output
        for layer in model.layers:
            _check_supported(layer, source)
        tensors: dict[int, _Channels] = {}
        for tensor in model.inputs:
            tensors[id(tensor)] = self._new_group(tensor.shape[-1], producer=None, prunable=False)
        for layer, inputs, outputs in _operations(model):
            _check_supported(layer, source, rank=len(outputs[0].shape))
            if layer.name in self._out:
                raise BadInput(f"{source}: layer '{layer.name}' is called more than once; structured pruning "
                               "needs each layer used once.")
            channels = [tensors[id(t)] for t in inputs]
            result = self._propagate(layer, channels, inputs, outputs[0])
            self._in[layer.name], self._out[layer.name] = channels[0], result
            tensors[id(outputs[0])] = result
        for tensor in model.outputs:  # never narrow what the model returns
            for group in np.unique(tensors[id(tensor)].group):
                self._root_group(group).prunable = False

    # -- the groups -----------------------------------------------------------------------------

    def groups(self) -> dict[int, ChannelGroup]:
        """Every group that can be narrowed, by id (the model's inputs and outputs are not among them)."""
        roots = sorted({self._find(g) for g in range(len(self._groups))})
        return {g: self._groups[g] for g in roots if self._groups[g].prunable and self._groups[g].producers}

    def importance(self, group: int) -> np.ndarray:
        """Per channel, the L1 norm of its filters summed over the group's producers."""
        return sum(np.abs(self.model.get_layer(name).get_weights()[0]).reshape(-1, self._groups[group].width)
                   .sum(axis=0) for name in self._groups[group].producers)

    # -- the rebuild ----------------------------------------------------------------------------

    def rebuild(self, keep: dict[int, np.ndarray], copy_weights: bool):
        """The model with only the channels `keep` lists (group id -> sorted channel indices) in those groups.

        With copy_weights the surviving weights are copied (structured pruning); without, the narrower
        model has fresh initial weights (a student of the same architecture).
        """
        import keras

        masks = {g: np.ones(group.width, bool) for g, group in enumerate(self._groups)}
        for group, indices in keep.items():
            masks[group] = np.zeros(self._groups[group].width, bool)
            masks[group][indices] = True

        def kept(channels: _Channels) -> np.ndarray:
            roots = np.array([self._find(g) for g in channels.group], dtype=int)
            return np.flatnonzero([masks[r][i] for r, i in zip(roots, channels.index)])

        producers = self._producer_names()

        def clone(layer):
            config = layer.get_config()
            if layer.name in producers:
                config["filters" if "filters" in config else "units"] = len(kept(self._out[layer.name]))
            return layer.__class__.from_config(config)

        narrow = keras.models.clone_model(self.model, clone_function=clone)
        if copy_weights:
            for layer in self.model.layers:
                if layer.weights and layer.name in self._out:
                    rows, columns = kept(self._in[layer.name]), kept(self._out[layer.name])
                    narrow.get_layer(layer.name).set_weights(
                        [_slice(w, rows, columns, layer.name in producers) for w in layer.get_weights()])
        return narrow

    # -- tracing --------------------------------------------------------------------------------

    def _producer_names(self) -> set[str]:
        return {name for group in self._groups for name in group.producers}

    def _new_group(self, width: int, producer: str | None, prunable: bool = True) -> _Channels:
        group = len(self._groups)
        self._groups.append(ChannelGroup(width, [producer] if producer else [], prunable))
        self._parent.append(group)
        return _Channels(np.full(width, group), np.arange(width))

    def _find(self, group: int) -> int:
        while self._parent[group] != group:
            self._parent[group] = self._parent[self._parent[group]]
            group = self._parent[group]
        return group

    def _root_group(self, group: int) -> ChannelGroup:
        return self._groups[self._find(group)]

    def _union(self, a: int, b: int) -> None:
        a, b = self._find(a), self._find(b)
        if a != b:
            self._parent[b] = a
            merged, other = self._groups[a], self._groups[b]
            merged.producers += other.producers
            merged.prunable = merged.prunable and other.prunable

    def _propagate(self, layer, channels: list[_Channels], inputs, output) -> _Channels:
        kind = type(layer).__name__
        if kind in PRODUCERS:
            return self._new_group(output.shape[-1], layer.name)
        if kind == "Flatten":  # channels-last: the channel axis varies fastest
            positions = prod(inputs[0].shape[1:-1])
            return _Channels(np.tile(channels[0].group, positions), np.tile(channels[0].index, positions))
        if kind == "Concatenate":
            return _Channels(np.concatenate([c.group for c in channels]), np.concatenate([c.index for c in channels]))
        if kind in MERGES:
            whole = [len(np.unique(c.group)) == 1 and np.array_equal(c.index, np.arange(len(c.index)))
                     and self._root_group(c.group[0]).width == len(c.index) for c in channels]
            if all(whole):
                for c in channels[1:]:
                    self._union(channels[0].group[0], c.group[0])
            else:  # inputs made of several groups: keeping them aligned is not worth it; leave them whole
                for group in np.unique(np.concatenate([c.group for c in channels])):
                    self._root_group(group).prunable = False
        return channels[0]


def _operations(model):
    """(layer, input tensors, output tensors) for every call in the model's graph, inputs before users."""
    import keras

    # keras.Function maps the graph of Sequential and functional models alike; its nodes by depth
    # (deepest = nearest the inputs first) are the only record of which tensors feed which call.
    graph = keras.Function(model.inputs, model.outputs)
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            if not node.is_input:
                yield node.operation, node.input_tensors, node.outputs


def _check_supported(layer, source: str, rank: int | None = None) -> None:
    """BadInput unless ChannelGraph can follow the layer's channels (`rank`: its output's, once known)."""
    import keras

    kind = type(layer).__name__
    config = layer.get_config()
    problem = None
    if kind not in SUPPORTED or not isinstance(layer, keras.layers.Layer):  # keras.ops calls are not layers
        problem = f"is a {kind}"
    elif config.get("data_format", "channels_last") != "channels_last":
        problem = "is channels_first"
    elif config.get("groups", 1) != 1:
        problem = "is a grouped convolution"
    elif config.get("depth_multiplier", 1) != 1:
        problem = "has depth_multiplier != 1"
    elif kind in ("BatchNormalization", "Concatenate") and rank is not None and config["axis"] not in (-1, rank - 1):
        problem = "works on a non-channel axis"
    if problem:
        raise BadInput(f"{source}: layer '{layer.name}' {problem}, which structured pruning does not support "
                       f"(supported: {', '.join(kind for kind in SUPPORTED if kind != 'InputLayer')}).")


def _slice(weight: np.ndarray, rows: np.ndarray, columns: np.ndarray, producer: bool) -> np.ndarray:
    """A layer weight restricted to the kept channels: kernels [..., in, out], per-channel vectors [channels]."""
    if weight.ndim == 1:
        return weight[columns]
    weight = np.take(weight, rows, axis=-2)
    return np.take(weight, columns, axis=-1) if producer else weight
