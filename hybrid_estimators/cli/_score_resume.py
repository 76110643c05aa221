"""What ``hybrid-estimators score`` checks before it writes: the input and the output
as files, the lock, the sidecar and ``--resume``."""

import contextlib
import hashlib
import json
import logging
import os
import sys
from collections import deque
from pathlib import Path

from .._io import atomic_write
from ..scoring import ScoredLine, iter_lines, parse_line
from ._common import CommandError, check_filter_folder
from ._score_table import printable

logger = logging.getLogger("hybrid_estimators.cli")

SIDECAR_FORMAT = "hybrid-estimators-score/1"


def _filter_identity(folder):
    """Name, version, probe sha256 and dimensions of a filter, read without a model."""
    from ..filters import METADATA_FILE, FilterSpec

    folder = check_filter_folder(folder)
    try:
        spec = FilterSpec.from_yaml(folder / "config.yaml")
        metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:  # FilterError is a ValueError
        raise CommandError(f"cannot load filter {folder}: {error}") from None
    return {
        "name": spec.name,
        "version": spec.version,
        "probe_sha256": metadata.get("probe_sha256") if isinstance(metadata, dict) else None,
        "dimensions": list(spec.dimension_names),
    }


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


def _sidecar_path(output):
    return Path(f"{output}.meta.json")


def _lock_path(output):
    return Path(f"{output}.lock")


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def _check_output_path(output, input_path):
    """Refuse an output that would overwrite the input or cannot be written."""
    if output is None:
        return
    output = Path(output)
    folder = output.parent
    if not folder.is_dir():
        reason = "does not exist" if not folder.exists() else "is not a folder"
        raise CommandError(f"cannot write {output}: {folder} {reason}")
    if output.is_dir():
        raise CommandError(f"cannot write {output}: it is a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CommandError(f"cannot write {output}: folder {folder} is not writable")
    if output.exists() and not os.access(output, os.W_OK):
        raise CommandError(f"cannot write {output}: it is not writable")
    if str(input_path) == "-":
        return
    for path in (output, _sidecar_path(output), _lock_path(output)):
        if _same_file(path, input_path):
            raise CommandError(
                f"the output file must not be the input file: {path} is {input_path}"
            )


@contextlib.contextmanager
def _output_lock(output):
    """Hold ``OUT.lock`` while this run writes `output`; refuse if another run does."""
    if output is None:
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
    if str(path) == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror or error}") from None


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
    if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT:
        _refuse(output, f"{path} is not a sidecar of this command")
    return sidecar


def _filter_name(identity):
    if "filters" in identity:
        return "filters " + ", ".join(_filter_name(one) for one in identity["filters"])
    probe = str(identity.get("probe_sha256"))[:12]
    return f"{_short_name(identity)} (probe {probe}…)"


def _check_sidecar(sidecar, identity, args, n_done):
    """Refuse a sidecar of another filter or options; return the lines it covers."""
    output = args.output
    try:
        written, options = sidecar["filter"], sidecar["options"]
        n_lines, _ = int(sidecar["input"]["lines"]), str(sidecar["input"]["sha256"])
    except (KeyError, TypeError, ValueError):
        _refuse(output, f"its sidecar {_sidecar_path(output)} lacks what it should hold")
    if written != identity:
        if "filters" in written or "filters" in identity:
            what = f"{_filter_name(written)}, not {_filter_name(identity)}"
        elif written.get("dimensions") != identity["dimensions"]:
            what = f"dimensions {written.get('dimensions')}, not {identity['dimensions']}"
        else:
            what = f"filter {_filter_name(written)}, not {_filter_name(identity)}"
        _refuse(output, f"it was written with {what}")
    for option in ("stage1_only", "backend", "all_stage2"):
        if options.get(option, False if option == "all_stage2" else None) != getattr(args, option):
            _refuse(
                output,
                f"it was written with --{option.replace('_', '-')} {options.get(option)}, "
                f"this run has {getattr(args, option)}",
            )
    if options.get("batch_size") != args.batch_size:
        logger.warning(
            "%s was written with --batch-size %s: with %d the resumed rows' scores may "
            "differ in the last decimals", output, options.get("batch_size"), args.batch_size,
        )
    if n_lines < n_done:
        _refuse(output, f"it has {n_done} rows but its sidecar covers {n_lines} input lines")
    return n_lines


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
    sidecar = {
        "format": SIDECAR_FORMAT,
        "input": {"path": str(args.input), "lines": lines.n_read, "sha256": lines.digest()},
        "filter": identity,
        "options": {
            "stage1_only": args.stage1_only, "backend": args.backend,
            "batch_size": args.batch_size, "all_stage2": args.all_stage2,
        },
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
