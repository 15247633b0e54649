"""Check a set-up before a workshop or a first analysis: ``python -m cellsae_kit.check``.

It prints the versions of Python and of the packages the kit works with, loads the data set the tutorials use
(``scanpy.datasets.pbmc68k_reduced``, bundled with scanpy, no download) and the kit's bundled gene sets, and
trains a tiny SAE for a few seconds. Every item is reported as ``OK`` or ``FAIL``; a failing item says what is
wrong and how to fix it (for a missing package, the ``pip install`` line). The exit code is 0 when every item
passed and 1 otherwise.

This module imports nothing but the standard library at import time, and the package's ``__init__`` lets
``python -m cellsae_kit.check`` run even when one of the kit's dependencies is missing, so that the check can
name it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

MIN_PYTHON = (3, 11)

# (import name, distribution name on PyPI, what the kit needs it for)
PACKAGES: tuple[tuple[str, str, str], ...] = (
    ("cellsae_kit", "cellsae_kit", "the kit itself"),
    ("torch", "torch", "training the SAEs"),
    ("anndata", "anndata", "the data container"),
    ("scanpy", "scanpy", "the tutorials' data and plots"),
    ("decoupler", "decoupler", "pathway annotation"),
    ("mudata", "mudata", "multi-omics data"),
    ("muon", "muon", "multi-omics tools"),
)


@dataclass(frozen=True)
class CheckItem:
    """The outcome of one item of the set-up check.

    Parameters
    ----------
    name
        What was checked, such as ``"torch"`` or ``"training"``.
    ok
        Whether it passed.
    detail
        What was found: a version, a shape, a time, or what went wrong.
    fix
        How to fix a failing item (empty for a passing one).
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def __str__(self) -> str:
        line = f"{'OK  ' if self.ok else 'FAIL'}  {self.name:<12} {self.detail}"
        return line if self.ok or not self.fix else f"{line}\n      fix: {self.fix}"


def _requirement(distribution: str) -> str:
    """Return the requirement of ``cellsae_kit`` on ``distribution`` (``muon>=0.1.6``), or its bare name."""
    try:
        requires = importlib.metadata.requires("cellsae_kit") or []
    except importlib.metadata.PackageNotFoundError:
        requires = []
    for line in requires:
        if ";" in line:  # an optional extra (test, docs)
            continue
        name = re.split(r"[<>=!~\[ ]", line, maxsplit=1)[0]
        if name.lower().replace("-", "_") == distribution.lower().replace("-", "_"):
            return line.replace(" ", "")
    return distribution


def _version(module: object, distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(module, "__version__", "unknown version"))


def check_python(version_info: Sequence[int] | None = None) -> CheckItem:
    """Check that Python is recent enough for the kit.

    Parameters
    ----------
    version_info
        The version to check, such as ``(3, 11, 7)``; default: the running interpreter's.

    Returns
    -------
    The outcome; a failing one names the Python the kit needs.

    Examples
    --------
    >>> from cellsae_kit.check import check_python
    >>> check_python((3, 9, 1)).ok
    False
    """
    version_info = tuple(sys.version_info[:3] if version_info is None else version_info)
    text = ".".join(str(part) for part in version_info)
    if version_info[:2] >= MIN_PYTHON:
        return CheckItem("python", True, f"{text} ({platform.python_implementation()})")
    need = ".".join(str(part) for part in MIN_PYTHON)
    return CheckItem(
        "python", False, f"{text} is too old: the kit needs Python >= {need}", f"install Python {need} or newer"
    )


def check_package(module_name: str, distribution: str | None = None, purpose: str = "") -> CheckItem:
    """Check that a package imports, and report its version.

    Parameters
    ----------
    module_name
        The name to import, such as ``"muon"``.
    distribution
        The package's name on PyPI, for the fix; default: ``module_name``.
    purpose
        What the kit needs the package for, said when it is missing.

    Returns
    -------
    The outcome: the version, or what went wrong with the ``pip install`` line that fixes it.

    Examples
    --------
    >>> from cellsae_kit.check import check_package
    >>> check_package("numpy").ok
    True
    >>> print(check_package("no_such_package_xyz").fix)
    pip install 'no_such_package_xyz'
    """
    distribution = distribution or module_name
    requirement = _requirement(distribution)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        why = f"missing ({purpose})" if purpose and isinstance(error, ModuleNotFoundError) else "does not import"
        if error.name not in (None, module_name) and isinstance(error, ModuleNotFoundError):
            # The package is there but one of its own dependencies is not: name that one.
            return CheckItem(
                module_name,
                False,
                f"does not import: it needs {error.name!r}, which is missing",
                f"pip install '{error.name}' (or reinstall: pip install --force-reinstall '{requirement}')",
            )
        return CheckItem(module_name, False, f"{why}: {error}", f"pip install '{requirement}'")
    except Exception as error:  # noqa: BLE001 - any failure at import time is what the user needs to see
        return CheckItem(
            module_name,
            False,
            f"fails at import: {type(error).__name__}: {error}",
            f"reinstall it: pip install --force-reinstall '{requirement}'",
        )
    return CheckItem(module_name, True, _version(module, distribution))


def check_data() -> CheckItem:
    """Check that the tutorials' data loads offline: ``pbmc68k_reduced`` and the bundled gene sets.

    Returns
    -------
    The outcome, with the data set's shape and the number of gene-set terms.

    Examples
    --------
    >>> from cellsae_kit.check import check_data
    >>> check_data().ok
    True
    """
    try:
        import scanpy as sc

        import cellsae_kit.datasets as datasets

        adata = sc.datasets.pbmc68k_reduced()
        if "X_pca" not in adata.obsm:
            raise ValueError("pbmc68k_reduced has no obsm['X_pca']")
        go = datasets.genesets("go_bp")
    except Exception as error:  # noqa: BLE001 - report whatever went wrong
        return _failed(
            "data",
            error,
            "reinstall scanpy and the kit, which ship the data: pip install --force-reinstall scanpy cellsae_kit",
        )
    return CheckItem(
        "data",
        True,
        f"pbmc68k_reduced {adata.n_obs} cells x {adata.n_vars} genes; GO BP {go['source'].nunique()} terms",
    )


def _failed(name: str, error: Exception, fix: str) -> CheckItem:
    """Return a failed item: skipped after a missing package (the version check names it), else with ``fix``."""
    if isinstance(error, ImportError):
        return CheckItem(name, False, f"skipped: {error}", "fix the missing packages above first")
    return CheckItem(name, False, f"{type(error).__name__}: {error}", fix)


def check_training(n_epochs: int = 10, slow_seconds: float = 60.0) -> CheckItem:
    """Train a tiny SAE on ``pbmc68k_reduced`` (a few seconds on a laptop CPU) and check its result.

    Parameters
    ----------
    n_epochs
        Epochs of the tiny SAE (32 features, k = 4, on the 50 PCA dimensions; progress bars off).
    slow_seconds
        A training that takes longer than this passes with a note that the machine is slow.

    Returns
    -------
    The outcome, with the device, the time and the validation FVU.

    Examples
    --------
    >>> from cellsae_kit.check import check_training
    >>> check_training(n_epochs=2).ok
    True
    """
    try:
        import numpy as np
        import scanpy as sc

        import cellsae_kit.tl as tl

        adata = sc.datasets.pbmc68k_reduced()
        start = time.perf_counter()
        tl.sae(adata, "X_pca", n_features=32, k=4, n_epochs=n_epochs, progress=False)
        seconds = time.perf_counter() - start
        stored = adata.uns["sae"]
        fvu = float(stored["metrics"]["fvu_validation"])
        if not np.isfinite(fvu) or adata.obsm["X_sae"].shape != (adata.n_obs, 32):
            raise ValueError(f"the trained SAE is broken: validation FVU {fvu}, codes {adata.obsm['X_sae'].shape}")
    except Exception as error:  # noqa: BLE001 - report whatever went wrong
        return _failed(
            "training",
            error,
            "reinstall torch and the kit (pip install --force-reinstall torch cellsae_kit); if it persists, "
            "report the message with the versions above",
        )
    device = stored["params"].get("device", "auto")
    detail = f"32 features on {device} in {seconds:.1f} s, validation FVU {fvu:.2f}"
    if seconds > slow_seconds:
        detail += " (slow: the exercises will take several minutes each; close other programs)"
    return CheckItem("training", True, detail)


def check(
    *,
    n_epochs: int = 10,
    packages: Sequence[tuple[str, str, str]] = PACKAGES,
    out: TextIO | None = None,
) -> list[CheckItem]:
    """Run the whole set-up check and print one line per item.

    Parameters
    ----------
    n_epochs
        Epochs of the tiny training (see :func:`check_training`).
    packages
        ``(import name, PyPI name, purpose)`` of each package to check.
    out
        Where to print; default ``sys.stdout``; ``None`` prints to ``sys.stdout`` at call time.

    Returns
    -------
    The items, in the order printed; the set-up is fine when every ``item.ok``.

    Examples
    --------
    >>> import io
    >>> from cellsae_kit.check import check
    >>> items = check(n_epochs=2, out=io.StringIO())
    >>> all(item.ok for item in items)
    True
    """
    out = sys.stdout if out is None else out
    steps: list[Callable[[], CheckItem]] = [check_python]
    steps += [lambda m=m, d=d, p=p: check_package(m, d, p) for m, d, p in packages]
    steps += [check_data, lambda: check_training(n_epochs)]
    print("cellsae_kit set-up check", file=out)
    items = []
    for step in steps:
        item = step()
        items.append(item)
        print(item, file=out, flush=True)
    failed = [item.name for item in items if not item.ok]
    if failed:
        print(f"{len(failed)} problem(s): {', '.join(failed)}. Fix them as shown and run the check again.", file=out)
    else:
        print("All checks passed: you are ready.", file=out)
    return items


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check from the command line: ``python -m cellsae_kit.check [--epochs N]``.

    Parameters
    ----------
    argv
        The arguments, without the program name; ``None`` reads ``sys.argv``.

    Returns
    -------
    0 when every item passed, 1 otherwise.
    """
    parser = argparse.ArgumentParser(prog="python -m cellsae_kit.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the tiny training (default: 10)")
    args = parser.parse_args(argv)
    items = check(n_epochs=args.epochs)
    return 0 if all(item.ok for item in items) else 1


if __name__ == "__main__":
    sys.exit(main())
