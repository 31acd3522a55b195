"""Per-build changes to a target profile: `--set KEY=VALUE` (dotted keys into the profile's tables),
and the options that are one such setting (--precision is fpga.precision).

    --set ethos_u.accelerator_config=ethos-u55-256     the 256-MAC Ethos-U55
    --set tvm_target.arch=sm_89                        device code for an Ada GPU
    --set fpga.layer_precision.dense=ap_fixed<24,10>   one layer's fixed-point type

The profile's file stays as it is. The changed target is checked against the same schema as a
loaded one, and its sha256 covers the settings, so a changed setting is a different build.
"""

import hashlib
import json
import tomllib

from ..errors import BadInput
from .profile import Target, from_data, profile_data, validate


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
    data = profile_data(target)
    for dotted, value in settings.items():
        *tables, key = dotted.split(".")
        node = data
        for table in tables:
            node = node.setdefault(table, {})
            if not isinstance(node, dict):
                raise BadInput(f"--set {dotted}: '{table}' is not a table of target {target.name}.")
        node[key] = value
    try:
        validate(data, target.path)
    except BadInput as err:
        raise BadInput(f"--set {', '.join(settings)}: {err}") from None
    digest = hashlib.sha256((target.sha256 + json.dumps(settings, sort_keys=True)).encode()).hexdigest()
    return from_data(data, target.path, digest)
