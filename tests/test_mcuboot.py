"""MCUboot images: a signed microcontroller build also gives the firmware linked for MCUboot's primary slot and
signed with imgtool; MCUboot's own `imgtool verify` accepts it and refuses a tampered copy."""

import subprocess
import sys

import pytest

IMGTOOL = [sys.executable, "-m", "imgtool.main"]


@pytest.fixture(scope="module")
def mcuboot_build(tiny_tflite, tmp_path_factory):
    from toolchain.options import BuildOptions
    from toolchain.pipeline.build import build
    from toolchain.signing import keygen

    folder = tmp_path_factory.mktemp("mcuboot")
    key, public = keygen(folder / "signing-key.pem")
    out = folder / "build"
    build(BuildOptions(target="nucleo-l4r5zi", model=tiny_tflite, backend="tvm", out=out, samples=4,
                       settings={"mcuboot.version": "1.2.3+4", "mcuboot.security_counter": 7}, signing_key=key))
    return out, public


def _verify(image, public) -> subprocess.CompletedProcess:
    return subprocess.run([*IMGTOOL, "verify", "-k", str(public), str(image)], capture_output=True, text=True)


def test_mcuboot_image_passes_imgtool_verify_with_its_version_and_counter(mcuboot_build):
    import json

    out, public = mcuboot_build
    image = out / "bundle" / "firmware-mcuboot.bin"
    checked = _verify(image, public)
    assert checked.returncode == 0 and "Image version: 1.2.3+4" in checked.stdout, checked.stdout + checked.stderr
    info = subprocess.run([*IMGTOOL, "dumpinfo", str(image)], capture_output=True, text=True, check=True).stdout
    assert "SEC_CNT" in info and "0x07 0x00 0x00 0x00" in info and "hdr_size:           0x200" in info
    firmware = json.loads((out / "bundle" / "manifest.json").read_text())["firmware"]
    assert firmware["images"]["mcuboot"] == "firmware-mcuboot.bin"
    assert firmware["mcuboot"]["slot_address"] == 0x08010000
    # The payload is the board firmware linked after the header: its vector table's reset vector points
    # into the slot, not to the plain image's 0x08000000.
    reset = int.from_bytes(image.read_bytes()[0x200 + 4:0x200 + 8], "little")
    assert 0x08010200 < reset < 0x08100000


def test_tampered_mcuboot_image_fails_imgtool_verify(mcuboot_build, tmp_path):
    out, public = mcuboot_build
    tampered = tmp_path / "tampered.bin"
    data = bytearray((out / "bundle" / "firmware-mcuboot.bin").read_bytes())
    data[0x300] ^= 0x01  # one bit of the firmware's code
    tampered.write_bytes(bytes(data))
    checked = _verify(tampered, public)
    assert checked.returncode != 0 and "Image was correctly validated" not in checked.stdout


@pytest.mark.fast
@pytest.mark.parametrize("setting, message", [
    ({"mcuboot.version": "v1"}, "not MAJOR.MINOR.REVISION"),
    ({"mcuboot.align": 3}, "use 1, 2, 4, 8, 16 or 32"),
    ({"mcuboot.slot_size": 0x300000}, "ends past the flash"),
    ({"mcuboot.header_size": 8}, "32-byte header"),
])
def test_bad_mcuboot_settings_are_refused(setting, message):
    from toolchain.errors import BadInput
    from toolchain.target.profile import load_target
    from toolchain.target.settings import with_settings

    with pytest.raises(BadInput, match=message):
        with_settings(load_target("nucleo-l4r5zi"), setting)
