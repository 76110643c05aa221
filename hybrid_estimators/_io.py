"""Atomic writes of files and folders that keep the target's permissions, and
the one conversion of values to JSON.

Every write of the package goes through :func:`atomic_write` or
:func:`atomic_folder`: the content is written next to the target under a
temporary name, given the target's permissions (or the umask's default
for a new file, as ``open`` would), flushed and renamed into place. A
failure at any point leaves the target as it was and no temporary file
behind.
"""

import contextlib
import hashlib
import math
import numbers
import os
import shutil
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["adapter_fingerprint", "atomic_write", "atomic_folder", "json_safe"]


def _safe_str(text):
    """`text`, with what UTF-8 cannot encode (lone surrogates) as ``\\udXXX`` escapes."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def json_safe(value):
    """`value` as ``json.dumps(allow_nan=False)`` writes it and UTF-8 encodes it.

    The package's one rule for JSON: a non-finite number (NaN, which is
    also pandas' missing value, and infinities) becomes ``None`` (JSON
    ``null``: "no number"), so that every file the package writes is
    strict JSON. NumPy scalars and arrays become Python values, tuples
    lists, mapping keys strings; strings keep their text, lone surrogates
    becoming ``\\udXXX`` escapes; anything else becomes its ``str``.

    Parameters
    ----------
    value : object
        Built-in, NumPy or pandas-scalar values, nested in dicts, lists,
        tuples and arrays.

    Returns
    -------
    value : object
        Of ``None``, bool, int, float, str, list and dict only.

    Raises
    ------
    RecursionError
        For values nested about as deeply as the recursion limit.

    See Also
    --------
    atomic_write : Writes the JSON text it makes safe.

    Examples
    --------
    >>> import numpy as np
    >>> json_safe({"mae": np.float32(0.5), "low": float("nan"), 3: (np.int64(1), "a\\ud800")})
    {'mae': 0.5, 'low': None, '3': [1, 'a\\\\ud800']}
    """
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _safe_str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {_safe_str(str(json_safe(key))): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(item) for item in value]
    return _safe_str(str(value))


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

    See Also
    --------
    atomic_folder : The same for a whole folder.
    json_safe : Makes a value safe to write as JSON.

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

    See Also
    --------
    atomic_write : The same for one file.
    hybrid_estimators.models.offline_e5_small : Writes its converted model
        with it.

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


def adapter_fingerprint(folder):
    """sha256 over the names and contents of a folder's files (a Stage 2 adapter).

    The package's one fingerprint of an adapter folder: recorded with an
    evaluation (is the Stage 2 in the filter still the one evaluated?) and
    in teacher identities.

    Parameters
    ----------
    folder : str or path-like

    Returns
    -------
    fingerprint : str or None
        None when `folder` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode("utf-8") + b"\0")
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
