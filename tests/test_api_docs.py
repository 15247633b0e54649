"""The API page builds without a broken cross-reference, as ``make book`` (nitpicky, warnings as errors) needs."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]


def test_api_page_builds_nitpicky_without_warnings(tmp_path):
    pytest.importorskip("myst_parser")
    book = yaml.safe_load((ROOT / "book" / "_config.yml").read_text())["sphinx"]
    settings = {
        key: value
        for key, value in book["config"].items()
        if key.startswith(("autodoc_", "autosummary_", "napoleon_", "nitpick_")) or key == "suppress_warnings"
    }
    extensions = ["myst_parser", *book["extra_extensions"]]
    (tmp_path / "conf.py").write_text(
        f"extensions = {extensions!r}\n"
        + "".join(f"{key} = {value!r}\n" for key, value in settings.items())
        + "myst_enable_extensions = ['colon_fence']\n"
    )
    shutil.copy(ROOT / "book" / "api.md", tmp_path / "index.md")
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "dummy", "-n", "-q", "-W", "--keep-going", str(tmp_path),
         str(tmp_path / "_build")],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert build.returncode == 0, f"Sphinx warned on book/api.md (fix the docstring references):\n{build.stderr}"
