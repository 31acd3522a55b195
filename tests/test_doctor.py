"""invoke doctor: the tools each target needs, declared by the plug-ins, found or missing with the build's own hint."""

import re
import shutil

import pytest

from conftest import invoke
from toolchain import proc
from toolchain.errors import MissingTool
from toolchain.hostenv import cross
from toolchain.pipeline.doctor import diagnose, target_tools
from toolchain.target.profile import load_target

BOARDS = "rpi4,nucleo-l4r5zi"


COLUMNS = ("tool", "status", "required by", "optional for", "version, or how to install it", "what for")


def _rows(stdout: str) -> dict[str, dict[str, str]]:
    """The table's rows by tool name, each {column: cell} (cells hold single spaces, columns are two or more apart)."""
    rows = [re.split(r" {2,}", line) for line in stdout.split("\n\n")[0].splitlines()[2:]]
    return {cells[0]: dict(zip(COLUMNS, cells)) for cells in rows}


@pytest.mark.fast
def test_the_rule_required_for_the_default_build_optional_beyond_it():
    rpi4 = {tool.name: required for tool, required in target_tools(load_target("rpi4"))}
    assert rpi4 == {"aarch64-linux-gnu-g++": True, "the aarch64 TVM runtime": True, "qemu-aarch64": True,
                    "the qemu counting plugin (libinsn_count.so)": True, "the aarch64 ExecuTorch runtime": True,
                    # rpi4's default is auto, which builds litert and onnxruntime too: their userland is required
                    "the emulated aarch64 userland": True}
    nucleo = {tool.name: required for tool, required in target_tools(load_target("nucleo-l4r5zi"))}
    # default "auto" may try each backend: both their tools are required; the probes never are
    assert {name for name, required in nucleo.items() if required} == {
        "arm-none-eabi-gcc", "arm-none-eabi-objcopy", "qemu-system-arm", "the qemu counting plugin (libinsn_count.so)"}
    assert {name for name, required in nucleo.items() if not required} == {"gdb-multiarch", "pyocd", "openocd",
                                                                           "st-flash"}
    alveo = {tool.name: required for tool, required in target_tools(load_target("alveo-u250"))}
    assert alveo == {"g++": True, "vitis-run": False}  # vendor synthesis is never installable here


@pytest.mark.fast
def test_missing_tools_exit_3_with_the_builds_own_hint(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = invoke("doctor", "--targets", BOARDS, env={"PATH": str(empty), "EDGEYARD_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 3, result.stdout + result.stderr
    rows = _rows(result.stdout)
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(MissingTool) as compiler:
        cross.find_tool(load_target("rpi4"), "g++")  # what a build would stop with
    hint = "version, or how to install it"
    assert rows["aarch64-linux-gnu-g++"]["status"] == "MISSING"
    assert rows["aarch64-linux-gnu-g++"][hint] == compiler.value.hint
    assert rows["arm-none-eabi-gcc"][hint] == "install it with: apt-get install gcc-arm-none-eabi, or run ./bootstrap.sh."
    assert rows["qemu-aarch64"] == {**rows["qemu-aarch64"], "status": "MISSING", "required by": "rpi4",
                                    hint: "install it with: apt-get install qemu-user, or run ./bootstrap.sh."}
    assert rows["qemu-system-arm"]["required by"] == "nucleo-l4r5zi"
    assert "apt-get install qemu-system-arm" in rows["qemu-system-arm"][hint]
    # an empty cache: the runtime and the plugin are missing too, each saying how to make it
    assert "./bootstrap.sh" in rows["the aarch64 TVM runtime"][hint]
    # optional: shown as missing, never a reason for exit 3
    assert rows["st-flash"] == {**rows["st-flash"], "status": "missing", "required by": "-",
                                "optional for": "nucleo-l4r5zi", hint: "install it with: apt-get install stlink-tools."}
    assert "the default build of nucleo-l4r5zi, rpi4 would stop" in result.stdout


@pytest.mark.fast
def test_missing_optional_tools_alone_do_not_fail(tmp_path, monkeypatch):
    """Only nucleo-l4r5zi's required programs on PATH: the probes, gdb, dot and chromium are missing, exit 0."""
    narrow = tmp_path / "bin"
    narrow.mkdir()
    plugin = next(tool for tool, _ in target_tools(load_target("nucleo-l4r5zi")) if "plugin" in tool.name)
    for name in ("arm-none-eabi-gcc", "arm-none-eabi-objcopy", "qemu-system-arm", "dpkg-query"):
        if shutil.which(name) is None:
            pytest.skip(f"{name} is not installed here (./bootstrap.sh)")
        (narrow / name).symlink_to(shutil.which(name))
    monkeypatch.setenv("PATH", str(narrow))
    try:
        plugin.locate()  # built in the cache by ./bootstrap.sh
    except MissingTool:
        pytest.skip("the qemu counting plugin is not built here (./bootstrap.sh)")
    diagnosis = diagnose(["nucleo-l4r5zi"])
    assert not diagnosis.missing
    missing = {status.name for status in diagnosis.tools if status.problem}
    assert {"pyocd", "openocd", "st-flash", "gdb-multiarch", "dot", "chromium"} <= missing


def test_every_tool_for_rpi4_and_the_nucleo_is_here():
    """The real machine, as ./bootstrap.sh leaves it: every tool these boards' default builds use is found."""
    result = invoke("doctor", "--targets", BOARDS)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = _rows(result.stdout)
    required = {name: row for name, row in rows.items() if row["required by"] != "-"}
    assert set(required) == {"aarch64-linux-gnu-g++", "the aarch64 TVM runtime", "qemu-aarch64", "arm-none-eabi-gcc",
                             "arm-none-eabi-objcopy", "qemu-system-arm", "the qemu counting plugin (libinsn_count.so)",
                             "the emulated aarch64 userland", "the aarch64 ExecuTorch runtime"}
    assert all(row["status"] == "found" for row in required.values()), required
    assert rows["the qemu counting plugin (libinsn_count.so)"]["required by"] == "rpi4, nucleo-l4r5zi"
    gxx = rows["aarch64-linux-gnu-g++"]["version, or how to install it"]
    assert gxx == proc.version(shutil.which("aarch64-linux-gnu-g++"))  # the compiler's own first line
