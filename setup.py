"""Packaging hook: a wheel carries templates/, targets/ and firmware/ inside the package (toolchain/_assets),
so a non-editable `pip install .` finds them (toolchain/paths.py). Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ASSET_DIRS = ("templates", "targets", "firmware")


class BuildPyWithAssets(build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads them from the checkout
            return
        assets = Path(self.build_lib, "toolchain", "_assets")
        for name in ASSET_DIRS:
            shutil.copytree(Path(__file__).parent / name, assets / name, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithAssets})
