"""Write ``book/api.md`` from the ``__all__`` of each public namespace (run after adding a public function).

Usage::

    python scripts/api_page.py
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import cellsae_kit as csk

SECTIONS = [
    ("Tools: `csk.tl`", "cellsae_kit.tl", "Read and write AnnData, scanpy-style."),
    (
        "Plotting: `csk.pl`",
        "cellsae_kit.pl",
        "Draw what the tools stored, with scanpy's plotting parameters.",
    ),
    (
        "Reading what the kit stored: `csk.get`",
        "cellsae_kit.get",
        "One reader for a stored SAE (as `scanpy.get`); every tool, plot and the explorer goes through it.",
    ),
    (
        "Dictionaries that travel: `csk.io`",
        "cellsae_kit.io",
        "A trained SAE with its input definition, names and provenance in one folder; `csk.tl.encode` applies it.",
    ),
    ("Data: `csk.datasets`", "cellsae_kit.datasets", "Simulations with ground truth and bundled offline gene sets."),
    ("Explorer: `csk.widgets`", "cellsae_kit.widgets", "Interactive feature browsing in Jupyter (ipywidgets)."),
    ("The SAE engine: `csk.models`", "cellsae_kit.models", "Plain arrays and tensors; never imports AnnData."),
]
HEADER = """# API reference

Import the kit as `import cellsae_kit as csk`. This page is written by `scripts/api_page.py` from each namespace's
`__all__`; a test checks that it lists every public name.

Where a change goes: the fit options are the fields of one dataclass, `csk.models.FitConfig` (the command line,
`csk.tl.sae`, stability and consensus derive from it); what a tool stored is read through one reader,
`csk.get.sae(adata, key)`, which also owns the rule for adding columns to the feature table; `csk.models` is the
SAE engine in pure torch/numpy, `csk.tl` reads and writes AnnData/MuData (helpers shared by several tools live in
`tl/_shared.py`, `tl/_input.py` and `tl/_store.py`, never in a sibling tool), and `csk.pl` draws from the reader.
"""


def section(title: str, module: str, blurb: str) -> str:
    mod = __import__(module, fromlist=["__all__"])
    names = sorted(mod.__all__, key=str.lower)
    lines = [f"## {title}", "", blurb, "", "```{eval-rst}", f".. currentmodule:: {module}", ""]
    lines += [".. autosummary::", "   :nosignatures:", ""] + [f"   {n}" for n in names] + [""]
    for name in names:
        obj = getattr(mod, name)
        if inspect.isclass(obj):
            # Records (named tuples, dataclasses) describe their fields in the docstring already.
            methods = any(
                not n.startswith("_") and callable(v) or isinstance(v, property) for n, v in vars(obj).items()
            )
            record = hasattr(obj, "_fields") or (dataclasses.is_dataclass(obj) and not methods)
            lines += [f".. autoclass:: {name}", "   :no-members:" if record else "   :members:", ""]
        elif callable(obj):
            lines += [f".. autofunction:: {name}", ""]
        else:  # a constant, such as the names of the activations
            lines += [f".. autodata:: {name}", "   :no-value:", ""]
    return "\n".join(lines).rstrip() + "\n```\n"


def main() -> None:
    parts = [HEADER] + [section(*s) for s in SECTIONS if hasattr(csk, s[1].split(".")[1])]
    path = Path(__file__).parents[1] / "book" / "api.md"
    path.write_text("\n".join(parts))
    print(f"written {path}")


if __name__ == "__main__":
    main()
