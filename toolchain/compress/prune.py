"""`invoke prune`: a smaller Keras model by removing channels (structured) or zeroing weights (unstructured).

Structured pruning keeps, in every channel group (see channels.py), the (1 - sparsity) channels whose
filters have the largest L1 norm and rebuilds a narrower model from the surviving weights: fewer
parameters and MACs on any backend. Unstructured pruning zeroes the `sparsity` fraction of the
smallest-magnitude weights of every kernel, layer by layer; the model keeps its shape, so only a
compressed file gets smaller (or a sparse kernel faster). Both then fine-tune on the dataset's training
split; unstructured pruning re-applies its masks after every batch.
"""

from pathlib import Path

import numpy as np

from ..console import Progress, quiet
from ..errors import BadInput
from . import common
from .common import CompressResult

DEFAULT_EPOCHS = 10
FINE_TUNE_LEARNING_RATE = 1e-3


def prune(model: Path | None, sparsity: float, structured: bool, data: Path | None = None,
          epochs: int = DEFAULT_EPOCHS, out: Path | None = None, progress: Progress = quiet) -> CompressResult:
    """Prune the Keras model (default: the embedded digits CNN) and fine-tune it for `epochs` on `data`."""
    if not 0 < sparsity < 1:
        raise BadInput(f"--sparsity must be between 0 and 1 (exclusive), not {sparsity}.")
    if epochs < 0:
        raise BadInput(f"--epochs must be 0 or more, not {epochs}.")
    model_path, data_path = common.resolve_inputs(model, data, "prune")
    if epochs and data_path is None:
        raise BadInput(f"pruning {model_path.name} needs --data FILE.npz (x_train, y_train, x_test, y_test) to "
                       "fine-tune on; pass --epochs 0 to prune without fine-tuning.")
    percent = round(sparsity * 100)
    out_path = common.output_path(out, model_path, f"_pruned{percent}" if structured else f"_sparse{percent}")

    progress(f"loading {model_path}")
    common.seeded()
    original = common.load_keras_copy(model_path)
    dataset = common.load_data(data_path, original) if data_path else None
    accuracy_before = common.accuracy(original, dataset)

    if structured:
        progress(f"removing {percent}% of the channels of every hidden layer (smallest L1 norm first)")
        pruned, details = _remove_channels(original, sparsity, str(model_path))
        callbacks = []
    else:
        progress(f"zeroing the {percent}% smallest-magnitude weights of every kernel")
        pruned = original
        masks = _magnitude_masks(pruned, sparsity)
        _apply(masks)
        callbacks = [_keep_masks_callback(masks)]
    accuracy_pruned = common.accuracy(pruned, dataset)
    if epochs:
        progress(f"fine-tuning for {epochs} epochs on {data_path.name}")
        import keras

        from_logits = common.output_activation(original, str(model_path)) == "linear"
        common.fit(pruned, dataset.x_train, dataset.y_train,
                   keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits), epochs,
                   FINE_TUNE_LEARNING_RATE, callbacks)
    accuracy_after = common.accuracy(pruned, dataset)
    if not structured:
        details = {"sparsity": _sparsity(masks, sparsity)}

    def report(staged: Path) -> dict:
        progress("measuring parameters, MACs and sizes")
        return {
            "command": "prune",
            "method": (f"structured pruning: {percent}% of the channels of every hidden Conv/Dense layer removed "
                       "(smallest filter L1 norm first)" if structured else
                       f"unstructured pruning: the {percent}% smallest-magnitude weights of every kernel zeroed "
                       "(per layer), masks kept through fine-tuning"),
            "data": str(data_path) if data_path else None,
            "settings": {"sparsity": sparsity, "structured": structured, "epochs": epochs,
                         "learning_rate": FINE_TUNE_LEARNING_RATE, "batch_size": common.BATCH_SIZE,
                         "seed": common.SEED},
            "models": [
                common.model_entry(model_path, model_path, accuracy_before, role="original"),
                common.model_entry(staged, out_path, accuracy_after, role="pruned",
                                   test_accuracy_before_fine_tuning=accuracy_pruned),
            ],
            **details,
            "bench": f"invoke bench --target host --model {out_path}",
        }

    progress(f"writing {out_path}")
    return CompressResult(out_path, common.write_outputs(pruned, out_path, report))


def _remove_channels(model, sparsity: float, source: str):
    """The narrower model with the surviving weights, and each producer layer's widths before and after."""
    from .channels import ChannelGraph

    graph = ChannelGraph(model, source)
    groups = graph.groups()
    if not groups:
        raise BadInput(f"{source}: has no hidden Conv1D, Conv2D or Dense layer whose channels could be removed.")
    keep = {}
    for group_id, group in groups.items():
        count = max(1, int((1 - sparsity) * group.width + 0.5))
        keep[group_id] = np.sort(np.argsort(-graph.importance(group_id), kind="stable")[:count])
    group_of = {name: group_id for group_id, group in groups.items() for name in group.producers}
    channels = [{"layer": layer.name, "before": groups[group_of[layer.name]].width,
                 "after": len(keep[group_of[layer.name]])} for layer in model.layers if layer.name in group_of]
    return graph.rebuild(keep, copy_weights=True), {"channels": channels}


def _magnitude_masks(model, sparsity: float) -> list[tuple[object, np.ndarray]]:
    """(variable, 0/1 mask) for every kernel (weights of rank >= 2; not biases or normalization parameters):
    exactly round(sparsity * size) of its smallest-magnitude entries are masked."""
    masks = []
    for variable in model.trainable_weights:
        if len(variable.shape) < 2:
            continue
        values = np.abs(np.asarray(variable.numpy())).ravel()
        mask = np.ones(values.size, np.float32)
        mask[np.argsort(values, kind="stable")[:round(sparsity * values.size)]] = 0
        masks.append((variable, mask.reshape(variable.shape)))
    return masks


def _apply(masks) -> None:
    for variable, mask in masks:
        variable.assign(variable.numpy() * mask)


def _keep_masks_callback(masks):
    """A Keras callback that zeroes the pruned weights again after every training batch (the optimizer
    moves them, Adam's momentum included)."""
    import keras

    class KeepMasks(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            _apply(masks)

    return KeepMasks()


def _sparsity(masks, requested: float) -> dict:
    """Zeros actually in the kernels now (checked on the weights, not taken from the masks)."""
    layers = []
    for variable, _ in masks:
        values = np.asarray(variable.numpy())
        layers.append({"weight": variable.path, "size": int(values.size), "zeros": int(np.sum(values == 0))})
    size, zeros = sum(l["size"] for l in layers), sum(l["zeros"] for l in layers)
    return {"requested": requested, "measured": round(zeros / size, 4), "weights": size, "zeros": zeros,
            "layers": layers}
