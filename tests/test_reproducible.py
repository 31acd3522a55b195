"""Reproducible builds: two builds of the same inputs, in two folders with two cache folders at two times, are
byte-identical (docs/trust.md#reproducible-builds)."""

from pathlib import Path

import pytest


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


@pytest.mark.fast
def test_differing_files_names_changed_and_one_sided_files_but_not_the_report(tmp_path):
    from toolchain.pipeline.reproducibility import differing_files

    common = {"bundle/manifest.json": b"{}", "bundle/src/model.c": b"int x;", "provenance.json": b"{}",
              "report.json": b"1", "report.md": b"1"}
    first = _folder(tmp_path / "a", {**common, "bundle/firmware.elf": b"A", "bundle/only-a.bin": b""})
    second = _folder(tmp_path / "b", {**common, "bundle/firmware.elf": b"B", "signature.json": b"{}",
                                      "report.json": b"2", "report.md": b"2"})
    compared, differing = differing_files(first, second)
    assert differing == ["bundle/firmware.elf", "bundle/only-a.bin", "signature.json"]
    assert "report.json" not in compared and "bundle/src/model.c" in compared


@pytest.mark.parametrize("target, backend", [("rpi4", "tvm"), ("nucleo-l4r5zi", None), ("rpi2", "tvm")])
def test_two_clean_builds_are_byte_identical(tiny_tflite, tmp_path, monkeypatch, target, backend):
    """The second build runs in another folder, from another working folder, with another cache folder: no
    path, date or order of this machine may reach the bundle (gcc's debug info held the staging folder)."""
    from toolchain.options import BuildOptions
    from toolchain.pipeline.reproducibility import check_reproducible

    monkeypatch.chdir(tmp_path)
    checked = check_reproducible(BuildOptions(target=target, model=tiny_tflite, backend=backend,
                                              out=tmp_path / "build", samples=4))
    assert "bundle/manifest.json" in checked.compared and "provenance.json" in checked.compared
    if target != "rpi4":
        assert any(name.endswith(".elf") or name.endswith("runner") for name in checked.compared)


@pytest.mark.slow
@pytest.mark.parametrize("target, backend", [("nucleo-l4r5zi", "tvm"), ("corstone300-ethos-u55", None)])
def test_two_clean_firmware_builds_are_byte_identical(tiny_keras, tmp_path, target, backend):
    """int8 (the Ethos-U runs nothing else), calibrated on seeded inputs: quantizing is part of what must repeat."""
    import numpy as np

    from toolchain.options import BuildOptions
    from toolchain.pipeline.reproducibility import check_reproducible

    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, x=np.random.default_rng(1).random((16, 8, 8, 1), dtype=np.float32))
    checked = check_reproducible(BuildOptions(target=target, model=tiny_keras, backend=backend, quantize="int8",
                                              calibration=calibration, out=tmp_path / "build", samples=4))
    assert "bundle/manifest.json" in checked.compared
