"""Gene sets as a sparse matrix, and clusters of near-duplicate sets (one term per programme)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

# Terms whose average Jaccard index on the data's genes is at least this are one programme.
MIN_JACCARD = 0.5


def membership(net: pd.DataFrame, genes: pd.Index, tmin: int = 5) -> tuple[pd.Index, sparse.csr_matrix]:
    """Return the sets of a decoupler network with at least ``tmin`` of ``genes`` as a sets x genes 0/1 matrix.

    Examples
    --------
    >>> import pandas as pd
    >>> from cellsae_kit.tl._terms import membership
    >>> net = pd.DataFrame({"source": ["A", "A", "B"], "target": ["g0", "g1", "g9"]})
    >>> terms, members = membership(net, pd.Index(["g0", "g1", "g2"]), tmin=2)
    >>> list(terms), members.toarray().tolist()
    (['A'], [[1.0, 1.0, 0.0]])
    """
    where = genes.get_indexer(net["target"])
    pairs = pd.DataFrame({"source": net["source"].to_numpy(), "gene": where})
    pairs = pairs[pairs["gene"] >= 0].drop_duplicates()
    sizes = pairs.groupby("source", sort=True)["gene"].size()
    terms = pd.Index(sizes.index[sizes >= tmin].astype(str), name="term")
    pairs = pairs[pairs["source"].astype(str).isin(terms)]
    rows = terms.get_indexer(pairs["source"].astype(str))
    members = sparse.csr_matrix((np.ones(len(rows)), (rows, pairs["gene"])), shape=(len(terms), len(genes)))
    return terms, members


def jaccard(members: sparse.spmatrix) -> np.ndarray:
    """Jaccard index of every pair of sets (rows of a 0/1 matrix), dense sets x sets.

    Examples
    --------
    >>> from scipy import sparse
    >>> from cellsae_kit.tl._terms import jaccard
    >>> jaccard(sparse.csr_matrix([[1, 1, 0], [0, 1, 1]])).round(2).tolist()
    [[1.0, 0.33], [0.33, 1.0]]
    """
    members = sparse.csr_matrix(members, dtype=np.float64)
    shared = np.asarray((members @ members.T).todense())
    size = np.asarray(members.sum(axis=1)).ravel()
    union = size[:, None] + size[None, :] - shared
    return np.divide(shared, union, out=np.zeros_like(shared), where=union > 0)


def cluster_terms(terms: pd.Index, members: sparse.spmatrix, min_jaccard: float = MIN_JACCARD) -> pd.DataFrame:
    """Group near-duplicate sets: average-linkage clusters whose members share at least ``min_jaccard`` of genes.

    Parameters
    ----------
    terms
        Names of the sets, one per row of ``members``.
    members
        Sets x genes, 1 where a gene is in a set (restricted to the data's genes).
    min_jaccard
        Sets are merged while the average Jaccard index between the two groups is at least this; ``1`` keeps only
        sets with identical genes together.

    Returns
    -------
    One row per term (index ``term``): ``cluster`` (named after its largest set, the most general; ties by name)
    and ``n_genes`` (its genes among the data's).

    Examples
    --------
    >>> import pandas as pd
    >>> from scipy import sparse
    >>> from cellsae_kit.tl._terms import cluster_terms
    >>> members = sparse.csr_matrix([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1]])
    >>> cluster_terms(pd.Index(["parent", "child", "other"]), members)["cluster"].tolist()
    ['parent', 'parent', 'other']
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    if not 0 < min_jaccard <= 1:
        raise ValueError(f"min_jaccard={min_jaccard} must be in (0, 1]; 1 merges only sets with identical genes.")
    terms = pd.Index(terms, name="term")
    size = np.asarray(sparse.csr_matrix(members).sum(axis=1)).ravel().astype(np.int64)
    if len(terms) == 1:
        labels = np.array([1])
    else:
        distance = 1.0 - jaccard(members)
        np.fill_diagonal(distance, 0.0)
        tree = linkage(squareform(np.clip(distance, 0.0, 1.0), checks=False), method="average")
        labels = fcluster(tree, t=1.0 - min_jaccard + 1e-12, criterion="distance")
    table = pd.DataFrame({"label": labels, "n_genes": size, "name": terms.astype(str)})
    # Name each cluster after its largest set: a reader sees the general programme, the representative the detail.
    names = table.sort_values(["n_genes", "name"], ascending=[False, True]).drop_duplicates("label")
    table["cluster"] = table["label"].map(names.set_index("label")["name"])
    return table[["cluster", "n_genes"]].set_index(terms)
