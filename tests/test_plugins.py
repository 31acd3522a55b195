"""The plug-in registries hold exactly the plug-ins shipped (like west's test_imports), and loading them all is
cheap: no machine-learning framework is imported until a plug-in is used."""

import json
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT

pytestmark = pytest.mark.fast

REGISTRIES = {
    "toolchain.backends": ["executorch", "hls4ml", "kernels", "litert", "onnxruntime", "tvm", "vela"],
    "toolchain.runners": ["cuda", "csim", "host", "qemu-system", "qemu-user", "ssh", "tvm-rpc"],
    "toolchain.boards.flashers": ["gdb", "openocd", "pyocd", "st-flash"],
}
FRAMEWORKS = ("tensorflow", "keras", "tvm", "onnxruntime")


@pytest.mark.parametrize("package", sorted(REGISTRIES))
def test_registry_holds_exactly_the_shipped_plugins(package):
    import importlib

    registry = importlib.import_module(package)
    assert registry.names() == sorted(REGISTRIES[package])
    for name in REGISTRIES[package]:
        assert registry.get(name).name == name


def test_loading_every_registry_imports_no_framework():
    """In a fresh interpreter: this one may have imported the frameworks for other tests."""
    probe = ("import importlib, json, sys\n"
             f"for package in {sorted(REGISTRIES)!r}:\n"
             "    registry = importlib.import_module(package)\n"
             "    [registry.get(name) for name in registry.names()]\n"
             f"print(json.dumps([m for m in {FRAMEWORKS!r} if m in sys.modules]))\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize("package,kind", [("toolchain.backends", "backend"), ("toolchain.runners", "runner"),
                                          ("toolchain.boards.flashers", "probe")])
def test_unknown_name_lists_the_known_ones(package, kind):
    import importlib

    from toolchain.errors import BadInput

    known = ", ".join(sorted(REGISTRIES[package]))
    with pytest.raises(BadInput, match=f"^unknown {kind} 'nope'; known {kind}s: {known}\\.$"):
        importlib.import_module(package).get("nope")


# What each shipped runner declares: (reaches a board, counts instructions, emulated).
RUNNER_CAPS = {
    "host": (False, False, False), "cuda": (False, False, False), "csim": (False, False, True),
    "qemu-user": (False, True, True), "qemu-system": (False, True, True),
    "ssh": (True, False, False), "tvm-rpc": (True, False, False),
}


# What each shipped flasher declares: (reads what it wrote back, writes through a GDB server).
FLASHER_CAPS = {"gdb": (True, True), "openocd": (True, False), "pyocd": (False, False), "st-flash": (True, False)}


@pytest.mark.parametrize("name", sorted(FLASHER_CAPS))
def test_flashers_declare_their_caps(name):
    from toolchain.boards import flashers

    caps = flashers.get(name).caps
    assert (caps.reads_back, caps.gdb_server) == FLASHER_CAPS[name]


@pytest.mark.parametrize("name", sorted(RUNNER_CAPS))
def test_runners_declare_their_caps(name):
    from toolchain import runners

    caps = runners.get(name).caps
    assert (caps.remote, caps.counts_instructions, caps.emulated) == RUNNER_CAPS[name]


def test_a_runner_must_implement_exactly_what_its_caps_promise():
    from toolchain.runners import Runner, RunnerCaps, check_caps

    class Local(Runner):
        name, caps = "local", RunnerCaps()

        def command(self, target, entry, threads):
            return [], {}

    class Boasting(Local):  # says it counts, has no count_instructions
        name, caps = "boasting", RunnerCaps(counts_instructions=True)

    class Remote(Runner):  # says it reaches a board, implements only the local command
        name, caps = "remote", RunnerCaps(remote=True)

        def command(self, target, entry, threads):
            return [], {}

    assert check_caps(Local()).name == "local"
    with pytest.raises(TypeError, match=r"boasting: its caps promise \['command', 'count_instructions'\]"):
        check_caps(Boasting())
    with pytest.raises(TypeError, match=r"remote: its caps promise \['connect', 'execute'\] but it implements "
                                        r"\['command'\]"):
        check_caps(Remote())
    with pytest.raises(TypeError):  # a misspelled capability
        RunnerCaps(count_instructions=True)
