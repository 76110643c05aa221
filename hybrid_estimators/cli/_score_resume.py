"""What ``hybrid-estimators score`` checks before it writes: the input and the output
as files, the lock, the sidecar and ``--resume``."""

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import stat
import sys
from collections import deque
from pathlib import Path

from .. import __version__
from .._io import atomic_write, json_safe
from ..scoring import ScoredLine, iter_lines, parse_line
from ._common import CommandError, check_filter_folder
from ._score_table import printable

logger = logging.getLogger("hybrid_estimators.cli")

#: Version 2: the filter's whole config, its adapter's hash, every option that changes a row.
SIDECAR_FORMAT = "hybrid-estimators-score/2"


def _filter_identity(folder):
    """What a filter scores with, read without a model: the resume identity.

    Name, version, dimensions, the probe's and the Stage 2 adapter's sha256,
    the sha256 of each score-map table (calibration, normalisation) as read
    from the folder, and ``config``: the config as parsed (every field that changes an
    output: tiers, weights, gatekeepers, threshold, ``stage2_weight``,
    prefilter, head-tail, models; the description aside).
    """
    from .._io import adapter_fingerprint
    from ..filters import FilterSpec, read_metadata, resolve_in_folder, score_map_hashes

    folder = check_filter_folder(folder)
    try:
        spec = FilterSpec.from_yaml(folder / "config.yaml")
        metadata = read_metadata(folder)
        stage2 = spec.hybrid_inference.get("stage2") or {}
        adapter = stage2.get("adapter") if isinstance(stage2, dict) else None
        if adapter:
            adapter = adapter_fingerprint(resolve_in_folder(folder, adapter, "hybrid_inference.stage2.adapter"))
        score_maps = score_map_hashes(folder, spec)
    except (ValueError, OSError) as error:  # FilterError is a ValueError
        raise CommandError(f"cannot load filter {folder}: {error}") from None
    config = dataclasses.asdict(spec)
    config.pop("description")
    for key in ("score_calibration", "normalisation"):  # absent without maps, as before filters had them
        if config["hybrid_inference"].get(key) is None:
            config["hybrid_inference"].pop(key, None)
    identity = {
        "name": spec.name,
        "version": spec.version,
        "probe_sha256": metadata.get("probe_sha256") if isinstance(metadata, dict) else None,
        "adapter_sha256": adapter,
        "dimensions": list(spec.dimension_names),
        "config": json_safe(config),
    }
    if score_maps:  # absent without maps: a run made before filters had them resumes as it did
        identity["score_maps_sha256"] = score_maps
    return identity


def _filters_identity(folders):
    """The identity of several filters scored in one pass: each one's, in output order."""
    filters = [_filter_identity(folder) for folder in folders]
    seen = set()
    for folder, identity in zip(folders, filters):
        if _short_name(identity) in seen:
            raise CommandError(f"--filter {folder} is {_short_name(identity)} again: give each filter once")
        seen.add(_short_name(identity))
    return {"filters": filters, "dimensions": {_short_name(f): f["dimensions"] for f in filters}}


def _short_name(identity):
    return f"{identity.get('name')}/{identity.get('version')}"


def _real(output):
    """The file `output` names, symbolic links resolved: what its lock and sidecar are keyed on."""
    return os.path.realpath(output)


def _sidecar_path(output):
    return Path(f"{_real(output)}.meta.json")


def _audit_path(output):
    return Path(f"{_real(output)}.audit.json")


def _lock_path(output):
    return Path(f"{_real(output)}.lock")


def _output_is_regular(output):
    """Whether `output` is (or will be created as) a regular file: only then a lock and sidecar."""
    try:
        return stat.S_ISREG(os.stat(output).st_mode)
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _input_name(input_path):
    return "standard input" if str(input_path) == "-" else str(input_path)


def _check_output_path(output, input_path, input_stat):
    """Refuse an output that would overwrite the input or cannot be written.

    `input_stat` is the ``os.fstat`` of the opened input (standard input
    included; None when it has no file): the output, its sidecar, lock and
    audit files are compared with it as files, symbolic and hard links
    resolved, before anything is read or truncated.
    """
    if output is None:
        return
    output = Path(output)
    folder = Path(_real(output)).parent
    if not folder.is_dir():
        reason = "does not exist" if not folder.exists() else "is not a folder"
        raise CommandError(f"cannot write {output}: {folder} {reason}")
    if output.is_dir():
        raise CommandError(f"cannot write {output}: it is a folder")
    if not _output_is_regular(output):
        return  # a device or a pipe: writing it destroys no file, and nothing is kept beside it
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CommandError(f"cannot write {output}: folder {folder} is not writable")
    if output.exists() and not os.access(output, os.W_OK):
        raise CommandError(f"cannot write {output}: it is not writable")
    if input_stat is None:
        return
    for path in (output, _sidecar_path(output), _lock_path(output), _audit_path(output)):
        try:
            found = os.stat(path)
        except OSError:  # does not exist (yet)
            continue
        if (found.st_dev, found.st_ino) == (input_stat.st_dev, input_stat.st_ino):
            raise CommandError(
                f"the output file must not be the input file: {path} is {_input_name(input_path)}"
            )


@contextlib.contextmanager
def _output_lock(output):
    """Hold ``OUT.lock`` while this run writes `output`; refuse if another run does."""
    if output is None or not _output_is_regular(output):
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    path = _lock_path(output)
    descriptor = _acquire(path, fcntl)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still holding it: see _acquire
        os.close(descriptor)


def _acquire(path, fcntl):
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise CommandError(f"cannot write {path}: {error.strerror or error}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(descriptor, 32).decode("ascii", "replace").strip() or "?"
            os.close(descriptor)
            output = str(path).removesuffix(".lock")
            raise CommandError(
                f"{output} is being written by another run (pid {holder}, lock {path}): "
                "wait for it to finish or stop it"
            ) from None
        # The previous holder unlinks the file before releasing it: a lock
        # taken on an unlinked file protects nothing, so take the new one.
        try:
            if os.fstat(descriptor).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(descriptor)
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    return descriptor


def _open_input(path):
    """The input as a binary file, and its ``os.fstat`` (None when it has no file).

    An input that is not a regular file (standard input, a pipe, a process
    substitution) is read once: nothing opens it again.
    """
    if str(path) == "-":
        source = sys.stdin.buffer
        try:
            return source, os.fstat(source.fileno())
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            return source, None
    try:
        source = open(path, "rb")
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror or error}") from None
    return source, os.fstat(source.fileno())


def _is_regular(input_stat):
    return input_stat is not None and stat.S_ISREG(input_stat.st_mode)


def _check_resumable(args, input_stat):
    """``--resume`` reads the input twice over (the rows written, then the rest): only a regular file."""
    if not _is_regular(input_stat):
        raise CommandError(
            f"--resume needs an input that is a regular file: {_input_name(args.input)} is not "
            "(a pipe or a stream is read once and cannot be checked against the output)"
        )
    if not _output_is_regular(args.output):
        raise CommandError(f"--resume needs an output that is a regular file: {args.output} is not")


class _InputLines:
    """The input's lines, counted and hashed as they are read, read-ahead kept.

    The hash is the sha256 of every line read so far, each without its line
    ending and followed by ``\\n``: the sidecar's ``input.sha256``.
    """

    def __init__(self, source):
        self._lines = iter_lines(source)
        self._sha256 = hashlib.sha256()
        self._ahead = deque()
        self.n_read = 0

    def take(self):
        """The next line from the input (None at its end), hashed."""
        line = next(self._lines, None)
        if line is not None:
            self._sha256.update(line + b"\n")
            self.n_read += 1
        return line

    def give_back(self, line):
        """Have the iteration yield `line` (already taken) before new ones."""
        self._ahead.append(line)

    def digest(self):
        return self._sha256.hexdigest()

    def __iter__(self):
        while self._ahead:
            yield self._ahead.popleft()
        while (line := self.take()) is not None:
            yield line



def _complete_rows(path):
    """Complete lines of an output and their bytes; checks the last one's ``line``."""
    n_done, complete, last = 0, 0, None
    with open(path, "rb") as file:
        for line in file:
            if not line.endswith(b"\n"):
                break
            n_done, complete, last = n_done + 1, complete + len(line), line
    if last is not None:
        try:
            last_line = json.loads(last)["line"]
        except (ValueError, KeyError, TypeError):
            last_line = None
        if last_line != n_done:
            raise CommandError(
                f"{path}: its line {n_done} is not the row of input line {n_done} "
                "(not an output of this command?): remove it or run without --resume"
            )
    return n_done, complete


def _drop_partial_row(path, complete):
    size = path.stat().st_size
    if complete < size:
        logger.info("%s: dropping a partial last line of %d bytes", path, size - complete)
        os.truncate(path, complete)



def _refuse(output, why):
    raise CommandError(f"cannot resume {output}: {why}: remove it or run without --resume")


def _read_sidecar(output):
    path = _sidecar_path(output)
    try:
        sidecar = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        _refuse(output, f"its sidecar {path} is unreadable ({error})")
    written = sidecar.get("format") if isinstance(sidecar, dict) else None
    if isinstance(written, str) and written.startswith("hybrid-estimators-score/") and written != SIDECAR_FORMAT:
        _refuse(output, f"{path} is of format {written}, written by another version of this command")
    if written != SIDECAR_FORMAT:
        _refuse(output, f"{path} is not a sidecar of this command")
    return sidecar


def _filter_name(identity):
    if "filters" in identity:
        return "filters " + ", ".join(_filter_name(one) for one in identity["filters"])
    probe = str(identity.get("probe_sha256"))[:12]
    return f"{_short_name(identity)} (probe {probe}…)"


def _differences(written, current, where=""):
    """The first field that differs between two JSON values, as ``(path, written, current)``."""
    if isinstance(written, dict) and isinstance(current, dict):
        for key in [*written, *(key for key in current if key not in written)]:
            found = _differences(written.get(key), current.get(key), f"{where}.{key}" if where else key)
            if found is not None:
                return found
        return None
    if isinstance(written, list) and isinstance(current, list) and len(written) == len(current):
        for index, (a, b) in enumerate(zip(written, current)):
            found = _differences(a, b, f"{where}[{index}]")
            if found is not None:
                return found
        return None
    return None if written == current else (where, written, current)


def _run_options(args):
    """The options of a run that change its rows' bytes (the sidecar's ``options``).

    ``runtime`` is what ``--backend`` and ``--dtype`` resolved to on this
    machine when the run started (``args.runtime``, see :func:`resolve_runtime`),
    per filter: a run resumed on a machine where ``auto`` picks another
    configuration is refused, as its rows would differ.
    """
    return {
        "stage1_only": args.stage1_only, "backend": args.backend, "dtype": args.dtype,
        "runtime": args.runtime,
        "batch_size": args.batch_size, "all_stage2": args.all_stage2,
        "audit": getattr(args, "audit", None), "audit_seed": getattr(args, "audit_seed", 0),
        "package_version": __version__,
        **({"text_columns": args.text_columns} if getattr(args, "text_columns", None) else {}),
    }


def resolve_runtime(args):
    """``{filter: {"stage1": backend, "stage2": dtype or None}}``, as ``load_filter`` will resolve them.

    Resolved once, when a run starts: the sidecar rewritten before every
    chunk records what the run's filters were loaded with.
    """
    from ..filters import FilterSpec, check_adapter_folder, read_metadata, runtime_configuration

    folders = args.filter if isinstance(args.filter, list) else [args.filter]
    chosen = {}
    for folder in folders:
        folder = check_filter_folder(folder)
        try:
            spec = FilterSpec.from_yaml(folder / "config.yaml")
            metadata = read_metadata(folder)
            adapter = None if args.stage1_only else check_adapter_folder(folder, spec)
            runtime = runtime_configuration(
                spec, metadata, adapter, backend=args.backend, dtype=args.dtype,
                device=getattr(args, "device", None), calibration=args.calibration,
                stage1_only=args.stage1_only,
            )
        except (ValueError, OSError) as error:  # FilterError is a ValueError
            raise CommandError(f"cannot load filter {folder}: {error}") from None
        chosen[spec.qualified_name] = {
            "stage1": runtime["stage1"]["backend"],
            "stage2": None if runtime["stage2"] is None else runtime["stage2"]["dtype"],
        }
    return chosen


def _check_sidecar(sidecar, identity, args, n_done):
    """Refuse a sidecar of another filter, config or options, naming the field; the lines it covers."""
    output = args.output
    try:
        written, options = sidecar["filter"], sidecar["options"]
        n_lines, _ = int(sidecar["input"]["lines"]), str(sidecar["input"]["sha256"])
    except (KeyError, TypeError, ValueError):
        _refuse(output, f"its sidecar {_sidecar_path(output)} lacks what it should hold")
    if written != identity:
        if "filters" in written or "filters" in identity:
            if _filter_names(written) != _filter_names(identity):
                _refuse(output, f"it was written with {_filter_name(written)}, not {_filter_name(identity)}")
        elif written.get("dimensions") != identity["dimensions"]:
            _refuse(output, f"it was written with dimensions {written.get('dimensions')}, "
                            f"not {identity['dimensions']}")
        elif _short_name(written) != _short_name(identity):
            _refuse(output, f"it was written with filter {_filter_name(written)}, not {_filter_name(identity)}")
        field, before, now = _differences(written, identity)
        _refuse(output, f"the filter differs from the one it was written with: {field} was "
                        f"{_shown(before)}, is {_shown(now)}")
    difference = _differences(options, _run_options(args))
    if difference is not None:
        option, before, now = difference
        if option.startswith("runtime."):
            stage = "Stage 1" if option.endswith(".stage1") else "Stage 2"
            flag = "--backend" if option.endswith(".stage1") else "--dtype"
            _refuse(output, f"its rows were computed with {stage} on {before} ({option}), this run's "
                            f"would be on {now}: pass {flag} {before} to resume it")
        _refuse(output, f"it was written with --{option.replace('_', '-')} {_shown(before)}, "
                        f"this run has {_shown(now)}")
    if n_lines < n_done:
        _refuse(output, f"it has {n_done} rows but its sidecar covers {n_lines} input lines")
    return n_lines


def _filter_names(identity):
    return [_short_name(one) for one in identity.get("filters", [identity])]


def _shown(value):
    return printable(json.dumps(value))[:80]


def _output_rows(path):
    with open(path, "rb") as file:
        for line in file:
            yield line


def _check_row(output_line, number, raw, dimensions, args):
    """Without a sidecar: is this output row the row of this input line?

    `dimensions` is the filter's list, or for several filters a dict of
    ``name/version`` to each one's list (the rows' ``filters``).
    """
    several = isinstance(dimensions, dict)
    try:
        row = json.loads(output_line)
        row_id, error, scores = row["id"], row["error"], row["filters" if several else "scores"]
    except (ValueError, KeyError, TypeError):
        _refuse(args.output, f"its line {number} is not a row of this command")
    parsed = parse_line(number, raw)
    expected = json.loads(ScoredLine(number, id=parsed.id).to_json())["id"]
    if row_id != expected:
        _refuse(
            args.output,
            f"its line {number} has id {printable(repr(row_id))[:60]} but line {number} "
            f"of {args.input} has id {printable(repr(expected))[:60]} (another input)",
        )
    if parsed.error is not None and error is None:
        _refuse(args.output, f"its line {number} is scored, but line {number} of {args.input} "
                             "is not a valid article (another input)")
    if several and error is None and list(scores) != list(dimensions):
        _refuse(args.output, f"its line {number} has filters {list(scores)}, this run "
                             f"{list(dimensions)} (other filters)")
    if not several and isinstance(scores, dict) and list(scores) != dimensions:
        _refuse(args.output, f"its line {number} has dimensions {list(scores)}, this filter "
                             f"{dimensions} (another filter)")


def _resume(args, identity, lines):
    """Check `args.output` against the input and the filter; the lines it already has.

    Reads the input up to the last line the output (or its sidecar) covers
    and gives back to `lines` those from the start of the chunk to re-score.
    Nothing is changed before every check passed.
    """
    output = Path(args.output)
    if not output.exists():
        logger.info("%s does not exist yet: starting from the first line", output)
        return 0
    n_done, complete = _complete_rows(output)
    sidecar = _read_sidecar(output) if n_done else None
    if sidecar is not None:
        n_check = _check_sidecar(sidecar, identity, args, n_done)
        rows = None
    else:
        n_check, rows = n_done, _output_rows(output)
    # Chunks start at multiples of batch_size, and a resumed run re-scores
    # the whole chunk it stopped in: every article is then embedded in the
    # same batch as in an uninterrupted run, so the bytes are the same.
    first_chunk_start = n_done - n_done % args.batch_size
    for number in range(1, n_check + 1):
        raw = lines.take()
        if raw is None:
            covered = f"{n_done} rows" if rows is not None else f"a sidecar covering {n_check} lines"
            _refuse(output, f"it has {covered} but {args.input} only {number - 1} lines "
                            "(not an output of this input)")
        if rows is not None:
            _check_row(next(rows), number, raw, identity["dimensions"], args)
        if number > first_chunk_start:
            lines.give_back(raw)
    if rows is not None:
        rows.close()
        if n_done:
            logger.warning(
                "%s has no sidecar %s: only its rows' ids and dimensions were checked "
                "against the input and the filter", output, _sidecar_path(output).name,
            )
    if sidecar is not None and lines.digest() != sidecar["input"]["sha256"]:
        _refuse(output, f"it was written from another input: the first {n_check} lines of "
                        f"{args.input} differ from those it was scored from")
    _drop_partial_row(output, complete)
    return n_done


def _write_sidecar(args, identity, lines):
    if not _output_is_regular(args.output):
        return  # no sidecar beside a device or a pipe
    sidecar = {
        "format": SIDECAR_FORMAT,
        "input": {"path": str(args.input), "lines": lines.n_read, "sha256": lines.digest()},
        "filter": identity,
        "options": _run_options(args),
    }
    try:
        atomic_write(_sidecar_path(args.output), json.dumps(sidecar, indent=1) + "\n")
    except OSError as error:
        raise CommandError(f"cannot write {_sidecar_path(args.output)}: {error}") from None


def _open_output(path, append):
    if path is None:
        return None
    try:
        return open(path, "ab" if append else "wb")
    except OSError as error:
        raise CommandError(f"cannot write {path}: {error.strerror or error}") from None


def _skip_record(folder):
    """The skip rate a filter's calibration expects at the threshold it routes at, and whether it routes.

    Read without a model, as :func:`_filter_identity` reads the filter
    (that checked it): ``(None, False)`` for a filter without Stage 2.
    """
    from ..filters import FilterSpec, read_metadata
    from ..scoring import recorded_skip_rate

    try:
        spec = FilterSpec.from_yaml(Path(folder) / "config.yaml")
        metadata = read_metadata(folder)
    except (ValueError, OSError):
        return None, False
    hybrid = spec.hybrid_inference
    return recorded_skip_rate(metadata, hybrid["threshold"]), hybrid.get("stage2") is not None


def _add_to_sidecar(output, **values):
    """Add `values` to the sidecar of a finished run (nothing without one)."""
    if output is None or not _output_is_regular(output):
        return
    path = _sidecar_path(output)
    try:
        sidecar = json.loads(path.read_bytes())
        sidecar.update(json_safe(values))
        atomic_write(path, json.dumps(sidecar, indent=1, allow_nan=False) + "\n")
    except FileNotFoundError:
        return
    except (OSError, ValueError) as error:
        raise CommandError(f"cannot write {path}: {error}") from None
