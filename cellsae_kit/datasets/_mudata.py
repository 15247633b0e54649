"""Building a MuData the same way on every mudata release the kit supports."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping

from anndata import AnnData


def make_mudata(mods: Mapping[str, AnnData]):
    """Return ``MuData(mods)`` without the notices of mudata 0.3 about columns it copies into ``obs``.

    mudata 0.3 announces, on every construction, that it will stop copying modality columns into ``obs``
    (``set_options(pull_on_update=False)`` silences it); mudata 0.4 removed both the copying and the option. A
    gene and its protein sharing a name (CD4) is normal across modalities and not reported either.
    """
    import mudata

    set_options = getattr(mudata, "set_options", None)
    try:
        options = set_options(pull_on_update=False) if set_options else contextlib.nullcontext()
    except (ValueError, TypeError):  # a release that has set_options but not this option
        options = contextlib.nullcontext()
    with options, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "var_names are not unique", UserWarning)
        return mudata.MuData(dict(mods))
