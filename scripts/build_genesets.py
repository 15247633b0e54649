"""Build the gene sets bundled with cellsae_kit from Debian's Bioconductor packages (no network at use time).

Two resources are written to ``cellsae_kit/datasets/data/``, gzip-compressed TSV in decoupler's network format
(``source``, ``target``, ``weight``), together with ``PROVENANCE.md`` (sources, versions, dates, row counts,
SHA-256 of every output, licences):

``go_bp_human.tsv.gz``
    GO Biological Process for human: gene-term pairs propagated to every ancestor term (table ``go_bp_all`` of
    ``org.Hs.eg.sqlite``, all evidence codes), gene symbols from ``gene_info``, term names from ``GO.sqlite``.
    Terms with 10 to 500 genes are kept; ``source`` is the term name (the GO id is appended only where a name
    repeats), ``weight`` is 1 and the column ``go_id`` keeps the GO identifier.
``progeny_human.tsv.gz``
    PROGENy human model: the 500 genes with the smallest p-value per pathway (as decoupler's ``get_progeny`` /
    ``op.progeny(top=500)`` select them; ties broken by gene symbol) with their signed weights and p-values.

The inputs are the Debian packages ``r-bioc-org.hs.eg.db``, ``r-bioc-go.db`` and ``r-bioc-progeny``, fetched with
``apt-get download`` (nothing is installed) and unpacked with ``dpkg -x``. PROGENy's model is an R lazy-load
database (``data/Rdata.rdb``), read after R's lazy-load decompression with the PyPI package ``rdata``. ``rdata``
is needed by this build script only; it is NOT a dependency of cellsae_kit (install it by hand:
``pip install rdata``).

Run from the repository root (needs ``apt-get`` and ``dpkg-deb``, about a minute):

    python scripts/build_genesets.py                       # downloads the three .deb files into a temp dir
    python scripts/build_genesets.py --debs /path/to/debs  # uses .deb files downloaded before
"""

from __future__ import annotations

import argparse
import bz2
import datetime
import gzip
import hashlib
import lzma
import sqlite3
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import pandas as pd

PACKAGES = {"org.Hs.eg.db": "r-bioc-org.hs.eg.db", "GO.db": "r-bioc-go.db", "progeny": "r-bioc-progeny"}
SITE_LIBRARY = Path("usr/lib/R/site-library")
OUT = Path(__file__).parents[1] / "cellsae_kit" / "datasets" / "data"
MIN_SIZE, MAX_SIZE, PROGENY_TOP = 10, 500, 500


def fetch_debs(dest: Path) -> None:
    """Download the three Debian packages into ``dest`` (after ``apt-get update``: stale lists name gone versions)."""
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "download", *PACKAGES.values()], cwd=dest, check=True)


def unpack(debs: Path, root: Path) -> dict[str, dict[str, str]]:
    """Unpack each package's .deb into ``root``; return its file name, Debian version and SHA-256."""
    info = {}
    for rpkg, deb_name in PACKAGES.items():
        found = sorted(debs.glob(f"{deb_name}_*.deb"))
        if not found:
            raise SystemExit(f"No {deb_name}_*.deb in {debs}; get it with `apt-get download {deb_name}`.")
        deb = found[-1]
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True)
        info[rpkg] = {"deb": deb.name, "version": version.stdout.strip(), "sha256": sha256(deb)}
    return info


def sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def description(package_dir: Path) -> dict[str, str]:
    """Fields of an R package's DESCRIPTION file (continuation lines are joined)."""
    fields: dict[str, str] = {}
    last = None
    for line in (package_dir / "DESCRIPTION").read_text().splitlines():
        if line[:1].isspace() and last is not None:
            fields[last] += " " + line.strip()
        elif ":" in line:
            last, value = line.split(":", 1)
            fields[last] = value.strip()
    return fields


def unique_names(terms: pd.DataFrame) -> pd.Series:
    """Term names as gene set names; a name shared by several GO ids gets its GO id appended to stay unique."""
    repeated = terms["term"].duplicated(keep=False)
    return terms["term"].where(~repeated, terms["term"] + " (" + terms["go_id"] + ")")


def build_go_bp(library: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """GO BP gene sets from org.Hs.eg.db (propagated annotations) and GO.db (term names)."""
    con = sqlite3.connect(library / "org.Hs.eg.db" / "extdata" / "org.Hs.eg.sqlite")
    try:
        con.execute("ATTACH DATABASE ? AS go", (str(library / "GO.db" / "extdata" / "GO.sqlite"),))
        # One row per (term, gene): go_bp_all repeats a pair once per evidence code.
        pairs = pd.read_sql(
            "SELECT DISTINCT a.go_id AS go_id, t.term AS term, g.symbol AS target "
            "FROM go_bp_all a JOIN gene_info g ON a._id = g._id JOIN go.go_term t ON t.go_id = a.go_id "
            "WHERE t.ontology = 'BP'",
            con,
        )
        meta = dict(con.execute("SELECT name, value FROM metadata").fetchall())
    finally:
        con.close()
    n_pairs = len(pairs)
    sizes = pairs.groupby("go_id")["target"].nunique()
    kept = sizes.index[(sizes >= MIN_SIZE) & (sizes <= MAX_SIZE)]
    pairs = pairs[pairs["go_id"].isin(kept)]
    terms = pairs[["go_id", "term"]].drop_duplicates("go_id").reset_index(drop=True)
    terms["source"] = unique_names(terms)
    net = pairs.merge(terms[["go_id", "source"]], on="go_id")
    net["weight"] = 1
    net = net[["source", "target", "weight", "go_id"]].sort_values(["source", "target"]).reset_index(drop=True)
    stats = {
        "propagated gene-term pairs (all terms)": f"{n_pairs:,}",
        "terms with at least one gene": f"{len(sizes):,}",
        "terms kept (10-500 genes)": f"{len(kept):,}",
        "Entrez Gene date": meta.get("EGSOURCEDATE", "?"),
        "GO release (go-basic.obo)": meta.get("GOSOURCEDATE", "?"),
    }
    return net, stats


def read_lazyload(rdb: Path, name: str):
    """One object of an R lazy-load database (``.rdb`` + ``.rdx``), converted to Python by ``rdata``."""
    import warnings

    import rdata  # build-time dependency only

    warnings.filterwarnings("ignore", "Unknown file type: assumed RDS")  # the .rdx/.rdb blocks carry no RDS header

    index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress(rdb.with_suffix(".rdx").read_bytes())))
    offset, length = (int(v) for v in index["variables"][name])
    with open(rdb, "rb") as f:
        f.seek(offset)
        block = f.read(length)
    # R's lazy-load blocks: 4-byte big-endian length of the serialized object, then (compression 2 and 3) one byte
    # naming the compressor, then the compressed bytes; compression 1 is plain zlib without that byte.
    (size,) = struct.unpack(">i", block[:4])
    if int(index["compressed"][0]) == 1:
        raw = zlib.decompress(block[4:])
    else:
        kind, payload = block[4:5], block[5:]
        decompress = {b"Z": zlib.decompress, b"2": bz2.decompress, b"X": lzma.decompress, b"0": bytes}[kind]
        raw = decompress(payload)
    if len(raw) != size:
        raise ValueError(f"{rdb}: object {name!r} decompressed to {len(raw)} bytes, expected {size}.")
    return rdata.conversion.convert(rdata.parser.parse_data(raw, expand_altrep=True))


def build_progeny(library: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """PROGENy human: the top genes per pathway by p-value, with their weights."""
    model = read_lazyload(library / "progeny" / "data" / "Rdata.rdb", "model_human_full")
    model = pd.DataFrame(
        {
            "source": model["pathway"].astype(str),
            "target": model["gene"].astype(str),
            "weight": model["weight"].astype(float),
            "p_value": model["p.value"].astype(float),
        }
    )
    net = (
        model.sort_values(["source", "p_value", "target"])
        .groupby("source")
        .head(PROGENY_TOP)
        .sort_values(["source", "p_value", "target"])
        .reset_index(drop=True)
    )
    cutoff = net.groupby("source")["p_value"].max()
    tied = int((model["p_value"] <= model["source"].map(cutoff)).sum() - len(net))
    stats = {
        "genes x pathways in the full model": f"{len(model):,}",
        "pathways": f"{net['source'].nunique()}",
        "genes kept per pathway": f"{PROGENY_TOP} (smallest p-value)",
        "genes tied with a pathway's last kept p-value and left out": f"{tied}",
        "check against progeny's own test fixture": check_progeny(net, library / "progeny" / "extdata"),
    }
    return net, stats


def check_progeny(net: pd.DataFrame, extdata: Path) -> str:
    """Reproduce the package's expected scores (``progeny(human_input, top = 10)``, scaled) from our table.

    A wrong decompression, column or ordering would change them, so a mismatch stops the build.
    """
    expr = pd.read_csv(extdata / "human_input.csv", index_col=0)
    expected = pd.read_csv(extdata / "human_def_expected.csv", index_col=0)
    top = net.groupby("source").head(10).pivot(index="target", columns="source", values="weight").fillna(0)
    genes = expr.index.intersection(top.index)
    scores = expr.loc[genes].T @ top.loc[genes]
    scores = ((scores - scores.mean()) / scores.std())[expected.columns]
    error = float((scores - expected).abs().to_numpy().max())
    if error > 1e-8:
        raise SystemExit(f"PROGENy scores differ from the package's human_def_expected.csv by {error:.3g}.")
    return f"the top 10 genes per pathway reproduce `extdata/human_def_expected.csv` (max abs. difference {error:.1e})"


def write_tsv(net: pd.DataFrame, path: Path) -> None:
    """Gzip-compressed TSV with a fixed timestamp, so that rebuilding gives the same bytes."""
    text = net.to_csv(sep="\t", index=False, float_format="%.6g").encode()
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as f:
        f.write(text)


def provenance(outputs: dict[str, pd.DataFrame], stats: dict, packages: dict, library: Path, out: Path) -> str:
    """The text of PROVENANCE.md."""
    desc = {rpkg: description(library / rpkg) for rpkg in PACKAGES}
    lines = [
        "# Provenance of the bundled gene sets",
        "",
        f"Built on {datetime.date.today().isoformat()} by `scripts/build_genesets.py` (do not edit by hand; "
        'rebuild instead). Read them with `cellsae_kit.datasets.genesets("go_bp")` and '
        '`genesets("progeny")`.',
        "",
        "## Outputs",
        "",
        "| file | rows | gene sets | bytes | sha256 |",
        "|---|---|---|---|---|",
    ]
    for name, net in outputs.items():
        path = out / name
        lines.append(f"| {name} | {len(net)} | {net['source'].nunique()} | {path.stat().st_size} | {sha256(path)} |")
    lines += [
        "",
        "Columns: `source` (gene set), `target` (gene symbol), `weight`; `go_id` (GO BP) or `p_value` "
        "(PROGENy) follow.",
        "",
        "## Sources",
        "",
        "| R package | version | Debian package | .deb sha256 | R package licence |",
        "|---|---|---|---|---|",
    ]
    for rpkg, deb in packages.items():
        licence = desc[rpkg].get("License", "?").replace("|", "\\|")
        lines.append(
            f"| {rpkg} | {desc[rpkg].get('Version', '?')} | {deb['deb']} ({deb['version']}) | {deb['sha256']} | "
            f"{licence} |"
        )
    lines += [
        "",
        "### GO Biological Process (`go_bp_human.tsv.gz`)",
        "",
        "Gene-term pairs from table `go_bp_all` of `org.Hs.eg.db/extdata/org.Hs.eg.sqlite` (annotations propagated "
        "to every ancestor term, all evidence codes, one row per term and gene), gene symbols from `gene_info`, "
        "term names from `go_term` of `GO.db/extdata/GO.sqlite`. Terms with "
        f"{MIN_SIZE} to {MAX_SIZE} genes are kept. A term name shared by several GO ids would get its id appended.",
        "",
        *[f"- {key}: {value}" for key, value in stats["go_bp"].items()],
        "",
        "### PROGENy (`progeny_human.tsv.gz`)",
        "",
        "Object `model_human_full` of `progeny/data/Rdata.rdb` (R lazy-load database, bzip2; read with the PyPI "
        "package `rdata`). Per pathway the genes with the smallest p-value are kept, as decoupler's `get_progeny` "
        "/ `op.progeny(top=...)` do (ties broken by gene symbol); `weight` is the signed PROGENy weight, "
        "`p_value` the model's p-value.",
        "",
        *[f"- {key}: {value}" for key, value in stats["progeny"].items()],
        "",
        "## Licences",
        "",
        "- Gene Ontology data: Creative Commons Attribution 4.0 (CC BY 4.0), <http://geneontology.org/docs/"
        "go-citation-policy/>. Cite: Ashburner et al. (2000) Nat Genet 25:25-29; The Gene Ontology Consortium "
        "(2023) Genetics 224:iyad031.",
        "- Gene symbols and gene-GO links: NCBI Entrez Gene (public domain), as packaged in org.Hs.eg.db.",
        "- The Bioconductor packages org.Hs.eg.db and GO.db themselves (R code, packaging): Artistic-2.0.",
        "- PROGENy: Apache License 2.0 (model weights included). Cite: Schubert et al. (2018) Nat Commun 9:20.",
        "",
        "## Rebuild",
        "",
        "```bash",
        "pip install rdata  # build-time only; not a dependency of cellsae_kit",
        "python scripts/build_genesets.py  # apt-get download + dpkg-deb -x into a temp dir, nothing installed",
        "```",
        "",
        "The same .deb files give byte-identical outputs (gzip with a fixed timestamp); "
        "`tests/datasets/test_genesets.py` checks the sha256 above.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--debs", type=Path, help="folder with the three .deb files (default: download them)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        debs = args.debs or Path(tmp) / "debs"
        if args.debs is None:
            debs.mkdir()
            fetch_debs(debs)
        root = Path(tmp) / "root"
        packages = unpack(debs, root)
        library = root / SITE_LIBRARY
        go_bp, go_stats = build_go_bp(library)
        progeny, progeny_stats = build_progeny(library)
        outputs = {"go_bp_human.tsv.gz": go_bp, "progeny_human.tsv.gz": progeny}
        for name, net in outputs.items():
            write_tsv(net, args.out / name)
            print(f"{args.out / name}: {len(net):,} rows, {(args.out / name).stat().st_size / 1e6:.2f} MB")
        text = provenance(outputs, {"go_bp": go_stats, "progeny": progeny_stats}, packages, library, args.out)
        (args.out / "PROVENANCE.md").write_text(text)


if __name__ == "__main__":
    main()
