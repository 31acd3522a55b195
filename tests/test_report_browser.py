"""report.html and coverage.html in headless Chromium (slow): a host build, a microcontroller build and a
coverage run, each rendered, screenshot under build/screenshots/ (kept out of git) and its DOM checked for
the sections; Chromium's every request goes through a proxy on loopback that this test owns, and the test
fails if any request reaches it (nothing may leave the file)."""

import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, invoke

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = PROJECT_ROOT / "build" / "screenshots"
# Chromium's own background calls (network time, component updates) reach the proxy whatever the page is.
BROWSER_OWN = (b"google.com", b"gvt1.com", b"googleapis.com", b"gstatic.com")


@pytest.fixture(scope="module")
def proxy():
    """A TCP listener standing in for the network: the list of connections it received."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    seen, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            request = conn.recv(300)
            if not any(host in request for host in BROWSER_OWN):
                seen.append(request)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], seen
    stop.set()
    thread.join()
    server.close()


def _open(page: Path, shot: str, port: int, tmp_path: Path) -> str:
    """The page's DOM after Chromium rendered it; a screenshot of it in build/screenshots/<shot>.png."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (./bootstrap.sh installs Debian's chromium)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              f"--proxy-server=127.0.0.1:{port}", "--proxy-bypass-list=<-loopback>", "--no-first-run",
              "--disable-background-networking", "--disable-features=NetworkTimeServiceQuerying", "--disable-component-update", "--disable-sync",
              f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2600"]
    subprocess.run([*common, f"--screenshot={SHOTS / shot}.png", page.as_uri()], capture_output=True, timeout=120,
                   check=True)
    assert (SHOTS / f"{shot}.png").stat().st_size > 10_000
    return subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                          check=True).stdout


def _sections(dom: str) -> list[str]:
    import re

    return re.findall(r'<section id="([^"]+)"', dom)


def test_host_build_report_renders(tiny_tflite, tmp_path, proxy):
    port, seen = proxy
    out = tmp_path / "host"
    assert invoke("build", "--target", "host", "--backend", "litert", "--model", str(tiny_tflite), "--out",
                  str(out)).returncode == 0
    dom = _open(out / "report.html", "host-report", port, tmp_path)
    assert {"summary", "latency", "graph", "artifacts"} <= set(_sections(dom)), _sections(dom)
    assert "<svg" in dom and seen == []


def test_microcontroller_build_report_renders(tmp_path, proxy):
    port, seen = proxy
    out = tmp_path / "mcu"
    # The default model: the kernels backend quantizes it to int8 with its own data (quantization drawn too).
    built = invoke("build", "--target", "nucleo-l4r5zi", "--backend", "kernels", "--out", str(out))
    assert built.returncode == 0, built.stderr
    dom = _open(out / "report.html", "microcontroller-report", port, tmp_path)
    assert {"summary", "latency", "layers", "memory", "graph", "quantization"} <= set(_sections(dom)), _sections(dom)
    assert 'id="arena"' in dom and seen == []


def test_coverage_page_renders(tiny_tflite, tiny_onnx, tmp_path, proxy):
    port, seen = proxy
    models = tmp_path / "models"
    models.mkdir()
    for model in (tiny_tflite, tiny_onnx):
        shutil.copy(model, models / model.name)
    out = tmp_path / "coverage"
    invoke("coverage", str(models), "--targets", "host,nucleo-l4r5zi", "--out", str(out), "--jobs", "1")
    dom = _open(out / "coverage.html", "coverage", port, tmp_path)
    assert _sections(dom) == ["coverage"] and "<td class=" in dom and seen == []
