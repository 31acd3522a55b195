"""The shape of the package: no import cycles, no capability probing, the exact plug-in sets.

Pure unit tests (no TensorFlow, TVM or compiler): part of the fast tier.
"""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "toolchain"

pytestmark = pytest.mark.fast


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every toolchain module `name` imports, at module level or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:  # `from . import bundle` imports the module bundle
                found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source)
    return {m for m in found if m in modules and m != name}


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_capability_probing():
    """Plug-ins declare what they can do (RunnerCaps, BackendCaps); nobody asks with hasattr/getattr."""
    probes = [f"{path.relative_to(PACKAGE.parent)}:{i}: {line.strip()}"
              for path in PACKAGE.rglob("*.py")
              for i, line in enumerate(path.read_text().splitlines(), 1)
              if re.search(r"\b(hasattr|getattr)\(", line)]
    assert not probes, "\n".join(probes)


def test_no_undefined_or_unused_names():
    """pyflakes' rules (ruff F): an undefined name is a crash waiting on a rare path; an unused import is a lie."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F", "--quiet", "toolchain", "tests",
                             "tasks.py", "setup.py"], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
