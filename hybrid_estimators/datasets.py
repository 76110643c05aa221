"""Article data sets: synthetic ones for tests, labelled folders for real work."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state

from .tiers import DEFAULT_TIERS

#: Largest ``filter.yaml`` of a labelled folder, in bytes.
MAX_LABELLED_CONFIG_BYTES = 1 << 20
#: Largest ``articles.jsonl`` of a labelled folder, in bytes.
MAX_LABELLED_ARTICLES_BYTES = 4 << 30

#: Dimension -> the words whose presence raises its score in `make_articles`.
SYNTHETIC_SIGNALS = {
    "energy_progress": ["solar", "wind turbine", "battery storage", "power grid"],
    "health_benefit": ["hospital", "vaccine", "doctors", "patients"],
    "economic_impact": ["investment", "new jobs", "market growth", "exports"],
}
_FILLER = [
    "The report was published on Tuesday.",
    "Officials said more details would follow next month.",
    "Residents gathered in the town square to discuss the plans.",
    "The weather stayed cloudy for most of the week.",
    "A spokesperson declined to comment further.",
    "Local newspapers covered the story in detail.",
    "The meeting lasted for more than three hours.",
    "Critics and supporters both attended the event.",
]
_TEMPLATES = [
    "Experts pointed to {signal} as the main topic of the day.",
    "The project centres on {signal}.",
    "A new plan mentions {signal} in its first chapter.",
    "Much of the debate was about {signal}.",
]
SCORE_PER_SIGNAL = 2.5


def make_articles(n_samples=100, *, random_state=None):
    """Generate news-like articles whose scores are a known function of their words.

    Each dimension of :data:`SYNTHETIC_SIGNALS` has four signal phrases; an
    article's score on that dimension is ``2.5 *`` the number of distinct
    signal phrases of the dimension it contains (0 to 10). Neutral filler
    sentences surround them, so a model that reads the words can learn the
    scores exactly while one that does not cannot.

    Parameters
    ----------
    n_samples : int, default=100
        Number of articles.
    random_state : int, RandomState instance or None, default=None
        Seed of the generator.

    Returns
    -------
    X : DataFrame of shape (n_samples, 4)
        Columns ``id``, ``title``, ``content``, ``language``.
    Y : DataFrame of shape (n_samples, 3)
        One column of scores (0-10) per dimension.

    See Also
    --------
    load_articles : Real labelled articles, in the same layout.
    hybrid_estimators.router.HybridRouterRegressor : A cascade to fit on them.

    Examples
    --------
    >>> X, Y = make_articles(5, random_state=0)
    >>> X.columns.tolist(), Y.shape
    (['id', 'title', 'content', 'language'], (5, 3))
    """
    rng = check_random_state(random_state)
    rows, scores = [], []
    for i in range(n_samples):
        sentences = list(rng.choice(_FILLER, size=3, replace=False))
        article_scores = []
        for signals in SYNTHETIC_SIGNALS.values():
            n_signals = rng.randint(0, len(signals) + 1)
            for signal in rng.choice(signals, size=n_signals, replace=False):
                template = _TEMPLATES[rng.randint(len(_TEMPLATES))]
                sentences.append(template.format(signal=signal))
            article_scores.append(SCORE_PER_SIGNAL * n_signals)
        rng.shuffle(sentences)
        rows.append(
            {
                "id": f"synthetic-{i:05d}",
                "title": sentences[0],
                "content": " ".join(sentences[1:]),
                "language": "en",
            }
        )
        scores.append(article_scores)
    X = pd.DataFrame(rows, columns=["id", "title", "content", "language"])
    Y = pd.DataFrame(np.array(scores, dtype=float), columns=list(SYNTHETIC_SIGNALS))
    return X, Y


def shared_data_dir():
    """Folder of the real labelled data sets, or None when it is absent.

    ``$HYBRID_ESTIMATORS_SHARED_DATA`` when set, else ``../shared/data``
    beside the project checkout.

    See Also
    --------
    load_articles : Reads a labelled folder of it.
    """
    configured = os.environ.get("HYBRID_ESTIMATORS_SHARED_DATA")
    folder = (
        Path(configured)
        if configured
        else Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    return folder if folder.is_dir() else None


def load_articles(folder):
    """Read a labelled folder (``articles.jsonl`` + ``filter.yaml``).

    Parameters
    ----------
    folder : str or path-like
        A folder such as ``../shared/data/seece_energy_tech``: one JSON
        article a line with ``id``, ``title``, ``content``, ``language`` and
        ``scores`` (dimension -> 0-10), and a ``filter.yaml`` with the
        dimension weights and tiers.

    Returns
    -------
    X : DataFrame
        Columns ``id``, ``title``, ``content``, ``language``.
    Y : DataFrame
        One column per dimension, in the order of ``filter.yaml``.
    spec : dict
        ``name``, ``dimensions`` (name -> weight) and ``tiers``.

    See Also
    --------
    make_articles : Generated articles, in the same layout.
    hybrid_estimators.filters.FilterSpec : The configuration of a filter
        trained on them.

    Examples
    --------
    >>> from hybrid_estimators.datasets import shared_data_dir
    >>> folder = shared_data_dir()
    >>> if folder is not None:
    ...     X, Y, spec = load_articles(folder / "seece_energy_tech")
    """
    from .filters._safe_io import FilterError, _load_yaml, read_regular_file

    folder = Path(folder)
    config = folder / "filter.yaml"
    try:
        spec = _load_yaml(read_regular_file(config, MAX_LABELLED_CONFIG_BYTES, "filter.yaml"), str(config))
    except (FilterError, OSError) as error:
        raise ValueError(f"{config}: {error}" if str(config) not in str(error) else str(error)) from None
    dimensions = _labelled_dimensions(spec, config)
    spec.setdefault("tiers", dict(DEFAULT_TIERS))
    rows, scores = [], []
    path = folder / "articles.jsonl"
    try:
        data = read_regular_file(path, MAX_LABELLED_ARTICLES_BYTES, "articles.jsonl")
    except (FilterError, OSError) as error:
        raise ValueError(f"{path}: {error}" if str(path) not in str(error) else str(error)) from None
    for line_number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        try:
            article = json.loads(line)
        except ValueError as error:
            raise ValueError(f"{where}: not a JSON object: {error}") from None
        if not isinstance(article, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(article).__name__}.")
        where = f"{where} (id={article.get('id')!r})"
        given = article.get("scores", {})
        if not isinstance(given, dict):
            raise ValueError(f"{where}: scores must be an object of dimension -> 0-10, got {given!r}.")
        missing = [d for d in dimensions if d not in given]
        if missing:
            raise ValueError(f"{where} has no score for {missing}.")
        try:
            scores.append([float(given[d]) for d in dimensions])
        except (TypeError, ValueError):
            raise ValueError(f"{where}: scores must be numbers, got {given!r}.") from None
        rows.append(
            {
                "id": article.get("id", f"line-{line_number}"),
                "title": article.get("title", ""),
                "content": article.get("content", ""),
                "language": article.get("language"),
            }
        )
    X = pd.DataFrame(rows, columns=["id", "title", "content", "language"])
    Y = pd.DataFrame(np.array(scores, dtype=float).reshape(-1, len(dimensions)), columns=dimensions)
    return X, Y, spec


def _labelled_dimensions(spec, config):
    """The dimension names of a labelled folder's ``filter.yaml``, or an error naming it."""
    if not isinstance(spec, dict):
        what = "empty" if spec is None else f"a {type(spec).__name__}, not a mapping"
        raise ValueError(f"{config}: is {what}; expected name, dimensions and tiers.")
    dimensions = spec.get("dimensions")
    if not isinstance(dimensions, dict) or not dimensions:
        raise ValueError(f"{config}: dimensions must be a non-empty mapping of name -> weight, got {dimensions!r}.")
    tiers = spec.get("tiers")
    if tiers is not None and not isinstance(tiers, dict):
        raise ValueError(f"{config}: tiers must be a mapping of tier -> lowest score, got {tiers!r}.")
    return [str(name) for name in dimensions]
