"""Target profiles: one TOML file per board in targets/, checked against a schema on load."""

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BadInput
from .paths import TARGETS_DIR

# key -> (python type, required). Nested tables have their own schema.
_SCHEMA: dict = {
    "name": (str, True),
    "description": (str, True),
    "os": (str, True),
    "arch": (str, True),
    "cpu": (str, True),
    "clock_mhz": (int, True),
    "cross_prefix": (str, True),
    "backends": (list, True),
    "default_backend": (str, True),
    "runners": (list, True),
    "tvm_target": (dict, True),
    "emulator": ({"command": (list, True)}, False),
    "memory": ({"ram_bytes": (int, True), "storage_bytes": (int, True)}, True),
}


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    os: str
    arch: str
    cpu: str
    clock_mhz: int
    cross_prefix: str
    backends: tuple[str, ...]
    default_backend: str
    runners: tuple[str, ...]
    tvm_target: dict
    memory: dict
    path: Path
    emulator: dict | None = None
    sha256: str = field(default="", compare=False)

    @property
    def is_cross(self) -> bool:
        return bool(self.cross_prefix)


def _check(data: dict, schema: dict, path: Path, prefix: str = "") -> None:
    for key in data:
        if key not in schema:
            raise BadInput(f"{path}: unknown key '{prefix}{key}' (allowed: {', '.join(sorted(schema))}).")
    for key, (kind, required) in schema.items():
        if key not in data:
            if required:
                raise BadInput(f"{path}: missing required key '{prefix}{key}'.")
            continue
        value = data[key]
        if isinstance(kind, dict):
            if not isinstance(value, dict):
                raise BadInput(f"{path}: '{prefix}{key}' must be a table.")
            _check(value, kind, path, f"{prefix}{key}.")
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BadInput(f"{path}: '{prefix}{key}' must be of type {kind.__name__}, not {type(value).__name__}.")


def load_target_file(path: Path) -> Target:
    import hashlib

    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise BadInput(f"{path}: not valid TOML ({err}).") from None
    _check(data, _SCHEMA, path)
    if data["name"] != path.stem:
        raise BadInput(f"{path}: 'name' is '{data['name']}' but the file is named '{path.stem}.toml'.")
    if data["default_backend"] not in data["backends"]:
        raise BadInput(f"{path}: default_backend '{data['default_backend']}' is not in backends {data['backends']}.")
    return Target(
        **{**data, "backends": tuple(data["backends"]), "runners": tuple(data["runners"])},
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def target_names(targets_dir: Path = TARGETS_DIR) -> list[str]:
    return sorted(p.stem for p in targets_dir.glob("*.toml"))


def load_target(name: str, targets_dir: Path = TARGETS_DIR) -> Target:
    path = targets_dir / f"{name}.toml"
    if not path.is_file():
        raise BadInput(f"unknown target '{name}'; known targets: {', '.join(target_names(targets_dir))}.")
    return load_target_file(path)


def all_targets(targets_dir: Path = TARGETS_DIR) -> list[Target]:
    return [load_target(n, targets_dir) for n in target_names(targets_dir)]


def target_table(targets_dir: Path = TARGETS_DIR) -> str:
    from .console import table

    rows = [[t.name, t.arch, t.cpu, f"{t.clock_mhz} MHz" if t.clock_mhz else "-", ", ".join(t.backends),
             t.default_backend, ", ".join(t.runners), t.description] for t in all_targets(targets_dir)]
    return table(["target", "arch", "cpu", "clock", "backends", "default", "runners", "description"], rows)
