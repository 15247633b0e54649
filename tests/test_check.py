"""The set-up check (``python -m cellsae_kit.check``): success, and a missing dependency that names its fix."""

import io
import subprocess
import sys
from pathlib import Path

import pytest

from cellsae_kit import check as setup_check

ROOT = Path(__file__).parents[1]


def test_check_passes():
    out = io.StringIO()
    items = setup_check.check(n_epochs=2, out=out)
    text = out.getvalue()
    assert all(item.ok for item in items), text
    names = [item.name for item in items]
    assert names == ["python", *[p[0] for p in setup_check.PACKAGES], "data", "training"]
    assert "All checks passed" in text
    for item in items[1:-2]:
        assert item.detail[0].isdigit(), item  # a version number
    assert "pbmc68k_reduced 700 cells x 765 genes" in text
    assert setup_check.main(["--epochs", "2"]) == 0


def test_missing_package_names_the_fix(monkeypatch):
    # A module set to None in sys.modules cannot be imported: this is how a missing muon looks to the check.
    monkeypatch.setitem(sys.modules, "muon", None)
    out = io.StringIO()
    items = setup_check.check(n_epochs=2, out=out)
    text = out.getvalue()
    (muon,) = [item for item in items if item.name == "muon"]
    assert not muon.ok
    assert muon.fix.startswith("pip install 'muon")
    assert "FAIL  muon" in text and "fix: pip install 'muon" in text
    assert "1 problem(s): muon" in text
    assert all(item.ok for item in items if item.name != "muon")
    assert setup_check.main(["--epochs", "2"]) == 1


def test_missing_dependency_of_a_package(monkeypatch):
    def broken(name, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'legacy_api_wrap'", name="legacy_api_wrap")

    monkeypatch.setattr(setup_check.importlib, "import_module", broken)
    item = setup_check.check_package("scanpy")
    assert not item.ok and "legacy_api_wrap" in item.detail and item.fix.startswith("pip install 'legacy_api_wrap'")


def test_old_python():
    item = setup_check.check_python((3, 9, 18))
    assert not item.ok and "3.9.18" in item.detail and "3.11" in item.fix
    assert setup_check.check_python((3, 11, 0)).ok


def test_failing_training_is_reported(monkeypatch):
    import cellsae_kit.tl as tl

    def fails(*args, **kwargs):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(tl, "sae", fails)
    item = setup_check.check_training(n_epochs=1)
    assert not item.ok and "out of memory" in item.detail and item.fix


@pytest.mark.parametrize("missing", ["torch", "muon"])
def test_command_line_with_a_missing_package(tmp_path, missing):
    # A fresh interpreter in which one package cannot be imported (a sitecustomize blocks it): the check still runs,
    # says what is missing and how to fix it, and exits with 1.
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {missing!r} or name.startswith({missing!r} + '.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "-m", "cellsae_kit.check", "--epochs", "1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"FAIL  {missing}" in run.stdout
    assert f"fix: pip install '{missing}" in run.stdout
    assert "Traceback" not in run.stderr
