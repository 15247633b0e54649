"""Atomic writes: a file appears under its name complete, or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

MARK = ".partial-"


@contextlib.contextmanager
def temporary_path(folder: str | Path, name: str = "") -> Iterator[Path]:
    """Yield a new temporary file ``.<name>.partial-<pid>-*`` in ``folder``, removed on exit unless renamed.

    The name carries the process id, so that the files of a process killed while writing (SIGKILL runs no
    clean-up) are recognised and removed later by :func:`remove_orphans`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f".{name}{MARK}{os.getpid()}-" if name else f"{MARK}{os.getpid()}-"
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=folder, suffix=Path(name).suffix)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


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
    with temporary_path(path.parent, path.name) as tmp:
        tmp.unlink()  # the writer creates it (h5py and zarr refuse some existing files)
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)


def remove_orphans(folder: str | Path) -> None:
    """Delete the temporary files of processes that no longer run (killed while writing)."""
    for path in Path(folder).glob(f"*{MARK}*"):
        pid = path.name.split(MARK, 1)[1].split("-")[0]
        if not pid.isdigit() or not _running(int(pid)):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same file (resolving links; a missing file is the same only by path)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()
