"""Atomic writes of files and folders that keep the target's permissions.

Every write of the package goes through :func:`atomic_write` or
:func:`atomic_folder`: the content is written next to the target under a
temporary name, given the target's permissions (or the umask's default
for a new file, as ``open`` would), flushed and renamed into place. A
failure at any point leaves the target as it was and no temporary file
behind.
"""

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "atomic_folder"]


def _current_umask():
    """The process's umask, read without changing it where the OS shows it (Linux).

    Setting the umask to read it back is not thread-safe: another thread
    could create a file under the temporary value.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _default_mode():
    """Permissions ``open(path, "w")`` would give a new file: 0o666 less the umask."""
    return 0o666 & ~_current_umask()


def _target_mode(path, default):
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return default


def atomic_write(path, data, *, mode=None):
    """Replace `path` by `data` in one step, keeping its permissions.

    Parameters
    ----------
    path : str or path-like
        Target file; its folder is created when missing.
    data : bytes or str
        Content; a str is written as UTF-8.
    mode : int or None, default=None
        Permissions of the written file. None keeps those of an existing
        `path`, else gives what ``open`` would (``0o666`` less the umask).

    Returns
    -------
    path : Path

    Examples
    --------
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> target = os.path.join(folder, "config.yaml")
    >>> _ = atomic_write(target, "a: 1\\n")
    >>> os.chmod(target, 0o644)
    >>> _ = atomic_write(target, "a: 2\\n")
    >>> oct(os.stat(target).st_mode & 0o777), open(target).read()
    ('0o644', 'a: 2\\n')
    >>> sorted(os.listdir(folder))
    ['config.yaml']
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        mode = _target_mode(path, _default_mode())
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def atomic_folder(path, *, mode=0o755, replace=False):
    """Build a folder under a temporary name and rename it to `path` when done.

    Yields the temporary folder to fill. On success it is renamed to `path`.
    An existing `path` is kept (another process published it first: folders
    built this way are content-addressed) unless `replace`, which swaps the
    new folder in and removes the old one, putting it back if the swap
    fails. On failure the temporary folder is removed. The folder gets
    `mode` (not ``mkdtemp``'s 0o700), so a shared cache stays readable.

    Parameters
    ----------
    path : str or path-like
        Final folder.
    mode : int, default=0o755
        Permissions of the published folder.
    replace : bool, default=False
        Replace an existing `path` whole.

    Yields
    ------
    staging : Path

    Examples
    --------
    >>> import os, tempfile
    >>> root = tempfile.mkdtemp()
    >>> with atomic_folder(os.path.join(root, "model")) as staging:
    ...     _ = (staging / "weights.bin").write_bytes(b"0")
    >>> os.listdir(root), oct(os.stat(os.path.join(root, "model")).st_mode & 0o777)
    (['model'], '0o755')
    >>> with atomic_folder(os.path.join(root, "model"), replace=True) as staging:
    ...     _ = (staging / "other.bin").write_bytes(b"1")
    >>> os.listdir(os.path.join(root, "model")), os.listdir(root)
    (['other.bin'], ['model'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield staging
        os.chmod(staging, mode)
        if replace and path.exists():
            _swap_in(staging, path)
        else:
            try:
                os.rename(staging, path)
            except OSError:
                if not path.is_dir():
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging, path):
    """Put `staging` at `path`, removing the old `path`; restore it if that fails."""
    old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
    os.rmdir(old)
    os.rename(path, old)
    try:
        os.rename(staging, path)
    except OSError:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)
