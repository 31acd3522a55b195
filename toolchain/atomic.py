"""Write, then rename into place: the one way edgeyard puts a file or a folder where others read it.
A reader, a parallel build or a killed one never sees half of it.

Every staging name carries the process id of its writer (`.NAME.partial-<pid>-<token>`,
`.NAME.old-<pid>-<token>`, `<tmp>/edgeyard-<pid>-<token>`), so what a killed process (kill -9, a
power cut) left behind is recognized and removed by the next one, while a live parallel writer's
staging is left alone.
"""

import os
import re
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

SCRATCH_PREFIX = "edgeyard-"  # <tmp>/edgeyard-<pid>-<token>: one process's scratch folder


def _tag() -> str:
    """<pid>-<token>: unique, and says which process owns the name."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def _partial(path: Path) -> Path:
    """A hidden, unique name beside `path`."""
    return path.with_name(f".{path.name}.partial-{_tag()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def stale_entries(folder: Path, pattern: str) -> list[Path]:
    """The entries of `folder` whose name matches `pattern` (a regular expression with a group `pid`) and
    whose process is gone. A folder that cannot be listed has none."""
    try:
        entries = sorted(Path(folder).iterdir())
    except OSError:
        return []
    stale = []
    for entry in entries:
        match = re.fullmatch(pattern, entry.name)
        if match and int(match["pid"]) != os.getpid() and not _alive(int(match["pid"])):
            stale.append(entry)
    return stale


def remove_stale_staging(out_dir: Path) -> None:
    """Remove what killed writers of out_dir left beside it. A stale `.old-` copy is a finished build that
    a killed process had moved aside and not yet replaced: it goes back into place when out_dir is missing."""
    name = re.escape(out_dir.name)
    for old in stale_entries(out_dir.parent, rf"\.{name}\.old-(?P<pid>\d+)-\w+"):
        if out_dir.exists():
            _remove(old)
        else:
            old.rename(out_dir)
    for partial in stale_entries(out_dir.parent, rf"\.{name}\.partial-(?P<pid>\d+)-\w+"):
        _remove(partial)


@contextmanager
def scratch_dir():
    """A private folder for this process's temporary files (tempfile's default for the block; nested
    blocks share the outer one), removed when the block ends; scratch folders of dead processes are
    removed first."""
    if Path(tempfile.gettempdir()).name.startswith(SCRATCH_PREFIX):
        yield Path(tempfile.gettempdir())
        return
    system = Path(tempfile.gettempdir())
    for stale in stale_entries(system, rf"{SCRATCH_PREFIX}(?P<pid>\d+)-\w+"):
        _remove(stale)
    folder = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=system))
    previous, tempfile.tempdir = tempfile.tempdir, str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(folder, ignore_errors=True)


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
    except OSError as err:
        if err.filename is None:  # write() and close() (a full disk) name no file: this is the one
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise
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
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.partial-{os.getpid()}-", dir=path.parent) as staging:
        temporary = Path(staging) / path.name
        yield temporary
        os.replace(temporary, path)


@contextmanager
def staged_dir(out_dir: Path | str):
    """A temporary folder beside out_dir that replaces it on success and vanishes on failure, leaving
    no empty parent folders it created (and removing what killed writers of out_dir left)."""
    out_dir = Path(out_dir).absolute()
    created = [p for p in reversed(out_dir.parents) if not p.exists()]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out_dir)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-{os.getpid()}-", dir=out_dir.parent))
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
            old = out_dir.with_name(f".{out_dir.name}.old-{_tag()}")
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
