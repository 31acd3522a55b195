"""Flashing: command lines from the target file, the image checked against the build, the tool looked up.

flash() reads only the build's manifest and images, so most tests give it a stand-in firmware build
(fast); one flashes, in a dry run, what a real build for the board made.
"""

import os
import shutil
import stat
from pathlib import Path

import pytest

from toolchain.bundle import BUNDLE, Entry, write_manifest
from toolchain import signing
from toolchain.errors import BadInput, BuildError, MissingTool
from toolchain.boards.flashers import flash

BOARD = "nucleo-l4r5zi"


@pytest.fixture
def built(tmp_path, monkeypatch) -> Path:
    """A stand-in firmware build for the board: the images a build leaves, a manifest recording them, and a
    signature (flash refuses unsigned builds) by a key the test trusts."""
    out = tmp_path / "built"
    bundle_dir = out / BUNDLE
    bundle_dir.mkdir(parents=True)
    (bundle_dir / "firmware.elf").write_bytes(b"\x7fELF" + bytes(60))
    (bundle_dir / "firmware.bin").write_bytes(bytes(range(64)))
    images = {"board": "firmware.elf", "board_binary": "firmware.bin"}
    write_manifest(bundle_dir, "tvm", BOARD, Entry("firmware", ["./firmware.elf"], "armv7e-m"), [], [],
                   extra={"firmware": {"images": images}})
    signing.write_provenance(out, {"stand-in": True})
    key, _ = signing.keygen(tmp_path / "key.pem")
    monkeypatch.setenv(signing.KEY_ENV, str(key))
    signing.sign(out, key)
    return out


def _expected(probe: str, out: Path) -> list[list[str]]:
    bundle = (out / BUNDLE).resolve()
    return [[arg.format(bundle=bundle) for arg in argv] for argv in {
        "pyocd": [["pyocd", "load", "--target", "stm32l4r5zitx", "{bundle}/firmware.elf"]],
        "openocd": [["openocd", "-f", "board/st_nucleo_l4.cfg", "-c",
                     "program {{{bundle}/firmware.elf}} verify reset exit"]],
        "st-flash": [["st-flash", "--reset", "write", "{bundle}/firmware.bin", "0x08000000"]],
    }[probe]]


def test_a_real_build_for_the_board_flashes(tiny_tflite, tmp_path):
    """End to end: the manifest and images the tvm backend's firmware build makes are what flash() takes."""
    from toolchain.pipeline.build import BuildOptions, build

    out = tmp_path / "out"
    build(BuildOptions(target=BOARD, model=tiny_tflite, backend="tvm", out=out))
    for probe in ("pyocd", "st-flash"):
        assert flash(BOARD, out, probe, dry_run=True) == _expected(probe, out)


@pytest.mark.fast
@pytest.mark.parametrize("probe", ["pyocd", "openocd", "st-flash"])
def test_dry_run_gives_the_exact_commands(built, probe):
    assert flash(BOARD, built, probe, dry_run=True) == _expected(probe, built)


@pytest.mark.fast
def test_openocd_refuses_a_path_that_would_break_its_tcl_quoting(built, tmp_path):
    """OpenOCD reads the path inside a Tcl brace word: a brace in it would end the word early."""
    odd = built.rename(tmp_path / "a}b")
    with pytest.raises(BadInput, match=r"openocd cannot be given a path holding braces"):
        flash(BOARD, odd, "openocd", dry_run=True)
    assert flash(BOARD, odd, "pyocd", dry_run=True) == _expected("pyocd", odd)  # argv needs no quoting


@pytest.mark.fast
def test_default_probe_comes_from_the_target(built):
    assert flash(BOARD, built, dry_run=True)[0][0] == "pyocd"


@pytest.mark.fast
def test_missing_tool_exits_3_with_the_install_hint(built, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingTool, match="st-flash is not installed; install it with: apt-get install stlink-tools") as err:
        flash(BOARD, built, "st-flash")
    assert err.value.exit_code == 3


@pytest.mark.fast
def test_runs_the_tool_with_those_commands(built, monkeypatch, tmp_path):
    """A stand-in st-flash records its arguments: flash() runs exactly what the dry run shows."""
    record = tmp_path / "arguments"
    tool = tmp_path / "st-flash"
    tool.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    commands = flash(BOARD, built, "st-flash")
    assert commands == flash(BOARD, built, "st-flash", dry_run=True)
    assert record.read_text().split() == commands[0][1:]


@pytest.mark.fast
def test_changed_image_is_refused(built, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(built, copy)
    with open(copy / "bundle" / "firmware.elf", "ab") as image:
        image.write(b"\0")
    with pytest.raises(BuildError, match=r"firmware.elf does not match its sha256") as err:
        flash(BOARD, copy, "pyocd", dry_run=True)
    assert err.value.exit_code == 1
    (built / "signature.json").unlink()  # unsigned: refused unless allowed
    with pytest.raises(BadInput, match="is not signed"):
        flash(BOARD, built, "pyocd", dry_run=True)


@pytest.mark.fast
def test_build_for_another_target_or_no_build_is_refused(built, tmp_path):
    with pytest.raises(BadInput, match="holds a build for nucleo-l4r5zi, not firmware for stm32f746g-disco"):
        flash("stm32f746g-disco", built, dry_run=True)
    with pytest.raises(BadInput, match="holds no build"):
        flash(BOARD, tmp_path, dry_run=True)
    with pytest.raises(BadInput, match="corstone-300 has no \\[flash\\] table"):
        flash("corstone-300", built, dry_run=True)
