import pytest

from toolchain.errors import BadInput
from toolchain.target.profile import all_targets, load_target, load_target_file, target_table

from conftest import invoke

pytestmark = pytest.mark.fast  # target files and the CLI's table: nothing is compiled or imported heavily


def test_shipped_profiles_load():
    names = [t.name for t in all_targets()]
    assert {"host", "rpi4"} <= set(names)
    rpi4 = load_target("rpi4")
    assert rpi4.arch == "aarch64" and rpi4.cpu == "cortex-a72" and rpi4.cross_prefix
    assert rpi4.tvm_target["mtriple"] == "aarch64-linux-gnu"
    assert rpi4.emulator["command"][0] == "qemu-aarch64"


def _write(tmp_path, text, name="board"):
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def _profile(**overrides) -> str:
    fields = {
        "name": '"board"', "description": '"d"', "os": '"linux"', "arch": '"aarch64"', "cpu": '"cortex-a53"',
        "clock_mhz": "1200", "cross_prefix": '"aarch64-linux-gnu-"', "backends": '["tvm"]',
        "default_backend": '"tvm"', "runners": '["qemu-user"]', "tvm_target": '{ kind = "llvm" }',
    }
    fields.update(overrides)
    body = "\n".join(f"{k} = {v}" for k, v in fields.items() if v is not None)
    return body + "\n[memory]\nram_bytes = 1\nstorage_bytes = 0\n"


def test_valid_profile(tmp_path):
    assert load_target_file(_write(tmp_path, _profile())).cpu == "cortex-a53"


def test_unknown_key_names_file_and_key(tmp_path):
    path = _write(tmp_path, _profile(colour='"red"'))
    with pytest.raises(BadInput, match=r"board\.toml: unknown key 'colour'"):
        load_target_file(path)


def test_missing_key_names_file_and_key(tmp_path):
    path = _write(tmp_path, _profile(cpu=None))
    with pytest.raises(BadInput, match=r"board\.toml: missing required key 'cpu'"):
        load_target_file(path)


def test_nested_unknown_key(tmp_path):
    path = _write(tmp_path, _profile() + "colour = 3\n")  # lands inside [memory]
    with pytest.raises(BadInput, match=r"unknown key 'memory\.colour'"):
        load_target_file(path)


def test_wrong_type_and_default_backend(tmp_path):
    with pytest.raises(BadInput, match="'clock_mhz' must be of type int"):
        load_target_file(_write(tmp_path, _profile(clock_mhz='"fast"')))
    with pytest.raises(BadInput, match="default_backend 'litert' is not in backends"):
        load_target_file(_write(tmp_path, _profile(default_backend='"litert"')))


def test_unknown_target_lists_known():
    with pytest.raises(BadInput, match="unknown target 'nope'; known targets: .*rpi4"):
        load_target("nope")


def test_targets_task_prints_table():
    assert "cortex-a72" in target_table()
    result = invoke("targets")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0].split()[:3] == ["target", "arch", "cpu"]
    assert any(line.startswith("rpi4") for line in result.stdout.splitlines())
