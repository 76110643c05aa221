"""When bars show: ``show_progress_bar=None`` means "auto"; model loading shows none unless asked."""

import contextlib
import functools
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


@contextlib.contextmanager
def loading_bars(shown):
    """Show the bars of model loading only if `shown`: all of them, or none.

    Hidden: transformers' bars (weights, shards), huggingface_hub's
    (downloads) and the "Converting and de-quantizing GGUF tensors" bar of
    transformers' GGUF loading, a plain tqdm that transformers' own switch
    does not reach. Everything is put back as it was on leaving.

    Examples
    --------
    >>> from transformers.utils import logging
    >>> with loading_bars(False):
    ...     logging.is_progress_bar_enabled()
    False
    """
    if shown:
        yield
        return
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )
    from transformers.utils import logging as hf_logging

    gguf_loading = _gguf_loading_module()
    transformers_shown = hf_logging.is_progress_bar_enabled()
    hub_shown = not are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    disable_progress_bars()
    if gguf_loading is not None:
        gguf_tqdm = gguf_loading.tqdm
        gguf_loading.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        yield
    finally:
        if gguf_loading is not None:
            gguf_loading.tqdm = gguf_tqdm
        if hub_shown:
            enable_progress_bars()
        if transformers_shown:
            hf_logging.enable_progress_bar()


def _gguf_loading_module():
    """transformers' GGUF loader, whose bar is a module-level ``tqdm``; None if it has none."""
    try:
        from transformers import modeling_gguf_pytorch_utils
    except ImportError:
        return None
    return modeling_gguf_pytorch_utils if hasattr(modeling_gguf_pytorch_utils, "tqdm") else None
