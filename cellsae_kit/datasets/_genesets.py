"""``datasets.genesets``: gene sets as decoupler networks, from the bundled offline resources or the user's files."""

from __future__ import annotations

import gzip
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).parent / "data"
BUNDLED = {"go_bp": "go_bp_human.tsv.gz", "progeny": "progeny_human.tsv.gz"}
COLUMNS = ["source", "target", "weight"]
# Gene symbols such as "NA" or "NULL" must stay names; only empty cells count as missing.
READ_OPTIONS = {"dtype": {"source": str, "target": str}, "keep_default_na": False, "na_values": [""]}


def genesets(
    name_or_source: str | Path | pd.DataFrame = "go_bp",
    *,
    min_size: int | None = 10,
    max_size: int | None = 500,
) -> pd.DataFrame:
    """Gene sets (or weighted gene programmes) in decoupler's network format, available offline.

    Two resources ship with the package (built by ``scripts/build_genesets.py`` from Debian's Bioconductor
    packages; sources, versions, checksums and licences in ``cellsae_kit/datasets/data/PROVENANCE.md``):

    ``"go_bp"``
        Human GO Biological Process (GO release 2022-07-01, Entrez Gene 2022-09), annotations propagated to
        every ancestor term, terms with 10 to 500 genes; ``source`` is the term name, ``weight`` is 1, and a
        ``go_id`` column keeps the GO identifier. GO is CC BY 4.0.
    ``"progeny"``
        Human PROGENy pathway footprints (14 pathways, the 500 most significant genes each, as decoupler's
        ``op.progeny(top=500)``) with signed weights and a ``p_value`` column. Apache-2.0.

    Online, ``decoupler.op`` gives many more resources (``dc.op.hallmark()``, ``dc.op.collectri()``,
    ``dc.op.progeny()`` ...); their result can be passed here as a DataFrame to be checked and size-filtered.

    Parameters
    ----------
    name_or_source
        ``"go_bp"`` or ``"progeny"``; a path to a GMT file (``.gmt``: name, description, then genes, separated by
        tabs); a path to a table (``.tsv``, ``.csv``, optionally ``.gz``) with columns ``source``, ``target`` and
        optionally ``weight``; or such a DataFrame.
    min_size, max_size
        Keep gene sets with at least ``min_size`` and at most ``max_size`` genes (``None``: no bound). Gene sets
        that are too small give noisy enrichment scores; very large ones are too general to name a feature.

    Returns
    -------
    One row per gene set and gene: ``source`` (gene set name), ``target`` (gene symbol), ``weight`` (float, 1
    for unweighted sets), followed by any further columns of the input. Duplicate (``source``, ``target``) pairs
    are dropped, as decoupler's methods require. The bundled resources are read once and cached; each call
    returns a fresh copy that is safe to modify.

    Examples
    --------
    >>> import cellsae_kit as csk
    >>> go = csk.datasets.genesets("go_bp")
    >>> go.columns.tolist()
    ['source', 'target', 'weight', 'go_id']
    >>> sorted(go.loc[go["source"] == "carbon dioxide transport", "target"])[:4]
    ['AQP1', 'AQP4', 'AQP5', 'AQP6']
    >>> csk.datasets.genesets("progeny")["source"].nunique()
    14
    """
    for bound, value in (("min_size", min_size), ("max_size", max_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1):
            raise ValueError(f"{bound}={value!r} must be a positive whole number of genes, or None for no bound.")
    if min_size is not None and max_size is not None and min_size > max_size:
        raise ValueError(f"min_size={min_size} is larger than max_size={max_size}; no gene set could be kept.")

    if isinstance(name_or_source, pd.DataFrame):
        net, what = validate_net(name_or_source, "the DataFrame"), "the DataFrame"
    elif isinstance(name_or_source, str) and name_or_source in BUNDLED:
        net, what = _bundled(name_or_source).copy(), f"genesets({name_or_source!r})"
    elif isinstance(name_or_source, str | Path):
        path = Path(name_or_source)
        if not path.is_file():
            raise ValueError(
                f"{str(name_or_source)!r} is neither a bundled gene set collection ({', '.join(map(repr, BUNDLED))})"
                " nor an existing file; pass one of those names, or the path to a GMT or TSV/CSV file."
            )
        net, what = read_file(path), str(path)
    else:
        raise TypeError(
            f"Gene sets cannot be read from a {type(name_or_source).__name__}; pass a name "
            f"({', '.join(map(repr, BUNDLED))}), a path to a GMT or TSV/CSV file, or a DataFrame."
        )

    sizes = net.groupby("source", sort=False)["target"].size()
    keep = np.ones(len(sizes), dtype=bool)
    if min_size is not None:
        keep &= (sizes >= min_size).to_numpy()
    if max_size is not None:
        keep &= (sizes <= max_size).to_numpy()
    if not keep.any():
        raise ValueError(
            f"No gene set of {what} has between {min_size} and {max_size} genes (they have "
            f"{sizes.min()} to {sizes.max()}); widen min_size/max_size, or use None for no bound."
        )
    net = net[net["source"].isin(sizes.index[keep])]
    return net.reset_index(drop=True)


@cache
def _bundled(name: str) -> pd.DataFrame:
    # Parsing 450k GO rows takes half a second; the cache keeps repeated annotation calls fast.
    net = pd.read_csv(DATA / BUNDLED[name], sep="\t", **READ_OPTIONS)
    net["weight"] = net["weight"].astype(np.float64)
    return net


def read_file(path: Path) -> pd.DataFrame:
    r"""Read gene sets from a GMT file or a TSV/CSV table and validate them (see :func:`genesets`).

    Parameters
    ----------
    path
        A ``.gmt`` file, or a table (``.tsv``, ``.txt``, ``.csv``, each optionally ``.gz``).

    Returns
    -------
    The validated network.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from cellsae_kit.datasets._genesets import read_file
    >>> path = Path(tempfile.mkdtemp()) / "sets.gmt"
    >>> _ = path.write_text("T cell\tmy notes\tCD3E\tCD3D\nB cell\t\tCD19\tMS4A1\n")
    >>> read_file(path)
       source target  weight
    0  T cell   CD3E     1.0
    1  T cell   CD3D     1.0
    2  B cell   CD19     1.0
    3  B cell  MS4A1     1.0
    """
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else ""
    if kind == ".gmt":
        return _read_gmt(path)
    if kind in (".tsv", ".txt", ".csv"):
        try:
            table = pd.read_csv(path, sep="," if kind == ".csv" else "\t", **READ_OPTIONS)
        except pd.errors.EmptyDataError:
            raise ValueError(
                f"{path} is empty; it needs a header with source and target and one row per gene."
            ) from None
        return validate_net(table, str(path))
    raise ValueError(
        f"{path} has an unknown file type {''.join(path.suffixes)!r}; use .gmt for a GMT file, or .tsv/.csv "
        "(optionally .gz) for a table with source, target and optional weight columns."
    )


def _read_gmt(path: Path) -> pd.DataFrame:
    # Split on tabs only: GMT names ("T cell activation") may hold spaces, unlike decoupler's read_gmt assumes.
    rows = []
    with gzip.open(path, "rt") if path.suffix.lower() == ".gz" else open(path) as handle:
        for number, line in enumerate(handle, start=1):
            fields = [f.strip() for f in line.rstrip("\r\n").split("\t")]
            if not any(fields):
                continue
            genes = [g for g in fields[2:] if g]
            if not fields[0] or not genes:
                raise ValueError(
                    f"Line {number} of {path} has no gene set name or no genes. A GMT line is: name, description "
                    "(may be empty), then the genes, separated by tabs."
                )
            rows += [(fields[0], gene) for gene in genes]
    if not rows:
        raise ValueError(f"{path} is empty; a GMT file has one gene set per line: name, description, genes.")
    return validate_net(pd.DataFrame(rows, columns=["source", "target"]), str(path))


def validate_net(net: pd.DataFrame, what: str = "the network") -> pd.DataFrame:
    """Check a decoupler network and return a clean copy (string names, float weights, no duplicate pairs).

    Parameters
    ----------
    net
        DataFrame with columns ``source``, ``target`` and optionally ``weight`` (1 where missing).
    what
        How errors name the input.

    Returns
    -------
    A copy with ``source``, ``target``, ``weight`` first, then the other columns.

    Examples
    --------
    >>> import pandas as pd
    >>> from cellsae_kit.datasets._genesets import validate_net
    >>> validate_net(pd.DataFrame({"source": ["A", "A", "A"], "target": ["g1", "g2", "g1"]}))
      source target  weight
    0      A     g1     1.0
    1      A     g2     1.0
    """
    missing = [c for c in ("source", "target") if c not in net.columns]
    if missing:
        raise ValueError(
            f"{what} lacks the column(s) {missing} (it has {list(map(str, net.columns))}). Gene sets need one row "
            "per gene with the set in 'source' and the gene in 'target'; rename yours, e.g. "
            "net.rename(columns={'term': 'source', 'gene': 'target'})."
        )
    if net.empty:
        raise ValueError(f"{what} has no rows; it needs one row per gene set and gene.")
    net = net.copy()
    if "weight" not in net.columns:
        net["weight"] = 1.0
    for column in COLUMNS:
        bad = net[column].isna() | (net[column].astype(str).str.strip() == "")
        if bad.any():
            raise ValueError(
                f"{what} has {int(bad.sum())} row(s) with a missing {column!r} (first at row {int(np.argmax(bad))}); "
                "drop or fill them, e.g. net.dropna(subset=['source', 'target', 'weight'])."
            )
    try:
        net["weight"] = net["weight"].astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{what} has non-numeric values in 'weight'; weights must be numbers (1 for plain sets)."
        ) from None
    if not np.isfinite(net["weight"]).all():
        raise ValueError(f"{what} has infinite weights; weights must be finite numbers.")
    net["source"] = net["source"].astype(str)
    net["target"] = net["target"].astype(str)
    pairs = net.drop_duplicates(["source", "target", "weight"])
    conflicting = pairs.duplicated(["source", "target"], keep=False)
    if conflicting.any():
        first = pairs[conflicting].iloc[0]
        raise ValueError(
            f"{what} gives gene {first['target']!r} in set {first['source']!r} (and {int(conflicting.sum()) - 1} "
            "more) different weights; keep one weight per gene and set, e.g. "
            "net.groupby(['source', 'target'], as_index=False)['weight'].mean()."
        )
    others = [c for c in pairs.columns if c not in COLUMNS]
    return pairs[COLUMNS + others].reset_index(drop=True)
