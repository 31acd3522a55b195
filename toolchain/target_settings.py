"""Per-build changes to a target profile: `--set KEY=VALUE` (dotted keys into the profile's tables),
and the options that are one such setting (--precision is fpga.precision).

    --set ethos_u.accelerator_config=ethos-u55-256     the 256-MAC Ethos-U55
    --set tvm_target.arch=sm_89                        device code for an Ada GPU
    --set fpga.layer_precision.dense=ap_fixed<24,10>   one layer's fixed-point type

The profile's file stays as it is. The changed target is checked against the same schema as a
loaded one, and its sha256 covers the settings, so a changed setting is a different build.
"""

import copy
import dataclasses
import hashlib
import json
import tomllib

from .errors import BadInput
from .targets import _SCHEMA, Target, _check, _check_bare_metal, _check_tvm_runtime


def parse_settings(items: list[str]) -> dict[str, object]:
    """KEY=VALUE strings -> {key: value}; a value that reads as TOML (256, true, [1, 2]) is that, else a string."""
    settings = {}
    for item in items:
        key, equals, text = item.partition("=")
        if not equals or not key.strip():
            raise BadInput(f"--set takes KEY=VALUE, e.g. ethos_u.accelerator_config=ethos-u55-256, not '{item}'.")
        try:
            value = tomllib.loads(f"value = {text}")["value"]
        except tomllib.TOMLDecodeError:
            value = text
        settings[key.strip()] = value
    return settings


def with_settings(target: Target, settings: dict[str, object]) -> Target:
    """The target with `settings` applied, schema-checked; the target itself when there are none."""
    if not settings:
        return target
    data = {key: copy.deepcopy(getattr(target, key)) for key in _SCHEMA if getattr(target, key) is not None}
    data.update(backends=list(target.backends), runners=list(target.runners))
    for dotted, value in settings.items():
        *tables, key = dotted.split(".")
        node = data
        for table in tables:
            node = node.setdefault(table, {})
            if not isinstance(node, dict):
                raise BadInput(f"--set {dotted}: '{table}' is not a table of target {target.name}.")
        node[key] = value
    try:
        _check(data, _SCHEMA, target.path)
        _check_tvm_runtime(data, target.path)
        if data["os"] == "none":
            _check_bare_metal(data, target.path)
    except BadInput as err:
        raise BadInput(f"--set {', '.join(settings)}: {err}") from None
    if data["default_backend"] not in data["backends"]:
        raise BadInput(f"--set: default_backend '{data['default_backend']}' is not in backends {data['backends']}.")
    digest = hashlib.sha256((target.sha256 + json.dumps(settings, sort_keys=True)).encode()).hexdigest()
    fields = {**data, "backends": tuple(data["backends"]), "runners": tuple(data["runners"]), "sha256": digest}
    return dataclasses.replace(target, **fields)
