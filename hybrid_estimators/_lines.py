"""Input lines: split, read in blocks and numbered chunks, counted.

What :mod:`hybrid_estimators.scoring` reads its input with (re-exported
there): bytes in, lines without their endings out, never decoded here.
"""

from itertools import islice

__all__ = ["split_lines", "iter_lines", "read_chunks", "count_lines"]


def _strip_line_ending(line):
    if line.endswith(b"\r\n"):
        return line[:-2]
    if line.endswith((b"\n", b"\r")):
        return line[:-1]
    return line


def split_lines(data):
    """The lines of `data` (bytes), without their line endings.

    A line ends at ``\\n``, ``\\r\\n`` or a lone ``\\r``; a last line may
    lack its line ending, and a final line ending starts no new line.

    See Also
    --------
    iter_lines : The same, over a file read in blocks.

    Examples
    --------
    >>> split_lines(b"a\\rb\\r\\nc\\n\\nd")
    [b'a', b'b', b'c', b'', b'd']
    """
    return data.splitlines()  # bytes: breaks at \n, \r\n and \r only


def iter_lines(file, block_size=1 << 20):
    """Yield the lines of a binary `file` as :func:`split_lines` splits them.

    Reads `block_size` bytes at a time (``read1`` when the file has it, so
    that a pipe's lines come as soon as they arrive); a ``\\r\\n`` split
    between two blocks is one line ending.

    See Also
    --------
    split_lines : The same, over bytes in memory.
    read_chunks : Numbered lines, in chunks.
    """
    read = getattr(file, "read1", file.read)
    pieces, after_cr = [], False
    while block := read(block_size):
        if after_cr and block.startswith(b"\n"):  # the \n of a \r\n cut between blocks
            block = block[1:]
        after_cr = block.endswith(b"\r")
        lines = block.splitlines(keepends=True)
        if lines and not lines[-1].endswith((b"\n", b"\r")):
            tail = lines.pop()
        else:
            tail = None
        for line in lines:
            if pieces:
                line = b"".join([*pieces, line])
                pieces = []
            yield _strip_line_ending(line)
        if tail is not None:
            pieces.append(tail)
    if pieces:
        yield b"".join(pieces)


def read_chunks(source, batch_size, first_line=1):
    """Yield lists of ``(line_number, raw_bytes)``, `batch_size` at a time.

    Parameters
    ----------
    source : binary file or iterable of bytes
        A file is split with :func:`iter_lines`; an iterable gives one line
        per item (a line ending at its end is dropped).
    batch_size : int
        Lines per chunk.
    first_line : int, default=1
        Number of the first line.

    See Also
    --------
    iter_lines : The lines it numbers.
    score_lines : Scores one chunk.
    """
    if hasattr(source, "read"):
        lines = iter_lines(source)
    else:
        lines = (_strip_line_ending(line) for line in source)
    numbered = enumerate(lines, start=first_line)
    while chunk := list(islice(numbered, batch_size)):
        yield chunk


def count_lines(path):
    """Lines of a file as :func:`iter_lines` and :func:`read_chunks` see them.

    See Also
    --------
    read_chunks : Reads the lines counted.
    """
    n_endings, after_cr, last = 0, False, b""
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            n_endings += block.count(b"\n") + block.count(b"\r") - block.count(b"\r\n")
            n_endings -= after_cr and block.startswith(b"\n")  # a \r\n cut between blocks
            after_cr, last = block.endswith(b"\r"), block[-1:]
    return n_endings + (last not in (b"", b"\n", b"\r"))
