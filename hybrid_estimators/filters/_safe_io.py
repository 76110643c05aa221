"""Reading a filter folder safely: bounded regular files, YAML without
aliases, paths that stay inside the folder, probe archives checked before
skops opens them.

Nothing a filter folder holds can make the loader run code, hang on a FIFO
or a device, or exhaust memory: every file goes through
:func:`read_regular_file` with a size cap, YAML through a loader that
refuses anchors and aliases, the probe archive through
:func:`check_probe_archive` (member count, uncompressed size, compression
ratio, no pickles) and :func:`probe_types` (an explicit allow-list).
"""

import hashlib
import io
import json
import os
import re
import stat
import zipfile
from pathlib import Path, PurePosixPath

import yaml

PROBE_FILE = "probe/embedding_probe.skops"
METADATA_FILE = "probe/metadata.json"
CONFIG_FILE = "config.yaml"
CARD_FILE = "README.md"
#: Where :func:`save_filter` puts a Stage 2 adapter unless the spec names a folder.
ADAPTER_FOLDER = "model"
#: Version of the ``probe/metadata.json`` layout :func:`save_filter` writes.
METADATA_SCHEMA_VERSION = 2

# Bounds on what a filter folder may make the loader read or allocate.
#: Largest ``config.yaml``, in bytes.
MAX_CONFIG_BYTES = 1 << 20
#: Largest ``probe/metadata.json``, in bytes.
MAX_METADATA_BYTES = 16 << 20
#: Largest probe file, in bytes.
MAX_PROBE_BYTES = 256 << 20
#: Largest total uncompressed size of the probe archive's members, in bytes.
MAX_PROBE_UNCOMPRESSED_BYTES = 512 << 20
#: Largest uncompressed / compressed size of a member above 1 MiB.
MAX_COMPRESSION_RATIO = 100
#: Most members of the probe archive.
MAX_ARCHIVE_MEMBERS = 10_000
#: Longest name (filter, version, dimension, tier, model, path) in a config.
MAX_NAME_LENGTH = 256
#: Longest free text (descriptions) in a config.
MAX_TEXT_LENGTH = 10_000
#: Most dimensions (and tiers) in a config.
MAX_DIMENSIONS = 256

#: Types a probe may contain. Anything else in a .skops file is refused.
ALLOWED_PROBE_TYPES = frozenset(
    {
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.neural_network._multilayer_perceptron.MLPRegressor",
        "sklearn.linear_model._ridge.RidgeCV",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        "sklearn.utils._bunch.Bunch",
        "numpy.float64",
        "numpy.int64",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.random.mtrand.RandomState",
        "numpy.random._mt19937.MT19937",
        "builtins.slice",
        "builtins.dict",
        "builtins.list",
        "builtins.str",
        "builtins.tuple",
        "builtins.int",
        "builtins.float",
        "builtins.bool",
    }
)


class FilterError(ValueError):
    """A filter folder is invalid, tampered with or inconsistent.

    See Also
    --------
    hybrid_estimators.filters.load_filter : Raises it, naming the file and the problem.
    """

    __module__ = "hybrid_estimators.filters"  # its public path, in tracebacks and pickles


# --- reading a folder safely -----------------------------------------------------


class _NoAliasSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses anchors and aliases.

    Aliases let a kilobyte of YAML expand into gigabytes ("billion laughs");
    a filter config never needs them.
    """

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (&, *) are not allowed in a filter config",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def _file_kind(mode):
    for test, kind in (
        (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def read_regular_file(path, limit, what="file"):
    """The bytes of a regular file of at most `limit` bytes.

    The file is opened without blocking (a FIFO cannot hang the reader) and
    refused, before anything is read, unless ``fstat`` says it is a regular
    file no larger than `limit`.

    Parameters
    ----------
    path : str or path-like
    limit : int
        Most bytes allowed.
    what : str, default="file"
        What the file is, for the error message.

    Returns
    -------
    data : bytes

    Raises
    ------
    FilterError
        Naming the path: missing, not a regular file, too large or unreadable.

    See Also
    --------
    hybrid_estimators.filters.resolve_in_folder : Keeps a path a config names inside the folder.
    hybrid_estimators.filters.load_filter : Reads every file of a filter through it.

    Examples
    --------
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> path = os.path.join(folder, "config.yaml")
    >>> _ = open(path, "w").write("name: demo\\n")
    >>> read_regular_file(path, 100)
    b'name: demo\\n'
    >>> read_regular_file(folder, 100, "the config")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hybrid_estimators.filters.FilterError: ...: the config is a folder, not a regular file.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        handle = os.open(path, flags)
    except FileNotFoundError:
        raise FilterError(f"{path}: {what} is missing.") from None
    except OSError as error:
        raise FilterError(f"{path}: cannot open {what}: {error.strerror or error}.") from None
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            raise FilterError(f"{path}: {what} is {_file_kind(info.st_mode)}, not a regular file.")
        if info.st_size > limit:
            raise FilterError(f"{path}: {what} has {info.st_size:,} bytes, more than the {limit:,} allowed.")
        with os.fdopen(handle, "rb") as file:
            handle = None  # the file closes it
            data = file.read(info.st_size + 1)  # read(n) allocates n bytes at once
    except OSError as error:
        raise FilterError(f"{path}: cannot read {what}: {error.strerror or error}.") from None
    finally:
        if handle is not None:
            os.close(handle)
    if len(data) > info.st_size:
        raise FilterError(f"{path}: {what} grew while it was read.")
    return data


def _check_relative_path(value, where):
    """A path inside the filter folder, checked by its text alone."""
    if not isinstance(value, str) or not value.strip():
        raise FilterError(f"{where}: expected a path inside the filter folder, got {value!r}.")
    if len(value) > MAX_NAME_LENGTH or _CONTROL.search(value) or "\\" in value:
        raise FilterError(f"{where}: {value[:80]!r} is not a usable path inside the filter folder.")
    path = PurePosixPath(value)
    if path.is_absolute() or value.startswith("~") or re.match(r"^[A-Za-z]:", value):
        raise FilterError(f"{where}: {value!r} is absolute; paths in a filter are relative to its folder.")
    if ".." in path.parts:
        raise FilterError(f"{where}: {value!r} leaves the filter folder ('..').")
    return value


def resolve_in_folder(folder, relative, where):
    """The real path `relative` names inside `folder`; refused if it leaves it.

    Absolute paths, ``..`` and symbolic links that resolve outside `folder`
    are refused.

    Parameters
    ----------
    folder : str or path-like
        The filter folder.
    relative : str
        A path from the filter's config (``probe``, ``stage2.adapter``).
    where : str
        The config key, for the error message.

    Returns
    -------
    path : Path
        Resolved (symbolic links followed).

    See Also
    --------
    hybrid_estimators.filters.read_regular_file : Reads the resolved file, bounded.
    hybrid_estimators.filters.load_filter : Resolves every path of a config through it.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> resolve_in_folder(folder, "probe/p.skops", "probe").name
    'p.skops'
    >>> resolve_in_folder(folder, "../elsewhere", "hybrid_inference.probe")
    Traceback (most recent call last):
    ...
    hybrid_estimators.filters.FilterError: hybrid_inference.probe: '../elsewhere' leaves the filter folder ('..').
    """
    _check_relative_path(relative, where)
    try:
        root = Path(folder).resolve()
        target = (root / relative).resolve()
    except (OSError, RuntimeError) as error:  # a symbolic-link loop
        raise FilterError(f"{where}: {relative!r} cannot be resolved: {error}.") from None
    if target != root and root not in target.parents:
        raise FilterError(
            f"{where}: {relative!r} resolves to {target}, outside the filter folder {root} "
            "(a symbolic link that leaves it)."
        )
    return target


def _fixed_file(folder, name):
    """A file of fixed name in the folder (config, metadata), refused if it links out."""
    return resolve_in_folder(folder, name, name)


def _load_yaml(data, source):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FilterError(f"{source}: not UTF-8 text: {error}") from None
    try:
        return yaml.load(text, Loader=_NoAliasSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise FilterError(f"{source}: not valid YAML: {error}") from None
    except RecursionError:
        raise FilterError(f"{source}: nested too deeply to be a filter config.") from None


def _load_json(data, source):
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise FilterError(f"{source}: not valid JSON: {error}") from None
    except RecursionError:
        raise FilterError(f"{source}: nested too deeply.") from None


# --- the config ---------------------------------------------------------------------

#: Characters no name may hold: control characters (terminal escapes) and bidi overrides.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
#: The same, but free text may hold newlines and tabs.
_TEXT_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")



def _read_probe_bytes(path):
    data = read_regular_file(path, MAX_PROBE_BYTES, "the probe")
    if data[:1] == b"\x80" or Path(path).suffix in {".pkl", ".pickle", ".joblib"}:
        raise FilterError(f"{path}: is a pickle; filters load only skops probes (nothing may run code).")
    if data[:4] != b"PK\x03\x04":
        raise FilterError(f"{path}: not a skops file (truncated or corrupted).")
    return data


def _check_probe_sha256(path, data, metadata):
    actual = hashlib.sha256(data).hexdigest()
    if actual != metadata.get("probe_sha256"):
        raise FilterError(
            f"{path}: sha256 {actual[:12]}... does not match {METADATA_FILE} "
            f"({str(metadata.get('probe_sha256'))[:12]}...): the probe was changed or truncated."
        )


def check_probe_archive(data, path="probe"):
    """Refuse a probe archive that would expand beyond the bounds, before reading it.

    The members' declared uncompressed sizes (which :mod:`zipfile` never
    reads past) must sum to at most :data:`MAX_PROBE_UNCOMPRESSED_BYTES`,
    there may be at most :data:`MAX_ARCHIVE_MEMBERS` of them, and no member
    above 1 MiB may be compressed more than :data:`MAX_COMPRESSION_RATIO`
    times (a zip bomb).

    Parameters
    ----------
    data : bytes
        The archive.
    path : str or path-like, default="probe"
        For the error message.

    Returns
    -------
    archive : zipfile.ZipFile

    See Also
    --------
    hybrid_estimators.filters.probe_types : The types the archive holds.
    hybrid_estimators.filters.ALLOWED_PROBE_TYPES : The types it may hold.
    hybrid_estimators.filters.load_probe : Checks the archive before skops reads it.

    Examples
    --------
    >>> import io, zipfile
    >>> buffer = io.BytesIO()
    >>> with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
    ...     archive.writestr("schema.json", "{}")
    ...     archive.writestr("bomb.npy", bytes(64 << 20))
    >>> check_probe_archive(buffer.getvalue())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hybrid_estimators.filters.FilterError: probe: member 'bomb.npy' is compressed ... times, ...
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as error:
        raise FilterError(f"{path}: not a skops file (not a readable zip archive: {error}).") from None
    members = archive.infolist()
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise FilterError(f"{path}: the archive has {len(members):,} members, more than {MAX_ARCHIVE_MEMBERS:,}.")
    total = sum(member.file_size for member in members)
    if total > MAX_PROBE_UNCOMPRESSED_BYTES:
        raise FilterError(
            f"{path}: the archive would expand to {total:,} bytes, more than the "
            f"{MAX_PROBE_UNCOMPRESSED_BYTES:,} allowed (a zip bomb?)."
        )
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > (1 << 20) and ratio > MAX_COMPRESSION_RATIO:
            raise FilterError(
                f"{path}: member {member.filename[:80]!r} is compressed {ratio:,.0f} times, more "
                f"than the {MAX_COMPRESSION_RATIO} allowed (a zip bomb?)."
            )
    names = {member.filename for member in members}
    if "schema.json" not in names:
        raise FilterError(f"{path}: not a skops file (no schema.json).")
    return archive


def probe_types(path_or_data):
    """Every type a skops file holds, as ``module.Class``, read from its schema.

    ``skops.io.get_untrusted_types`` lists only the types skops does not
    trust by default (it trusts every scikit-learn estimator); the allow-list
    must see them all.

    Parameters
    ----------
    path_or_data : str, path-like, bytes or zipfile.ZipFile
        The file, its bytes (then bounded by :func:`check_probe_archive`),
        or the archive :func:`check_probe_archive` returned (not checked
        again).

    Returns
    -------
    types : set of str

    See Also
    --------
    hybrid_estimators.filters.ALLOWED_PROBE_TYPES : The types a probe may hold.
    hybrid_estimators.filters.check_probe_archive : The checks before skops reads an archive.
    """
    if isinstance(path_or_data, zipfile.ZipFile):
        schema = _load_json(path_or_data.read("schema.json"), "schema.json")
    else:
        data = path_or_data if isinstance(path_or_data, bytes) else _read_probe_bytes(path_or_data)
        with check_probe_archive(data) as archive:
            schema = _load_json(archive.read("schema.json"), "schema.json")
    found, stack = set(), [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__module__" in node and "__class__" in node:
                found.add(f"{node['__module__']}.{node['__class__']}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found
