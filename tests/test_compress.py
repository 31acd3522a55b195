"""invoke prune / invoke distill: smaller Keras models that are still ordinary models for `invoke build`."""

import json
from pathlib import Path

import numpy as np
import pytest

from toolchain.compress.distill import distill
from toolchain.compress.prune import prune
from toolchain.errors import BadInput

from conftest import invoke


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """scikit-learn's bundled digits as 8x8x1 images in [0, 1], split like the default model's dataset."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    y = data.target.astype(np.int32)
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    np.savez(path, x_train=x[:1300], y_train=y[:1300], x_test=x[1300:], y_test=y[1300:])
    return path


@pytest.fixture(scope="module")
def digits_cnn(digits, tmp_path_factory) -> Path:
    """Conv8-Conv16-MaxPool-Dense10, trained briefly: the default model's architecture."""
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        # Named: Keras numbers unnamed layers per process, so the names would depend on the tests run before.
        keras.layers.Conv2D(8, 3, activation="relu", padding="same", name="conv2d"),
        keras.layers.Conv2D(16, 3, activation="relu", name="conv2d_1"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    data = np.load(digits)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(data["x_train"], data["y_train"], epochs=4, verbose=0)
    path = tmp_path_factory.mktemp("teacher") / "digits_cnn.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def channels_pruned(digits_cnn, tmp_path_factory):
    """Half the channels removed, no fine-tuning: the kept weights are exactly the original ones."""
    return prune(digits_cnn, 0.5, structured=True, epochs=0, out=tmp_path_factory.mktemp("pruned") / "half.keras")


def _conv_macs(out_hw: int, out_c: int, kernel: int, in_c: int) -> int:
    return out_hw * out_hw * out_c * kernel * kernel * in_c


def test_structured_pruning_keeps_the_channels_with_the_largest_l1_norm(digits_cnn, channels_pruned):
    import keras

    original, pruned = keras.models.load_model(digits_cnn), keras.models.load_model(channels_pruned.model)
    conv1, conv2, dense = (original.layers[i].get_weights() for i in (0, 1, 4))
    keep1 = np.sort(np.argsort(-np.abs(conv1[0]).sum(axis=(0, 1, 2)))[:4])
    keep2 = np.sort(np.argsort(-np.abs(conv2[0]).sum(axis=(0, 1, 2)))[:8])
    got1, got2, got_dense = (pruned.layers[i].get_weights() for i in (0, 1, 4))
    np.testing.assert_array_equal(got1[0], conv1[0][..., keep1])
    np.testing.assert_array_equal(got1[1], conv1[1][keep1])
    np.testing.assert_array_equal(got2[0], conv2[0][:, :, keep1][..., keep2])
    # Dense after Flatten: the rows of the kept channels at every one of the 3x3 positions.
    np.testing.assert_array_equal(got_dense[0], dense[0].reshape(3, 3, 16, 10)[:, :, keep2].reshape(72, 10))
    np.testing.assert_array_equal(got_dense[1], dense[1])

    report = channels_pruned.report
    assert report["channels"] == [{"layer": "conv2d", "before": 8, "after": 4},
                                  {"layer": "conv2d_1", "before": 16, "after": 8}]
    before, after = report["models"]
    assert before["macs"] == _conv_macs(8, 8, 3, 1) + _conv_macs(6, 16, 3, 8) + 144 * 10
    assert after["macs"] == _conv_macs(8, 4, 3, 1) + _conv_macs(6, 8, 3, 4) + 72 * 10
    assert after["params"] == pruned.count_params() < before["params"]
    assert after["tflite_bytes"] < before["tflite_bytes"]
    assert after["test_accuracy"] is None  # no --data: no accuracy figures
    saved = json.loads(channels_pruned.model.with_suffix(".json").read_text())
    assert saved == report
    assert "| conv2d_1 | 16 | 8 |" in channels_pruned.model.with_suffix(".md").read_text()


def test_structured_pruning_fine_tunes_to_a_sensible_model(digits_cnn, digits, tmp_path):
    result = prune(digits_cnn, 0.5, structured=True, data=digits, epochs=3, out=tmp_path / "tuned.keras")
    before, after = result.report["models"]
    assert before["test_accuracy"] > 0.85
    assert after["test_accuracy"] > 0.85
    assert after["test_accuracy"] >= after["test_accuracy_before_fine_tuning"]


def _residual_model_with_dead_channels():
    """A functional model through BatchNorm, DepthwiseConv2D, Add, Concatenate, Flatten and a hidden Dense, where
    half of every prunable group's channels are dead (all-zero filters and zero offsets after them).
    Removing exactly those must leave the outputs unchanged."""
    import keras

    keras.utils.set_random_seed(11)
    layers = keras.layers
    inputs = keras.Input((8, 8, 1))
    a = layers.Conv2D(8, 3, padding="same", name="conv_a")(inputs)
    a = layers.ReLU()(layers.BatchNormalization(name="bn_a")(a))
    b = layers.BatchNormalization(name="bn_b")(layers.DepthwiseConv2D(3, padding="same", name="depthwise")(a))
    shortcut = layers.Conv2D(8, 1, name="shortcut")(inputs)
    x = layers.ReLU()(layers.Add()([b, shortcut]))
    c = layers.Conv2D(6, 3, padding="same", name="conv_c")(x)
    x = layers.Flatten()(layers.MaxPooling2D()(layers.Concatenate()([x, c])))
    x = layers.Dropout(0.1)(layers.Dense(12, activation="relu", name="hidden")(x))
    model = keras.Model(inputs, layers.Dense(3, activation="softmax", name="out")(x))
    rng = np.random.default_rng(0)
    dead = {8: [1, 2, 5, 6], 6: [0, 3, 4], 12: [0, 2, 4, 6, 8, 10]}  # by group width
    for layer in model.layers:
        weights = [rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()]
        if layer.name in ("conv_a", "shortcut", "conv_c", "hidden"):  # producers: dead filters
            kernel, bias = weights
            kernel[..., dead[kernel.shape[-1]]] = 0
            bias[dead[kernel.shape[-1]]] = 0
        elif layer.name in ("bn_a", "bn_b"):  # gamma, beta, mean, variance: a dead channel stays 0
            weights[3] = np.abs(weights[3]) + 0.5
            weights[1][dead[8]] = weights[2][dead[8]] = 0
        elif layer.name == "depthwise":
            weights[1][dead[8]] = 0
        if weights:
            layer.set_weights(weights)
    return model, dead


def test_structured_pruning_follows_channels_through_a_residual_graph(tmp_path):
    model, dead = _residual_model_with_dead_channels()
    model.save(tmp_path / "residual.keras")
    result = prune(tmp_path / "residual.keras", 0.5, structured=True, epochs=0, out=tmp_path / "narrow.keras")
    assert {row["layer"]: (row["before"], row["after"]) for row in result.report["channels"]} == {
        "conv_a": (8, 4), "shortcut": (8, 4), "conv_c": (6, 3), "hidden": (12, 6)}
    import keras

    narrow = keras.models.load_model(result.model)
    x = np.random.default_rng(1).uniform(size=(16, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(narrow.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert narrow.get_layer("depthwise").get_weights()[0].shape == (3, 3, 4, 1)
    assert narrow.get_layer("hidden").get_weights()[0].shape == (4 * 4 * 7, 6)


def test_unstructured_pruning_zeroes_the_smallest_weights_and_keeps_them_zero(digits_cnn, digits, tmp_path):
    import keras

    result = prune(digits_cnn, 0.8, structured=False, data=digits, epochs=2, out=tmp_path / "sparse.keras")
    original, pruned = keras.models.load_model(digits_cnn), keras.models.load_model(result.model)
    for before, after in zip(original.trainable_weights, pruned.trainable_weights):
        values, tuned = np.abs(before.numpy()).ravel(), after.numpy().ravel()
        if len(before.shape) < 2:  # biases are not pruned
            continue
        smallest = np.argsort(values, kind="stable")[:round(0.8 * values.size)]
        assert np.all(tuned[smallest] == 0)  # still zero after two epochs of fine-tuning
        assert np.count_nonzero(tuned) == values.size - smallest.size
    sparsity = result.report["sparsity"]
    assert sparsity["measured"] == pytest.approx(0.8, abs=1e-3) and sparsity["zeros"] == round(0.8 * 72) + \
        round(0.8 * 1152) + round(0.8 * 1440)
    before, after = result.report["models"]
    assert after["macs"] == before["macs"] and after["tflite_gzip_bytes"] < 0.6 * before["tflite_gzip_bytes"]
    assert after["test_accuracy"] > 0.6


def test_distillation_trains_a_smaller_student_deterministically(digits_cnn, digits, tmp_path):
    import keras

    runs = [distill(digits_cnn, "width=0.5", data=digits, epochs=3, out=tmp_path / f"student{i}.keras")
            for i in range(2)]
    teacher, student = runs[0].report["models"]
    assert student["params"] < teacher["params"] and student["macs"] < teacher["macs"]
    assert student["test_accuracy"] > 0.8
    assert runs[0].report["settings"]["teacher_logits"] == "the teacher without its final softmax"
    first, second = (keras.models.load_model(run.model) for run in runs)
    assert first.layers[0].get_config()["filters"] == 4
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_distillation_into_a_student_architecture_file(digits_cnn, digits, tmp_path):
    import keras

    keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]).save(
        tmp_path / "linear.keras")
    result = distill(digits_cnn, str(tmp_path / "linear.keras"), data=digits, epochs=3, out=tmp_path / "s.keras")
    assert result.report["models"][1]["params"] == 650
    assert result.report["models"][1]["test_accuracy"] > 0.8  # a linear classifier learns digits from the teacher


def test_results_are_models_that_build_for_the_host(channels_pruned, digits, tmp_path):
    from toolchain.pipeline.build import BuildOptions, build
    from toolchain.model import load_model

    assert load_model(channels_pruned.model).macs == channels_pruned.report["models"][1]["macs"]
    # LiteRT: the quickest host backend to build; the model is what is being checked, not the backend.
    built = build(BuildOptions(target="host", model=channels_pruned.model, backend="litert", data=digits,
                               out=tmp_path / "out"))
    assert built.report["validation"]["passed"] is True


@pytest.fixture(scope="module")
def unsupported(tmp_path_factory) -> Path:
    import keras

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3), keras.layers.Reshape((36, 4)),
                              keras.layers.LayerNormalization(name="norm"), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    path = tmp_path_factory.mktemp("unsupported") / "reshaping.keras"
    model.save(path)
    return path


@pytest.mark.parametrize("call,message", [
    (lambda m, d: prune(m, 0.0, True, d), "--sparsity must be between 0 and 1 (exclusive), not 0.0"),
    (lambda m, d: prune(m, 1.0, False, d), "--sparsity must be between 0 and 1 (exclusive), not 1.0"),
    (lambda m, d: prune(m, 0.5, True, d.with_name("missing.npz")), "missing.npz: dataset file not found"),
    (lambda m, d: prune(m, 0.5, True, None), "needs --data FILE.npz"),
    (lambda m, d: prune(m.with_suffix(".tflite"), 0.5, True, d, epochs=0), "does not exist"),
    (lambda m, d: distill(m, "width=2", d), "--student 'width=2' is neither width=X with 0 < X <= 1"),
    (lambda m, d: distill(m, "width=0.5", d, alpha=1.5), "--alpha must be between 0 and 1"),
])
def test_bad_options_name_the_problem(digits_cnn, digits, tmp_path, call, message):
    with pytest.raises(BadInput) as err:
        call(digits_cnn, digits)
    assert message in str(err.value)


def test_dataset_without_the_training_split_is_refused(digits_cnn, tmp_path):
    np.savez(tmp_path / "test_only.npz", x=np.zeros((4, 8, 8, 1)), y=np.zeros(4))
    with pytest.raises(BadInput, match="needs the arrays x_train, y_train, x_test, y_test and has no x_train"):
        prune(digits_cnn, 0.5, True, tmp_path / "test_only.npz", out=tmp_path / "p.keras")
    assert not list(tmp_path.glob("p*")) and not list(tmp_path.glob(".p*"))


def test_unsupported_layer_is_named(unsupported, tmp_path):
    with pytest.raises(BadInput, match=f"^{unsupported}: layer 'reshape' is a Reshape, which structured pruning "
                                       r"does not support \(supported: .*Conv2D, Dense, .*BatchNormalization"):
        prune(unsupported, 0.5, True, epochs=0, out=tmp_path / "p.keras")
    assert not list(tmp_path.iterdir())


@pytest.mark.fast
def test_cli_sparsity_out_of_range_exits_2_before_loading_anything():
    result = invoke("prune", "--sparsity", "1.5")
    assert result.returncode == 2
    assert result.stderr == "error: --sparsity must be between 0 and 1 (exclusive), not 1.5.\n"
