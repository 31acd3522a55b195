"""`invoke distill`: train a smaller Keras student on a teacher's softened outputs (knowledge distillation).

loss = alpha * CE(labels, softmax(s)) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T)),
with s and t the student's and teacher's logits (Hinton et al., 2015). The logits are exact: a model
ending in softmax is used without that softmax while training (its weights unchanged), so no
log-of-probabilities approximation is needed. The teacher's logits on the training split are computed
once; the saved student keeps the output activation it was given.
"""

from pathlib import Path

import numpy as np

from ..console import Progress, quiet
from ..errors import BadInput
from . import common
from .common import CompressResult

DEFAULT_STUDENT = "width=0.5"
DEFAULT_EPOCHS = 60
LEARNING_RATE = 1e-2  # the student starts from fresh weights: the default model's own training rate


def distill(teacher: Path | None, student: str = DEFAULT_STUDENT, data: Path | None = None, temperature: float = 4.0,
            alpha: float = 0.1, epochs: int = DEFAULT_EPOCHS, out: Path | None = None,
            progress: Progress = quiet) -> CompressResult:
    """Distil the teacher (default: the embedded digits CNN) into `student`: width=X (the teacher's
    architecture with every hidden layer's channels times X, fresh weights) or a .keras architecture file."""
    width, student_path = _parse_student(student)
    if temperature <= 0:
        raise BadInput(f"--temperature must be positive, not {temperature}.")
    if not 0 <= alpha <= 1:
        raise BadInput(f"--alpha must be between 0 and 1, not {alpha}.")
    if epochs < 1:
        raise BadInput(f"--epochs must be at least 1, not {epochs}.")
    teacher_path, data_path = common.resolve_inputs(teacher, data, "distill --teacher")
    if data_path is None:
        raise BadInput(f"distilling {teacher_path.name} needs --data FILE.npz (x_train, y_train, x_test, y_test).")
    suffix = f"_student_w{round(width * 100)}" if width else f"_student_{student_path.name.split('.')[0]}"
    out_path = common.output_path(out, teacher_path, suffix)

    progress(f"loading {teacher_path}")
    import keras

    common.seeded()
    teacher_model = common.load_keras_copy(teacher_path)
    dataset = common.load_data(data_path, teacher_model)
    teacher_activation = common.output_activation(teacher_model, str(teacher_path))
    teacher_logits = common.logits_model(teacher_model).predict(dataset.x_train, batch_size=256, verbose=0)

    if width:
        from .channels import ChannelGraph

        graph = ChannelGraph(teacher_model, str(teacher_path))
        student_model = graph.rebuild({g: np.arange(max(1, int(width * group.width + 0.5)))
                                       for g, group in graph.groups().items()}, copy_weights=False)
    else:
        student_model = common.load_keras_copy(student_path)
        _check_compatible(student_model, teacher_model, student_path)
    common.output_activation(student_model, str(student_path or student))
    progress(f"training the student ({student_model.count_params():,} parameters, teacher "
             f"{teacher_model.count_params():,}) for {epochs} epochs at temperature {temperature}, alpha {alpha}")
    trainable = common.logits_model(student_model)
    targets = np.concatenate([dataset.y_train[:, None].astype(np.float32), teacher_logits], axis=1)
    common.fit(trainable, dataset.x_train, targets, _distillation_loss(keras, temperature, alpha), epochs,
               LEARNING_RATE)
    student_model.set_weights(trainable.get_weights())

    def report(staged: Path) -> dict:
        progress("measuring parameters, MACs and sizes")
        return {
            "command": "distill",
            "method": (f"knowledge distillation: student {student} trained on the teacher's logits at temperature "
                       f"{temperature} (KL x T^2) mixed with the labels' cross-entropy by alpha {alpha}"),
            "data": str(data_path),
            "settings": {"student": student, "temperature": temperature, "alpha": alpha, "epochs": epochs,
                         "learning_rate": LEARNING_RATE, "batch_size": common.BATCH_SIZE, "seed": common.SEED,
                         "teacher_logits": ("the teacher without its final softmax" if teacher_activation == "softmax"
                                            else "the teacher's outputs (already logits)")},
            "models": [
                common.model_entry(teacher_path, teacher_path, common.accuracy(teacher_model, dataset), role="teacher"),
                common.model_entry(staged, out_path, common.accuracy(student_model, dataset), role="student"),
            ],
            "bench": f"invoke bench --target host --model {out_path}",
        }

    progress(f"writing {out_path}")
    return CompressResult(out_path, common.write_outputs(student_model, out_path, report))


def _parse_student(spec: str) -> tuple[float | None, Path | None]:
    """width=X -> (X, None); a Keras file -> (None, path)."""
    key, sep, value = spec.partition("=")
    if sep and key.strip() == "width":
        try:
            width = float(value)
        except ValueError:
            width = 0.0
        if 0 < width <= 1:
            return width, None
    elif Path(spec).suffix in (".keras", ".h5") and Path(spec).is_file():
        return None, Path(spec)
    raise BadInput(f"--student '{spec}' is neither width=X with 0 < X <= 1 nor an existing .keras or .h5 file.")


def _check_compatible(student, teacher, path: Path) -> None:
    def shapes(model):
        return [tuple(t.shape[1:]) for t in model.inputs], [tuple(t.shape[1:]) for t in model.outputs]

    if shapes(student) != shapes(teacher):
        raise BadInput(f"{path}: the student's inputs and outputs {shapes(student)} differ from the teacher's "
                       f"{shapes(teacher)}.")


def _distillation_loss(keras, temperature: float, alpha: float):
    """Keras loss over y_true = [label, teacher logits...] and y_pred = student logits."""
    ops = keras.ops

    def loss(y_true, student_logits):
        labels = ops.cast(y_true[:, 0], "int32")
        teacher_logits = y_true[:, 1:]
        hard = keras.losses.sparse_categorical_crossentropy(labels, student_logits, from_logits=True)
        teacher_log_p = ops.log_softmax(teacher_logits / temperature, axis=-1)
        student_log_p = ops.log_softmax(student_logits / temperature, axis=-1)
        soft = ops.sum(ops.exp(teacher_log_p) * (teacher_log_p - student_log_p), axis=-1) * temperature ** 2
        return alpha * hard + (1 - alpha) * soft

    return loss
