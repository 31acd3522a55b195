"""What a target needs on this machine, as plug-ins declare it: each backend and runner lists the Tools its
work for a target uses (`tools(target)`), and `invoke doctor` (toolchain/pipeline/doctor.py) checks them.

A Tool finds itself through the same door the build uses (proc.require, cross.find_tool, the hostenv
modules), so a missing one reports the very MissingTool sentence, install hint included, that a build
would stop with."""

from dataclasses import dataclass, field
from typing import Callable

from .. import proc


@dataclass(frozen=True)
class Tool:
    name: str  # as the table shows it: a program ("aarch64-linux-gnu-g++") or a thing ("the aarch64 TVM runtime")
    purpose: str  # what it is for, in a few words
    # Its version (or where it is); raises MissingTool, with the install hint, when it is not there.
    locate: Callable[[], str] = field(compare=False, repr=False)
    # For a step beyond building and running the target's builds here (flashing a real board, vendor
    # synthesis): invoke doctor shows it and never fails for it.
    optional: bool = False


def program(name: str, hint: str, purpose: str, version_flag: str = "--version", optional: bool = False) -> Tool:
    """A program looked up on PATH (proc.require with `hint`), reporting the first line of its version."""
    return Tool(name, purpose, lambda: proc.version(proc.require(name, hint), version_flag), optional)
