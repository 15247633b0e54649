"""Package-wide conventions: signatures, docstrings, and the two install routes agreeing."""

import inspect
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

import cellsae_kit as csk

ROOT = Path(__file__).parents[1]
MODULES = [csk.tl, csk.pl, csk.get, csk.io, csk.datasets, csk.models] + (
    [csk.widgets] if hasattr(csk, "widgets") else []
)
PUBLIC = [(f"{mod.__name__}.{name}", getattr(mod, name)) for mod in MODULES for name in mod.__all__]
TOOLS = [(name, f) for name, f in PUBLIC if name.startswith(("cellsae_kit.tl.", "cellsae_kit.pl."))]


@pytest.mark.parametrize(("name", "func"), TOOLS)
def test_scanpy_signature_conventions(name, func):
    params = list(inspect.signature(func).parameters.values())
    # muon's name for a MuData-only first argument is mdata
    assert params[0].name in ("adata", "mdata"), f"{name}: adata must come first"
    positional = [p for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert len(positional) <= 3, f"{name}: at most 3 positional parameters"
    for p in params:
        if p.name in ("copy", "key_added", "layer"):
            assert p.kind is inspect.Parameter.KEYWORD_ONLY, f"{name}: {p.name} must be keyword-only"
        if p.name == "copy":
            assert p.default is False


@pytest.mark.parametrize(("name", "obj"), [(n, o) for n, o in PUBLIC if callable(o)])
def test_public_api_is_documented_with_an_example(name, obj):
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{name} has no docstring"
    assert "Examples" in doc, f"{name} has no example"
    if inspect.isfunction(obj):
        hints = obj.__annotations__
        assert "return" in hints, f"{name} lacks a return type hint"


def test_api_reference_lists_every_public_name():
    api = (ROOT / "book" / "api.md").read_text()
    for mod in MODULES:
        section = api.split(f".. currentmodule:: {mod.__name__}\n", 1)
        assert len(section) == 2, f"book/api.md has no section for {mod.__name__}"
        body = section[1].split("```", 1)[0]
        missing = [name for name in mod.__all__ if not re.search(rf"^   {name}$", body, re.M)]
        assert not missing, f"book/api.md does not list {mod.__name__}.{missing}"


def _name(req: str) -> str:
    return re.sub(r"[-_.]+", "-", Requirement(req).name).lower()


def test_environment_yml_matches_pyproject_and_constraints():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    ranges = {_name(d): Requirement(d).specifier for d in wanted}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pinned = {_name(line): Requirement(line) for line in pip_section if not line.startswith("-")}
    assert set(pinned) == set(ranges)
    constraints = {
        _name(line): line.split("==")[1].strip()
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert constraints["torch"] == "2.13.0"
    for name, req in pinned.items():
        version = next(iter(req.specifier)).version
        assert version == constraints[name], f"{name}: environment.yml and constraints.txt disagree"
        assert ranges[name].contains(version, prereleases=True), f"{name} {version} is outside pyproject's range"


def test_namespaces_import_as_modules():
    import cellsae_kit.models
    import cellsae_kit.pl
    import cellsae_kit.tl

    assert cellsae_kit.tl is csk.tl and cellsae_kit.models is csk.models and cellsae_kit.pl is csk.pl
    assert csk.__version__


def test_every_notebook_is_a_page_of_the_book():
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    files = {chapter["file"] for part in toc["parts"] for chapter in part["chapters"]}
    notebooks = {f"tutorials/{path.stem}" for path in (ROOT / "notebooks").glob("*.ipynb")}
    assert notebooks <= files, f"notebooks missing from book/_toc.yml: {sorted(notebooks - files)}"


def test_import_leaves_plotting_and_heavy_libraries_for_later():
    # Training and streaming need torch, anndata and the stores only; a fresh interpreter shows what importing loads.
    heavy = ["matplotlib", "scanpy", "sklearn", "decoupler", "ipywidgets", "scipy.stats", "scipy.optimize"]

    def loaded(code: str) -> str:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()

    assert loaded(f"import sys, cellsae_kit; print([m for m in {heavy!r} if m in sys.modules])") == "[]"
    assert loaded("import sys, cellsae_kit as csk; csk.pl.features; print('matplotlib' in sys.modules)") == "True"


# Private modules that several tools of one subpackage share; anything else private stays inside its module.
SHARED = {
    "cellsae_kit._docs",
    "cellsae_kit.tl._compare",
    "cellsae_kit.tl._input",
    "cellsae_kit.tl._null",
    "cellsae_kit.tl._shared",
    "cellsae_kit.tl._store",
    "cellsae_kit.tl._stream",
    "cellsae_kit.tl._terms",
    "cellsae_kit.tl._write",
}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) of every ``from ... import ...`` in a module of the package."""
    import ast

    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    parent = package.rsplit(".", 1)[0] if path.name != "__init__.py" else package.removesuffix(".__init__")
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = parent.rsplit(".", node.level - 1)[0] if node.level > 1 else parent
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((module, [alias.name for alias in node.names]))
    return found


def _subpackage(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else parts[0]


def test_no_module_imports_another_subpackages_or_a_sibling_tools_private_names():
    problems = []
    for path in sorted((ROOT / "cellsae_kit").rglob("*.py")):
        own = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for module, names in _imports(path):
            if not module.startswith("cellsae_kit") or module == own:
                continue
            private_module = any(part.startswith("_") for part in module.split(".")[1:])
            private_names = [n for n in names if n.startswith("_")]
            same_package = _subpackage(module) == _subpackage(own) and path.name != "__init__.py"
            if private_names and module not in SHARED and not (same_package and own.startswith("cellsae_kit.models")):
                problems.append(f"{own} imports private {private_names} from {module}")
            elif private_module and module not in SHARED and not (own + ".").startswith(module.rsplit(".", 1)[0] + "."):
                problems.append(f"{own} imports from {module}, a private module of another subpackage")
            elif private_module and own.startswith("cellsae_kit.tl._") and module.startswith("cellsae_kit.tl._"):
                if module not in SHARED:
                    problems.append(
                        f"tool {own} imports from the sibling tool {module}; move what both need to tl/_shared.py"
                    )
    assert not problems, "\n".join(problems)
