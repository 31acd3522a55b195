"""Reproducible files: no dates, no machine-dependent order in what edgeyard writes and archives.

Where a format must hold a date (a zip entry's time, Keras's "date_saved"), it is SOURCE_DATE_EPOCH's
(https://reproducible-builds.org/specs/source-date-epoch/) when that is set, else 1980-01-01, the
earliest a zip can hold.
"""

import json
import os
import time
import zipfile
from pathlib import Path

from .atomic import atomic_write
from .errors import BadInput

ZIP_EPOCH = 315532800  # 1980-01-01 00:00:00 UTC


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH as seconds since 1970 (BadInput when it is not a number), else 1980-01-01."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if not value:
        return ZIP_EPOCH
    if not value.isdigit():
        raise BadInput(f"SOURCE_DATE_EPOCH is '{value}', not a number of seconds since 1970.")
    return max(int(value), ZIP_EPOCH)


def deterministic_zip(path: Path, rewrite: dict[str, bytes] | None = None) -> None:
    """Rewrite the zip at `path` with every entry dated source_date_epoch(), mode 644, in its order, with
    the contents of `rewrite` (name -> bytes) in place of those entries."""
    date = time.gmtime(source_date_epoch())[:6]
    with zipfile.ZipFile(path) as source:
        entries = [(info, (rewrite or {}).get(info.filename, source.read(info))) for info in source.infolist()]
    staged = path.with_name(f".{path.name}.zip")
    with zipfile.ZipFile(staged, "w") as target:
        for info, data in entries:
            fixed = zipfile.ZipInfo(info.filename, date_time=date)
            fixed.compress_type = info.compress_type
            fixed.external_attr = 0o644 << 16
            fixed.create_system = 3  # Unix, whatever the machine
            target.writestr(fixed, data)
    atomic_write(path, staged.read_bytes())
    staged.unlink()


def deterministic_keras_file(path: Path) -> None:
    """A .keras file without the date Keras writes into its metadata.json."""
    with zipfile.ZipFile(path) as archive:
        metadata = json.loads(archive.read("metadata.json"))
    metadata["date_saved"] = time.strftime("%Y-%m-%d@%H:%M:%S", time.gmtime(source_date_epoch()))
    deterministic_zip(path, {"metadata.json": json.dumps(metadata).encode()})
