"""Atomic writes: a file appears under its name complete, or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename, else it is removed.

    An interrupted writer (an exception, SIGINT, SIGKILL) leaves at most a hidden ``.<name>.partial-*`` file next to
    the target, never a truncated file under the target's name. Works for files and folders (zarr stores).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from cellsae_kit._atomic import atomic_path
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=path.parent, suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()  # the writer creates it (h5py and zarr refuse some existing files)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same file (resolving links; a missing file is the same only by path)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()
