"""Write, then rename into place: the one way edgeyard puts a file or a folder where others read it.
A reader, a parallel build or a killed one never sees half of it."""

import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _partial(path: Path) -> Path:
    """A hidden, unique name beside `path`."""
    return path.with_name(f".{path.name}.partial-{secrets.token_hex(4)}")


def atomic_write(path: Path | str, data: str | bytes, mode: int | None = None) -> Path:
    """Write `data` (str as UTF-8) to `path` through a temporary file in the same folder, then chmod
    `mode` if given (else the umask's default, as open() would) and os.replace it into place."""
    path = Path(path)
    temporary = _partial(path)
    try:
        with open(temporary, "xb") as out:
            out.write(data.encode() if isinstance(data, str) else data)
        if mode is not None:
            temporary.chmod(mode)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


@contextmanager
def atomic_file(path: Path | str):
    """A temporary path for a writer that takes a file name (onnx.save, keras save, a compiler's -o):
    `path`'s own name in a hidden folder beside it (writers and readers that derive names from it see
    the real one). When the block ends it replaces `path`; when the block fails it vanishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.partial-", dir=path.parent) as staging:
        temporary = Path(staging) / path.name
        yield temporary
        os.replace(temporary, path)


@contextmanager
def staged_dir(out_dir: Path | str):
    """A temporary folder beside out_dir that replaces it on success and vanishes on failure, leaving
    no empty parent folders it created."""
    out_dir = Path(out_dir)
    created = [p for p in reversed(out_dir.absolute().parents) if not p.exists()]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    stage.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for parent in reversed(created):  # leave no empty folders this made
            if parent.exists() and not any(parent.iterdir()):
                parent.rmdir()
        raise
    old = None
    try:
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{stage.name}")
            out_dir.rename(old)
        stage.rename(out_dir)
    except BaseException:  # e.g. another process put its out_dir in place first: keep that, or ours before
        shutil.rmtree(stage, ignore_errors=True)
        if old is not None and not out_dir.exists():
            old.rename(out_dir)
        elif old is not None:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
