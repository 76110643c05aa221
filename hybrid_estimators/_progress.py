"""When the stages show progress bars: ``show_progress_bar=None`` means "auto"."""

import sys

#: Texts below which a pass is not long enough to deserve a bar.
LONG_WORK = 256


def progress_enabled(show_progress_bar, n_items, long_work=LONG_WORK):
    """Whether to show a bar over `n_items`: as set, or (None) for long work on a terminal.

    ``long_work`` is how many items make a pass long (a slow model needs fewer).

    The default of the ecosystem: no bars in logs, pipes, notebooks' captured
    stderr or cross-validation workers, whose stderr is no terminal, nor for
    short passes (each fold of a small search).

    Examples
    --------
    >>> progress_enabled(True, 1), progress_enabled(False, 10_000), progress_enabled(None, 3)
    (True, False, False)
    """
    if show_progress_bar is not None:
        return bool(show_progress_bar)
    return n_items >= long_work and sys.stderr.isatty()
