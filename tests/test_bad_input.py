"""The bad-input corpus: every case is generated here (no committed binaries) and run through the real
command line (invoke's Program with tasks.py, in this process). Each must exit with its documented code,
print one sentence on stderr and no traceback, leave no partial output, and touch no file of the user's.

The fast cases fail before any heavy import; the ones that need a real build share one (test_trust.py).
"""

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.fast

TASKS_DIR = Path(__file__).resolve().parent.parent


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """`invoke ARGS` as a user types it, in this process: (exit code, stdout, stderr)."""
    import importlib.util

    from invoke import Collection, Program

    spec = importlib.util.spec_from_file_location("edgeyard_tasks", TASKS_DIR / "tasks.py")
    tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tasks)
    code = 0
    try:
        Program(namespace=Collection.from_module(tasks), name="invoke").run(["invoke", *args])
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under folder (hidden ones included): its kind, and a file's sha256 and mtime."""
    state = {}
    for path in sorted(folder.rglob("*")):
        relative = str(path.relative_to(folder))
        if path.is_file():
            state[relative] = ("file", hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        else:
            state[relative] = ("dir",)
    return state


def assert_clean_refusal(code: int, err: str, expected: int, before: dict, after: dict) -> None:
    assert code == expected, err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # one sentence
    assert lines[0].startswith("error: ") and lines[0].rstrip().endswith((".", ")")), lines[0]
    assert after == before, f"files changed: {set(after) ^ set(before)}"  # nothing touched, nothing half-written


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _user_files(root: Path) -> dict:
    """A user's working folder: a project folder, a file, a fake model, datasets good and bad."""
    (root / "precious").mkdir()
    (root / "precious" / "thesis.tex").write_text("years of work\n")
    (root / "notes.txt").write_text("a file\n")
    (root / "model.onnx").write_bytes(b"not really onnx")
    (root / "only-hidden").mkdir()
    (root / "only-hidden" / ".keep").write_text("")
    x = np.zeros((4, 8, 8, 1), np.float32)
    _npz(root / "objects.npz", x=np.array([object(), 1], dtype=object), y=np.arange(2))
    _npz(root / "strings.npz", x=np.array(["a", "b"]), y=np.arange(2))
    _npz(root / "empty.npz", x=np.zeros((0, 8, 8, 1), np.float32), y=np.zeros(0))
    _npz(root / "short_labels.npz", x=x, y=np.arange(2))
    _npz(root / "string_labels.npz", x=x, y=np.array(["cat", "dog", "cat", "dog"]))
    _npz(root / "scalar.npz", x=np.float32(3.0))
    _npz(root / "short_train.npz", x_train=x, y_train=np.arange(3), x_test=x, y_test=np.arange(4))
    (root / "not_a_zip.npz").write_bytes(b"PK\x03\x04 truncated")
    (root / "text.npz").write_text("x,y\n1,2\n")
    return {"model": str(root / "model.onnx")}


M = "model.onnx"  # every --data case gives a model, so that no default model is trained to get there
CASES = [
    # invoke's own parser (README: bad input is exit 2)
    (["build", "--samples", "abc"], 2),
    (["build", "--samples", "1e3"], 2),
    (["build", "--threads", "two"], 2),
    (["build", "--bogus"], 2),
    (["build", "--target"], 2),
    (["bench", "--runs", "many"], 2),
    # counts out of range
    (["build", "--target", "host", "--samples", "0"], 2),
    (["build", "--target", "host", "--samples", "-5"], 2),
    (["build", "--target", "host", "--samples", "100000000000000000000"], 2),
    (["build", "--target", "host", "--threads", "0"], 2),
    (["build", "--target", "host", "--threads", "-3"], 2),
    (["build", "--target", "host", "--threads", "100000"], 2),
    (["bench", "--target", "host", "--runs", "0"], 2),
    (["bench", "--target", "host", "--warmup", "-1"], 2),
    # --input-shape
    (["build", "--target", "host", "--input-shape", "x"], 2),
    (["build", "--target", "zcu104", "--layer-precision", "dense"], 2),
    (["build", "--target", "zcu104", "--layer-precision", "=ap_fixed<8,3>"], 2),
    (["build", "--target", "host", "--input-shape", "x:"], 2),
    (["build", "--target", "host", "--input-shape", ":1x2"], 2),
    (["build", "--target", "host", "--input-shape", "x:1xb"], 2),
    (["build", "--target", "host", "--input-shape", "x:0x4"], 2),
    (["build", "--target", "host", "--input-shape", "x:-1x4"], 2),
    (["build", "--target", "host", "--input-shape", "x:99999x99999x99999"], 2),
    (["build", "--target", "host", "--input-shape", "x:1x" + "9" * 40], 2),
    (["inspect", M, "--input-shape", "x:1x2x"], 2),
    # targets, backends, quantization
    (["build", "--target", "nope"], 2),
    (["build", "--target", "../targets/host"], 2),
    (["build", "--target", "host", "--backend", "nope"], 2),
    (["build", "--target", "nucleo-l4r5zi", "--backend", "litert"], 2),
    (["build", "--target", "host", "--quantize", "int3"], 2),
    (["build", "--target", "host", "--quantize-io", "float"], 2),
    # --set
    (["build", "--target", "host", "--set", "noequals"], 2),
    (["build", "--target", "host", "--set", "=3"], 2),
    (["build", "--target", "host", "--set", "nonsense=3"], 2),
    (["build", "--target", "host", "--set", "tvm_target.kind=bogus"], 2),
    (["build", "--target", "host", "--set", "memory.ram_bytes=-1"], 2),
    (["build", "--target", "host", "--set", "memory=3"], 2),
    (["build", "--target", "host", "--set", "backends=[1]"], 2),
    (["build", "--target", "host", "--set", "clock_mhz=fast"], 2),
    (["build", "--target", "host", "--set", "tvm_runtime=maybe"], 2),
    (["build", "--target", "host", "--set", "default_backend=litert", "--set", "backends=['tvm']"], 2),
    (["build", "--target", "host", "--set", "memory.ram_bytes.x=1"], 2),
    (["build", "--target", "nucleo-l4r5zi", "--set", "mcuboot.version=v1"], 2),
    (["build", "--target", "nucleo-l4r5zi", "--set", "mcuboot.slot_offset=0x200000"], 2),
    # --out: never lose or hide the user's files
    (["build", "--target", "host", "--out", "precious"], 2),
    (["build", "--target", "host", "--out", "notes.txt"], 2),
    (["build", "--target", "host", "--out", "notes.txt/sub"], 2),
    (["build", "--target", "host", "--out", "."], 2),
    (["build", "--target", "host", "--out", "/"], 2),
    (["build", "--target", "host", "--out", "precious/.."], 2),
    (["build", "--target", "host", "--out", "only-hidden"], 2),
    (["build", "--target", "host", "--backend", "auto", "--out", "precious"], 2),
    (["bench", "--target", "host", "--out", "precious"], 2),
    (["deploy", "--target", "host", "--out", "precious", "--host", "127.0.0.1"], 2),
    # datasets
    (["build", "--target", "host", "--model", M, "--data", "missing.npz"], 2),
    (["build", "--target", "host", "--model", M, "--data", "objects.npz"], 2),
    (["build", "--target", "host", "--model", M, "--data", "strings.npz"], 2),
    (["build", "--target", "host", "--model", M, "--data", "empty.npz"], 2),
    (["build", "--target", "host", "--model", M, "--data", "short_labels.npz"], 2),
    (["build", "--target", "host", "--model", M, "--data", "string_labels.npz"], 2),
    (["build", "--target", "host", "--model", M, "--data", "scalar.npz"], 2),
    (["build", "--target", "host", "--model", M, "--data", "short_train.npz"], 2),
    (["build", "--target", "host", "--model", M, "--data", "not_a_zip.npz"], 2),
    (["build", "--target", "host", "--model", M, "--data", "text.npz"], 2),
    (["build", "--target", "host", "--model", M, "--data", "precious"], 2),
    # models that are not there or not models
    (["build", "--target", "host", "--model", "missing.onnx"], 2),
    (["build", "--target", "host", "--model", "notes.txt"], 2),
    (["build", "--target", "host", "--model", "precious"], 2),
    (["inspect", "missing.tflite"], 2),
    (["inspect", "notes.txt"], 2),
    # commands on folders that hold no build
    (["verify", "precious"], 2),
    (["verify", "missing-folder"], 2),
    (["verify", "notes.txt"], 2),
    (["flash", "--out", "precious", "--dry-run"], 2),
    (["deploy", "--target", "host"], 2),
    # keys
    (["build", "--target", "host", "--signing-key", "missing.pem"], 2),
    (["build", "--target", "host", "--signing-key", "notes.txt", "--model", M], 2),
    (["keygen", "--key", "notes.txt"], 2),
    # test runner options
    (["test", "--fast", "--slow"], 2),
]
ENV_CASES = [
    ({"EDGEYARD_CACHE": "notes.txt"}, ["build", "--target", "host"], 2),
    ({"EDGEYARD_SIGNING_KEY": "missing.pem"}, ["build", "--target", "host"], 2),
    ({"EDGEYARD_SIGNING_KEY": "notes.txt"}, ["build", "--target", "host", "--model", M], 2),
]


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config-not-there"))  # no per-user signing key
    monkeypatch.delenv("EDGEYARD_SIGNING_KEY", raising=False)
    _user_files(tmp_path)
    return tmp_path


@pytest.mark.parametrize("args, expected", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_command_line(args, expected, user_folder, capsys):
    before = snapshot(user_folder)
    code, _, err = run_cli(args, capsys)
    assert_clean_refusal(code, err, expected, before, snapshot(user_folder))


@pytest.mark.parametrize("env, args, expected", ENV_CASES, ids=[" ".join(f"{k}={v}" for k, v in c[0].items())
                                                               for c in ENV_CASES])
def test_bad_environment(env, args, expected, user_folder, capsys, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    before = snapshot(user_folder)
    code, _, err = run_cli(args, capsys)
    assert_clean_refusal(code, err, expected, before, snapshot(user_folder))


@pytest.mark.parametrize("args, sentence", [
    (["build", "--samples", "abc"], "--samples takes a whole number, not 'abc'"),
    (["bench", "--runs", "1.5"], "--runs takes a whole number, not '1.5'"),
    (["prune", "--sparsity", "most"], "--sparsity takes a number, not 'most'"),
])
def test_a_value_invoke_cannot_convert_names_its_option(args, sentence, user_folder, capsys):
    code, _, err = run_cli(args, capsys)
    assert code == 2 and sentence in err, err


def test_help_of_a_task_with_a_positional_argument(user_folder, capsys):
    code, out, err = run_cli(["inspect", "--help"], capsys)
    assert code == 0 and "Usage:" in out and "inspect" in out and not err


# ---------- target profiles: every problem one BadInput naming the file ----------

GOOD_PROFILE = (TASKS_DIR / "targets" / "host.toml").read_text()
PROFILE_CASES = {
    "toml syntax": "name = \n",
    "empty tvm_target": GOOD_PROFILE.replace(GOOD_PROFILE[GOOD_PROFILE.index("tvm_target ="):].splitlines()[0],
                                             "tvm_target = {}"),
    "backend not a string": GOOD_PROFILE.replace('backends = ["', 'backends = [3, "'),
    "negative memory": re.sub(r"ram_bytes = \d+", "ram_bytes = -4096", GOOD_PROFILE),
    "unknown key": GOOD_PROFILE + "\nbogus = 1\n",
    "wrong name": GOOD_PROFILE.replace('name = "host"', 'name = "other"'),
    "not utf-8": "name = \"\xff\"\n",
}


@pytest.mark.parametrize("case", sorted(PROFILE_CASES))
def test_bad_profile_is_one_sentence(case, tmp_path):
    from toolchain.errors import BadInput
    from toolchain.target.profile import load_target, loadable_targets

    path = tmp_path / "host.toml"
    text = PROFILE_CASES[case]
    path.write_bytes(text.encode("latin-1") if case == "not utf-8" else text.encode())
    assert text != GOOD_PROFILE
    (tmp_path / "fine.toml").write_text(GOOD_PROFILE.replace('name = "host"', 'name = "fine"'))
    with pytest.raises(BadInput) as refused:
        load_target("host", tmp_path)
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)
    # One broken profile does not stop builds for the others.
    assert [t.name for t in loadable_targets(tmp_path)] == ["fine"]


# ---------- hostile names reaching C, Markdown and the terminal ----------

HOSTILE = ["count", "bytes", "COUNT", "int", "__x", "9lives", "a-b", "a b", "ünï", "x\x1b[31mred", "a\nb|c", ""]


def test_tensor_names_never_redefine_the_headers_macros():
    from toolchain.backends._static_model import _IO_MACRO_SUFFIXES, io_tensors
    from toolchain.model.info import TensorInfo

    described, _ = io_tensors([TensorInfo(name, (1, 2), "float32") for name in HOSTILE], 8)
    macros = [t["macro"] for t in described]
    assert len(set(macros)) == len(macros) and not set(macros) & set(_IO_MACRO_SUFFIXES)
    assert all(m.replace("_", "a").isalnum() and m.isascii() and not m[0].isdigit() for m in macros)


@pytest.mark.parametrize("stem", ["harness", "semihosting", "startup", "cycles", "markers", "driver", "kernels",
                                  "weights", "ek_conv", "ek_kernels"])
def test_model_named_like_a_source_gets_another_c_name(stem):
    from toolchain.backends._static_model import _SOURCE_STEMS, model_identifier

    assert model_identifier(stem) not in _SOURCE_STEMS


def test_terminal_and_markdown_text_escape_what_could_take_over():
    from toolchain.console import markdown_cell, one_line, printable

    for name in HOSTILE:
        assert "\x1b" not in printable(name) and "\n" not in one_line(name)
        cell = markdown_cell(name)
        assert "\n" not in cell and "\x1b" not in cell and cell.count("|") == cell.count("\\|")
