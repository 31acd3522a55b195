"""Fuzzing the model loaders with Hypothesis: mutated bytes of small valid .tflite, .onnx and .keras models
(built here) must load or fail with an EdgeyardError (exit 1 or 2), never an internal error. Bounded in
time: FUZZ_SECONDS per format (EDGEYARD_FUZZ_SECONDS changes it); the executions are printed (pytest -s)."""

import io
import itertools
import os
import time
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FUZZ_SECONDS = float(os.environ.get("EDGEYARD_FUZZ_SECONDS", "20"))
EXAMPLES_PER_ROUND = 25  # one Hypothesis run; rounds with new seeds repeat until the time is spent


def _mutations():
    from hypothesis import strategies as st

    position = st.integers(0, 2**31)
    return st.fixed_dictionaries({
        "bytes": st.lists(st.tuples(position, st.integers(0, 255)), max_size=8),  # overwrite a byte
        "cut": st.one_of(st.none(), position),  # truncate
        "splice": st.one_of(st.none(), st.tuples(position, position, st.integers(1, 64))),  # copy a run elsewhere
        "entry": position,  # .keras: which zip entry to damage
    })


def _mutate(data: bytes, mutation: dict) -> bytes:
    out = bytearray(data)
    for position, value in mutation["bytes"]:
        out[position % len(out)] = value
    if mutation["splice"] is not None:
        source, target, length = (mutation["splice"][0] % len(out), mutation["splice"][1] % len(out),
                                  mutation["splice"][2])
        out[target:target + length] = out[source:source + length]
    if mutation["cut"] is not None:
        del out[max(1, mutation["cut"] % len(out)):]
    return bytes(out)


def _mutate_keras(data: bytes, mutation: dict) -> bytes:
    """A .keras zip with one entry's bytes mutated (mutating the zip itself mostly breaks its CRC first)."""
    with zipfile.ZipFile(io.BytesIO(data)) as source:
        entries = [(info.filename, source.read(info)) for info in source.infolist()]
    damaged = mutation["entry"] % len(entries)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for index, (name, content) in enumerate(entries):
            target.writestr(name, _mutate(content, mutation) if index == damaged and content else content)
    return out.getvalue()


def _fuzz(original: Path, mutate, folder: Path) -> tuple[int, dict]:
    """Load mutated copies of `original` for FUZZ_SECONDS: (executions, outcome counts)."""
    from hypothesis import HealthCheck, given, seed, settings

    from toolchain.errors import EdgeyardError, MissingTool
    from toolchain.model import load_model

    data, names = original.read_bytes(), itertools.count()
    outcomes = {"loaded": 0, "clean error": 0}

    def case(mutation):
        path = folder / f"case{next(names)}{original.suffix}"  # a new name: nothing cached by path
        path.write_bytes(mutate(data, mutation))
        try:
            load_model(path)
            outcomes["loaded"] += 1
        except MissingTool:
            raise
        except EdgeyardError as err:
            assert err.exit_code in (1, 2) and "\n" not in str(err).strip(), str(err)
            outcomes["clean error"] += 1
        finally:
            path.unlink()

    deadline = time.monotonic() + FUZZ_SECONDS
    for round_seed in itertools.count():
        if time.monotonic() >= deadline:
            break
        run = settings(max_examples=EXAMPLES_PER_ROUND, deadline=None, database=None,
                       suppress_health_check=list(HealthCheck))(seed(round_seed)(given(_mutations())(case)))
        run()
    return next(names), outcomes


@pytest.mark.parametrize("fixture, mutate", [("tiny_tflite", _mutate), ("tiny_onnx", _mutate),
                                             ("tiny_keras", _mutate_keras)])
def test_mutated_models_load_or_fail_cleanly(fixture, mutate, request, tmp_path):
    original = request.getfixturevalue(fixture)
    started = time.monotonic()
    executions, outcomes = _fuzz(original, mutate, tmp_path)
    print(f"\nfuzz {original.suffix}: {executions} executions in {time.monotonic() - started:.0f} s: {outcomes}")
    assert executions >= EXAMPLES_PER_ROUND and outcomes["clean error"] > 0
