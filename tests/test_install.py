"""A non-editable install (a wheel's layout: the assets inside the package) lists targets and builds for host."""

import os
import subprocess
import sys

from conftest import PROJECT_ROOT


def test_non_editable_install_finds_its_assets_and_builds(tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(site), str(PROJECT_ROOT)], check=True, capture_output=True, cwd=tmp_path)
    assert (site / "toolchain" / "_assets" / "templates" / "report.md.j2").is_file()
    probe = (
        "import toolchain.paths as paths\n"
        "from toolchain import BuildOptions, build\n"
        "from toolchain.target.profile import target_table\n"
        "assert paths.ASSETS_ROOT == paths.PACKAGE_DIR / '_assets', paths.ASSETS_ROOT\n"
        "assert 'rpi4' in target_table()\n"
        "result = build(BuildOptions(target='host', backend='litert', out='out'))\n"
        "assert result.report['validation']['passed'], result.report['validation']\n"
    )
    # From a folder outside the checkout, with only the installed copy on the path.
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "report.md").is_file()
