"""The one doors for recurring needs: toolchain.proc (every subprocess) and toolchain.atomic (write, then rename).

Pure unit tests (no TensorFlow, TVM or compiler): part of the fast tier.
"""

import os
import sys
import time
from pathlib import Path

import pytest

from toolchain import atomic, proc
from toolchain.errors import BuildError, MissingTool

pytestmark = pytest.mark.fast


def test_run_returns_the_output_as_text(tmp_path):
    result = proc.run([sys.executable, "-c", "import os; print(os.getcwd())"], cwd=tmp_path)
    assert result.returncode == 0 and Path(result.stdout.strip()) == tmp_path.resolve()


def test_run_takes_paths_input_and_env(tmp_path):
    script = tmp_path / "echo.py"
    script.write_text("import os, sys; print(sys.stdin.read() + os.environ['WORD'])")
    result = proc.run([sys.executable, script], input="hello ", env={**os.environ, "WORD": "world"})
    assert result.stdout == "hello world\n"


def test_failure_is_one_sentence_with_the_tool_status_and_tail():
    script = "import sys; print('\\n'.join(f'line {i}' for i in range(10)), file=sys.stderr); sys.exit(3)"
    with pytest.raises(BuildError) as caught:
        proc.run([sys.executable, "-c", script], what="the script")
    assert str(caught.value) == "the script failed with exit status 3: line 7 | line 8 | line 9."
    assert caught.value.exit_code == 1


def test_failure_names_the_program_and_says_when_it_printed_nothing():
    with pytest.raises(BuildError, match=r"^false failed with exit status 1: no output\.$"):
        proc.run(["false"])


def test_unchecked_failure_is_returned():
    assert proc.run(["false"], check=False).returncode == 1


def test_tail_lines_and_stdout_when_stderr_is_empty():
    with pytest.raises(BuildError, match=r"failed with exit status 2: b\.$"):
        proc.run([sys.executable, "-c", "import sys; print('a\\nb.'); sys.exit(2)"], tail_lines=1)


def test_missing_program_is_missing_tool_with_a_hint_else_a_build_error():
    with pytest.raises(MissingTool, match=r"^no-such-tool-here is not installed; run \./bootstrap\.sh\.$") as caught:
        proc.run(["/nowhere/no-such-tool-here", "-v"], install_hint="run ./bootstrap.sh.")
    assert caught.value.exit_code == 3
    with pytest.raises(BuildError, match="no-such-tool-here could not start: .*was not found"):
        proc.run(["no-such-tool-here"])


def test_missing_folder_is_not_taken_for_a_missing_program(tmp_path):
    with pytest.raises(BuildError, match="does not exist"):
        proc.run(["true"], cwd=tmp_path / "absent", install_hint="never shown")


def test_timeout_stops_the_tool_and_says_so():
    started = time.monotonic()
    with pytest.raises(proc.TimedOut, match=r"^sleep did not finish within 0\.5 s\.$") as caught:
        proc.run(["sleep", "30"], timeout_s=0.5)
    assert time.monotonic() - started < 10
    assert isinstance(caught.value, BuildError)


def test_timeout_keeps_what_was_printed():
    script = "import sys, time; print('started', flush=True); time.sleep(30)"
    with pytest.raises(proc.TimedOut) as caught:
        proc.run([sys.executable, "-c", script], timeout_s=2, die_with_parent=True)
    assert caught.value.stdout == "started\n"


def test_log_takes_both_streams_and_the_error_points_at_it(tmp_path):
    log = tmp_path / "tool.log"
    script = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(4)"
    with pytest.raises(BuildError, match=rf"^tool failed with exit status 4; see {log}\.$"):
        proc.run([sys.executable, "-c", script], what="tool", log=log)
    assert sorted(log.read_text().split()) == ["err", "out"]


def test_bytes_mode():
    result = proc.run([sys.executable, "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"],
                      input=b"\x00\xff", text=False)
    assert result.stdout == b"\x00\xff"


def test_require_and_version():
    assert Path(proc.require("sh", "unused")).name == "sh"
    with pytest.raises(MissingTool, match="^no-such-tool-here is not installed; install it.$"):
        proc.require("no-such-tool-here", "install it.")
    assert proc.version(sys.executable).startswith("Python 3.")


def test_atomic_write_replaces_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    assert atomic.atomic_write(target, "new ✓") == target
    assert target.read_text(encoding="utf-8") == "new ✓"
    atomic.atomic_write(target, b"\x00bytes", mode=0o750)
    assert target.read_bytes() == b"\x00bytes" and target.stat().st_mode & 0o777 == 0o750
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_write_failure_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(TypeError):
        atomic.atomic_write(target, 42)  # neither str nor bytes: fails while writing
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_file_keeps_the_name_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "sub" / "model.onnx"
    with atomic.atomic_file(target) as temporary:
        assert temporary.name == target.name and temporary.parent.parent == target.parent
        assert temporary.parent.name.startswith(".")  # hidden while it is written
        temporary.write_text("v1")
        assert not target.exists()
    assert target.read_text() == "v1"
    with pytest.raises(RuntimeError):
        with atomic.atomic_file(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "v1" and [p.name for p in target.parent.iterdir()] == ["model.onnx"]


def test_staged_dir_replaces_the_folder_on_success(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic.staged_dir(out) as stage:
        assert stage.parent == tmp_path and stage != out and stage.stat().st_mode & 0o777 == 0o755
        (stage / "new.txt").write_text("new")
        assert (out / "old.txt").exists()
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_staged_dir_keeps_the_folder_on_failure(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic.staged_dir(out) as stage:
            (stage / "new.txt").write_text("new")
            raise KeyboardInterrupt
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_staged_dir_leaves_no_parents_it_made(tmp_path):
    (tmp_path / "kept").mkdir()
    out = tmp_path / "kept" / "a" / "b" / "out"
    with pytest.raises(ValueError):
        with atomic.staged_dir(out):
            raise ValueError
    assert list(tmp_path.iterdir()) == [tmp_path / "kept"] and not any((tmp_path / "kept").iterdir())
    with atomic.staged_dir(out) as stage:
        (stage / "f").write_text("x")
    assert (out / "f").read_text() == "x"
