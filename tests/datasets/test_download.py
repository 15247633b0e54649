"""datasets.bone_marrow_multiome / bone_marrow_cite: real HTTP downloads through pooch from a local server.

A tiny file in the GEO file's layout is served from 127.0.0.1; nothing touches the internet.
"""

import gzip
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mudata as md
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from scipy import sparse

import cellsae_kit as csk
from cellsae_kit.datasets._download import CITE, MULTIOME

LOADERS = {"multiome": (csk.datasets.bone_marrow_multiome, MULTIOME), "cite": (csk.datasets.bone_marrow_cite, CITE)}
GENES = ["CD4", "GATA1", "HBB", "MS4A1", "NCAM1", "CD34"]
FEATURES = {
    "multiome": {"GEX": GENES, "ATAC": [f"chr1-{i}000-{i}500" for i in range(1, 8)]},
    "cite": {"GEX": GENES, "ADT": ["CD4", "CD19", "CD56", "CD34"]},  # CD4 and CD34 are genes and proteins
}
MODALITY = {"GEX": "rna", "ATAC": "atac", "ADT": "prot"}


def combined(kind: str = "multiome", n_cells: int = 24, seed: int = 0) -> AnnData:
    """One AnnData holding every modality, split by var['feature_types'], as in the GEO files."""
    rng = np.random.default_rng(seed)
    names = [n for names in FEATURES[kind].values() for n in names]
    types = [t for t, names in FEATURES[kind].items() for _ in names]
    counts = sparse.csr_matrix(rng.poisson(1.0, size=(n_cells, len(names))).astype(np.float32))
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(rng.choice(["HSC", "NK", "B1 B", "Proerythroblast"], n_cells)),
            "batch": pd.Categorical(rng.choice(["s1d1", "s2d4"], n_cells)),
            "GEX_n_counts": np.asarray(counts.sum(axis=1)).ravel(),
        },
        index=[f"cell{i}-s1d1" for i in range(n_cells)],
    )
    var = pd.DataFrame({"feature_types": pd.Categorical(types), "gene_id": names}, index=names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "CD4" is a gene and a protein
        adata = AnnData(counts.log1p(), obs=obs, var=var, layers={"counts": counts})
    adata.obsm["GEX_X_pca"] = rng.normal(size=(n_cells, 3)).astype(np.float32)
    adata.obsm["GEX_X_umap"] = rng.normal(size=(n_cells, 2)).astype(np.float32)
    adata.uns["dataset_id"] = f"openproblems_bmmc_{kind}_phase2"
    adata.uns["organism"] = "human"
    return adata


def h5ad_bytes(adata: AnnData, folder: Path) -> bytes:
    path = folder / "made.h5ad"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        adata.write_h5ad(path)
    data = path.read_bytes()
    path.unlink()
    return data


class Served:
    """What the local server sends: files by name, and how it misbehaves."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.mode = "ok"  # "ok", "short" (Content-Length larger than the body), "cut" (no length, half the body)


def _handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            served.requests.append(self.path)
            body = served.files.get(self.path.rsplit("/", 1)[-1])
            if body is None or not self.path.startswith("/geo/"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if served.mode != "cut":
                self.send_header("Content-Length", str(2 * len(body) if served.mode == "short" else len(body)))
            self.end_headers()
            self.wfile.write(body if served.mode == "ok" else body[: len(body) // 2])

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    # No test may reach GEO or the user's own cache, even by mistake: a closed port and a private cache.
    monkeypatch.setenv("CELLSAE_KIT_BASE_URL", f"http://127.0.0.1:{closed_port()}/geo")
    monkeypatch.setenv("CELLSAE_KIT_DATA", str(tmp_path / "env_cache"))


@pytest.fixture
def server(tmp_path, monkeypatch):
    served = Served()
    for kind, (_, remote) in LOADERS.items():
        served.files[remote.file] = gzip.compress(h5ad_bytes(combined(kind), tmp_path))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("CELLSAE_KIT_BASE_URL", f"http://127.0.0.1:{httpd.server_address[1]}/geo/")
    yield served
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


def assert_matches(mdata: md.MuData, adata: AnnData, kind: str) -> None:
    """The MuData holds the file's content, split by feature type (checked against plain AnnData slicing)."""
    assert list(mdata.mod) == [MODALITY[t] for t in FEATURES[kind]]
    assert mdata.n_obs == adata.n_obs
    for feature_type, names in FEATURES[kind].items():
        mod = mdata.mod[MODALITY[feature_type]]
        mask = (adata.var["feature_types"] == feature_type).to_numpy()
        assert mod.var_names.tolist() == names
        assert mod.obs_names.tolist() == adata.obs_names.tolist()
        np.testing.assert_allclose(mod.X.toarray(), adata.X[:, mask].toarray())
        np.testing.assert_array_equal(mod.layers["counts"].toarray(), adata.layers["counts"][:, mask].toarray())
        assert mod.var["gene_id"].tolist() == names
    for column in adata.obs.columns:
        assert mdata.obs[column].tolist() == adata.obs[column].tolist(), column
    assert isinstance(mdata.obs["cell_type"].dtype, pd.CategoricalDtype)
    for key in adata.obsm:
        np.testing.assert_array_equal(mdata.obsm[key], adata.obsm[key])
    assert mdata.uns["dataset_id"] == adata.uns["dataset_id"]


# Downloads


@pytest.mark.parametrize("kind", list(LOADERS))
def test_download_returns_the_modalities_and_records_the_checksum(server, cache, kind):
    load, remote = LOADERS[kind]
    mdata = load(cache_dir=cache, progress=False)
    assert_matches(mdata, combined(kind), kind)
    assert len(server.requests) == 1
    h5ad = remote.file.removesuffix(".gz")
    # Only the decompressed file and its record stay: no download, no partial file.
    assert listing(cache) == [h5ad, h5ad + ".sha256.json"]
    record = json.loads((cache / (h5ad + ".sha256.json")).read_text())
    assert record["url"].endswith("/geo/" + remote.file) and "/geo//" not in record["url"]
    assert record["downloaded_sha256"] == hashlib.sha256(server.files[remote.file]).hexdigest()
    assert record["sha256"] == hashlib.sha256(gzip.decompress(server.files[remote.file])).hexdigest()
    assert (cache / h5ad).read_bytes() == gzip.decompress(server.files[remote.file])


def test_second_load_reads_the_cache_without_a_request(server, tmp_path):
    # No cache_dir: the environment variable names the folder.
    first = csk.datasets.bone_marrow_multiome(progress=False)
    server.files.clear()  # a second request would now fail
    second = csk.datasets.bone_marrow_multiome(progress=False)
    assert len(server.requests) == 1
    assert_matches(second, combined("multiome"), "multiome")
    assert second.obs.equals(first.obs)
    assert (tmp_path / "env_cache" / MULTIOME.file.removesuffix(".gz")).is_file()


def test_a_changed_cached_file_is_refused_until_deleted(server, cache):
    csk.datasets.bone_marrow_multiome(cache_dir=cache, progress=False)
    target = cache / MULTIOME.file.removesuffix(".gz")
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 1  # one flipped bit, as on a failing disk
    target.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="has changed since it was downloaded") as err:
        csk.datasets.bone_marrow_multiome(cache_dir=cache, progress=False)
    assert f"rm '{target}'" in str(err.value)
    assert target.read_bytes() == bytes(data)  # the user's file is not deleted behind their back
    assert len(server.requests) == 1
    # Following the advice downloads it anew.
    target.unlink()
    mdata = csk.datasets.bone_marrow_multiome(cache_dir=cache, progress=False)
    assert_matches(mdata, combined("multiome"), "multiome")
    assert len(server.requests) == 2


def test_a_changed_file_at_the_source_is_not_kept(server, cache, tmp_path):
    csk.datasets.bone_marrow_cite(cache_dir=cache, progress=False)
    target = cache / CITE.file.removesuffix(".gz")
    record = target.with_name(target.name + ".sha256.json")
    before = record.read_text()
    target.unlink()
    server.files[CITE.file] = gzip.compress(h5ad_bytes(combined("cite", seed=1), tmp_path))
    with pytest.raises(ValueError, match="is not the one first downloaded") as err:
        csk.datasets.bone_marrow_cite(cache_dir=cache, progress=False)
    assert str(record) in str(err.value) and "path=" in str(err.value)
    assert listing(cache) == [record.name]
    assert record.read_text() == before
    # Accepting the new version, as the message says.
    record.unlink()
    mdata = csk.datasets.bone_marrow_cite(cache_dir=cache, progress=False)
    assert_matches(mdata, combined("cite", seed=1), "cite")


def test_a_truncated_transfer_leaves_nothing_in_the_cache(server, cache):
    server.mode = "short"
    with pytest.raises(ConnectionError, match="nothing was kept there") as err:
        csk.datasets.bone_marrow_multiome(cache_dir=cache, progress=False)
    assert "/geo/" + MULTIOME.file in str(err.value) and "IncompleteRead" in str(err.value)
    assert listing(cache) == []
    server.mode = "ok"
    assert_matches(csk.datasets.bone_marrow_multiome(cache_dir=cache, progress=False), combined(), "multiome")


def test_a_transfer_cut_without_a_length_is_caught_by_gzip(server, cache):
    server.mode = "cut"
    with pytest.raises(ValueError, match="not a complete gzip file.*Nothing was kept"):
        csk.datasets.bone_marrow_multiome(cache_dir=cache, progress=False)
    assert len(server.requests) == 1
    assert listing(cache) == []


def test_a_web_page_instead_of_the_file(server, cache):
    server.files[CITE.file] = b"<html><body>Service temporarily unavailable</body></html>"
    with pytest.raises(ValueError, match="not a complete gzip file"):
        csk.datasets.bone_marrow_cite(cache_dir=cache, progress=False)
    assert listing(cache) == []


def test_a_download_of_the_wrong_file_is_not_kept(server, cache):
    server.files[MULTIOME.file] = server.files[CITE.file]
    with pytest.raises(ValueError, match="this looks like the file that bone_marrow_cite reads"):
        csk.datasets.bone_marrow_multiome(cache_dir=cache, progress=False)
    assert listing(cache) == []


@pytest.mark.parametrize("where", ["server down", "missing file"])
def test_offline_error_names_url_cache_and_path(server, cache, monkeypatch, where):
    if where == "server down":
        monkeypatch.setenv("CELLSAE_KIT_BASE_URL", f"http://127.0.0.1:{closed_port()}/geo")
    else:
        server.files.clear()
    with pytest.raises(ConnectionError) as err:
        csk.datasets.bone_marrow_multiome(cache_dir=cache, progress=False)
    message = str(err.value)
    assert f"/geo/{MULTIOME.file}" in message
    assert str(cache) in message
    assert f"bone_marrow_multiome(path='.../{MULTIOME.file}')" in message
    assert ("ConnectionError" if where == "server down" else "404") in message
    assert listing(cache) == []


def test_progress_bars_only_when_asked(server, cache, capfd):
    csk.datasets.bone_marrow_multiome(cache_dir=cache, progress=False)
    csk.datasets.bone_marrow_multiome(cache_dir=cache, progress=False)
    assert capfd.readouterr().err == ""
    csk.datasets.bone_marrow_cite(cache_dir=cache, progress=True)
    err = capfd.readouterr().err
    assert "Downloading http://127.0.0.1:" in err and "B/s" in err and f"Decompressing {CITE.file}: 100%" in err
    csk.datasets.bone_marrow_cite(cache_dir=cache, progress=True)
    assert f"Checking {CITE.file.removesuffix('.gz')}: 100%" in capfd.readouterr().err


def test_a_file_placed_in_the_cache_by_hand_is_recorded(cache, tmp_path):
    cache.mkdir()
    data = h5ad_bytes(combined("cite"), tmp_path)
    target = cache / CITE.file.removesuffix(".gz")
    target.write_bytes(data)
    assert_matches(csk.datasets.bone_marrow_cite(cache_dir=cache, progress=False), combined("cite"), "cite")
    record = json.loads(target.with_name(target.name + ".sha256.json").read_text())
    assert record["sha256"] == hashlib.sha256(data).hexdigest()


def test_h5mu_round_trip(server, cache, tmp_path):
    mdata = csk.datasets.bone_marrow_cite(cache_dir=cache, progress=False)
    mdata.write_h5mu(tmp_path / "cite.h5mu")
    back = md.read_h5mu(tmp_path / "cite.h5mu")
    assert_matches(back, combined("cite"), "cite")


# Local files


@pytest.mark.parametrize("kind", list(LOADERS))
@pytest.mark.parametrize("suffix", [".h5ad", ".h5ad.gz"])
def test_local_file_needs_no_network(tmp_path, kind, suffix):
    load, _ = LOADERS[kind]
    data = h5ad_bytes(combined(kind), tmp_path)
    path = tmp_path / f"mine{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    before = path.read_bytes()
    mdata = load(str(path), progress=False)  # the base URL is a closed port: any request would fail
    assert_matches(mdata, combined(kind), kind)
    assert path.read_bytes() == before
    # A .gz is decompressed into a temporary file in the cache folder, gone afterwards; an .h5ad needs no folder.
    assert listing(tmp_path / "env_cache") == []
    assert (tmp_path / "env_cache").exists() == suffix.endswith(".gz")


def _drop_feature_types(a):
    del a.var["feature_types"]


def _drop_cell_type(a):
    del a.obs["cell_type"]


def _drop_counts(a):
    del a.layers["counts"]


def _only_genes(a):
    a.var["feature_types"] = "GEX"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_drop_feature_types, r"no var\['feature_types'\] column, which tells GEX from ATAC"),
        (_drop_cell_type, r"lacks the cell annotation column\(s\) \['cell_type'\]"),
        (_drop_counts, r"no layers\['counts'\]"),
        (_only_genes, r"feature types \['GEX'\].*expects \['ATAC', 'GEX'\]"),
    ],
)
def test_wrong_structure(tmp_path, damage, message):
    adata = combined()
    damage(adata)
    path = tmp_path / "mine.h5ad"
    path.write_bytes(h5ad_bytes(adata, tmp_path))
    with pytest.raises(ValueError, match=message) as err:
        csk.datasets.bone_marrow_multiome(path, progress=False)
    assert str(path) in str(err.value)


def test_no_cells(tmp_path):
    path = tmp_path / "empty.h5ad"
    path.write_bytes(h5ad_bytes(combined()[:0].copy(), tmp_path))
    with pytest.raises(ValueError, match="has no cells"):
        csk.datasets.bone_marrow_multiome(path, progress=False)


def test_cite_file_passed_to_the_multiome_loader(tmp_path):
    path = tmp_path / "cite.h5ad"
    path.write_bytes(h5ad_bytes(combined("cite"), tmp_path))
    with pytest.raises(ValueError, match="looks like the file that bone_marrow_cite reads"):
        csk.datasets.bone_marrow_multiome(path, progress=False)


@pytest.mark.parametrize(
    ("name", "content", "error", "message"),
    [
        ("missing.h5ad", None, FileNotFoundError, "There is no file at .*leave path=None to download"),
        ("mine.csv", b"a,b\n", ValueError, r"neither an \.h5ad nor an \.h5ad\.gz file"),
        ("mine.h5ad", b"not hdf5", ValueError, r"could not be read as an \.h5ad file"),
        ("mine.h5ad.gz", b"not gzip", ValueError, "not a complete gzip file"),
    ],
)
def test_bad_local_files(tmp_path, name, content, error, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error, match=message):
        csk.datasets.bone_marrow_cite(path, progress=False)
    assert listing(tmp_path / "env_cache") == []


def test_a_damaged_checksum_record_names_the_fix(server, cache):
    csk.datasets.bone_marrow_multiome(cache_dir=cache, progress=False)
    record = cache / (MULTIOME.file.removesuffix(".gz") + ".sha256.json")
    record.write_text('{"sha256": "abc"')  # cut off while being copied
    with pytest.raises(ValueError, match=r"checksum record .* is damaged.*delete it") as err:
        csk.datasets.bone_marrow_multiome(cache_dir=cache, progress=False)
    assert f"rm '{record}'" in str(err.value)
    record.unlink()  # following the advice: the cached file is checked anew and recorded
    csk.datasets.bone_marrow_multiome(cache_dir=cache, progress=False)
    assert json.loads(record.read_text())["sha256"]


def test_files_of_a_killed_process_are_removed_and_a_live_one_kept(server, cache):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    cache.mkdir(parents=True, exist_ok=True)
    orphan = cache / f".partial-{int(dead.stdout)}-abc"
    orphan.write_bytes(b"half a file")  # what SIGKILL during decompression leaves
    alive = cache / f".partial-{os.getpid()}-def"  # another download under way in this process
    alive.write_bytes(b"in progress")
    csk.datasets.bone_marrow_multiome(cache_dir=cache, progress=False)
    assert not orphan.exists() and alive.exists()
