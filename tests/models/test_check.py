import numpy as np
import pytest
from scipy import sparse

from cellsae_kit.get import check_key
from cellsae_kit.models import as_float32, check_data, check_sparse


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_check_sparse_passes_a_sound_matrix_and_leaves_it_as_it_was(fmt):
    X = sparse.random(40, 7, density=0.3, format=fmt, dtype=np.float32, random_state=0)
    X.indptr = X.indptr.astype(np.int64)  # scipy's own check would recast this in place
    before = (X.indptr.copy(), X.indices.copy(), X.data.copy(), X.indptr.dtype)
    check_sparse(X)
    assert X.indptr.dtype == before[3]
    for now, then in zip((X.indptr, X.indices, X.data), before[:3], strict=True):
        np.testing.assert_array_equal(now, then)


@pytest.mark.parametrize(
    ("fmt", "damage", "words"),
    [
        ("csr", lambda X: X.indices.__setitem__(0, 7), "column index 7 is beyond its 7 columns"),
        ("csc", lambda X: X.indices.__setitem__(0, 40), "row index 40 is beyond its 40 rows"),
        ("csr", lambda X: X.indices.__setitem__(0, -1), "column index -1"),
        ("csr", lambda X: X.indptr.__setitem__(slice(5, 9), 0), "does not start at 0 and rise"),
        ("csr", lambda X: X.indptr.__setitem__(-1, X.nnz + 5), "stored values"),
    ],
)
def test_check_sparse_names_what_is_broken(fmt, damage, words):
    X = sparse.random(40, 7, density=0.3, format=fmt, dtype=np.float32, random_state=0)
    damage(X)
    with pytest.raises(ValueError, match=words):
        check_sparse(X, "adata.X")
    with pytest.raises(ValueError, match="malformed"):
        check_data(X, "adata.X")


def test_as_float32_copies_only_when_torch_needs_it():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert as_float32(x) is x  # already contiguous, native, writable float32
    for odd in (x[:, ::-1], np.asfortranarray(x), x.astype(">f4"), x.astype(np.float64)):
        out = as_float32(odd)
        assert out.flags["C_CONTIGUOUS"] and out.flags["WRITEABLE"] and out.dtype == np.dtype("=f4")
        np.testing.assert_array_equal(out, odd)
    frozen = x.copy()
    frozen.flags.writeable = False
    assert as_float32(frozen).flags["WRITEABLE"] and not frozen.flags["WRITEABLE"]


def test_check_key_returns_a_usable_key():
    assert check_key("sae_2") == "sae_2"
    with pytest.raises(ValueError, match="without '/'"):
        check_key("a/b", "key")
