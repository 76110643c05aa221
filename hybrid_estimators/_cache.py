"""The router's process-wide caches: fitted stages and predictions, keyed by content.

Two bounded caches, module state (never part of a pickled estimator):

- **fits**, keyed by the unfitted stage's parameters and its training data
  (:func:`fit_key`). An entry holds the fitted stage's pickled bytes and its
  fingerprint; every hit unpickles a fresh copy, so no two routers ever
  share a fitted object (changing one router's stage never changes
  another's), as scikit-learn gives each meta-estimator its own clone.
- **predictions**, keyed by a fingerprint of the fitted stage's state
  (:func:`fitted_state_fingerprint`) and a hash of the row, so that a
  result computed by one fitted state is never returned for another.

A fingerprint hashes the whole fitted stage (about 90 ms for a Stage 1
pipeline whose tokenizer pickles to 9 MB), so it is not recomputed per
call: :class:`StageFingerprints` keeps it per stage object, with the
identities of everything the stage's estimators hold
(:func:`state_signature`, microseconds to check). A stage refitted in
place or changed with ``set_params`` (also inside a ``FrozenEstimator``)
holds new objects, so it is fingerprinted again on its next call. Only a
change written *into* an object it already holds (an array changed in
place, a loaded model's weights) goes unseen: after such a change refit
the router, which fingerprints its stages again, or use ``cache=False``.
"""

import hashlib
import logging
import pickle
import time
import weakref
from collections import OrderedDict

import joblib
import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.base import BaseEstimator, clone
from sklearn.utils import _safe_indexing

__all__ = [
    "MAX_CACHED_FITS",
    "MAX_CACHED_ROWS",
    "StageFingerprints",
    "cache_info",
    "clear_cache",
    "fingerprints_of",
    "fitted_state_fingerprint",
    "measured_seconds_per_row",
]

logger = logging.getLogger(__name__)

#: Most fitted stages the process keeps (least recently used go first).
MAX_CACHED_FITS = 16
#: Most cached prediction rows, all stages together.
MAX_CACHED_ROWS = 500_000


class _Caches:
    """Fitted stages by (params, training data); predictions by (fitted state, row)."""

    def __init__(self):
        self.fits = OrderedDict()
        self.predictions = OrderedDict()
        self.n_rows = 0
        # Timings describe an object, not a result: kept per live object, and
        # per fitted state for the copies of a cached fit (which never ran).
        self.seconds_per_row = weakref.WeakKeyDictionary()
        self.seconds_per_state = OrderedDict()
        self.state_of = weakref.WeakKeyDictionary()
        self.hits = {"fit": 0, "rows": 0}

    def clear(self):
        self.__init__()

    def get_fit(self, key):
        if key in self.fits:
            self.fits.move_to_end(key)
            self.hits["fit"] += 1
            return self.fits[key]
        return None

    def put_fit(self, key, entry):
        self.fits[key] = entry
        while len(self.fits) > MAX_CACHED_FITS:
            self.fits.popitem(last=False)

    def rows(self, token, namespace):
        key = (token, namespace)
        if key not in self.predictions:
            self.predictions[key] = {}
        self.predictions.move_to_end(key)
        return self.predictions[key]

    def added(self, n_rows):
        self.n_rows += n_rows
        while self.n_rows > MAX_CACHED_ROWS and len(self.predictions) > 1:
            _, evicted = self.predictions.popitem(last=False)
            self.n_rows -= len(evicted)


_CACHES = _Caches()


def clear_cache():
    """Forget every cached fitted stage and prediction of this process.

    Examples
    --------
    >>> clear_cache()
    >>> cache_info()
    {'fits': 0, 'rows': 0, 'fit_hits': 0, 'row_hits': 0}
    """
    _CACHES.clear()


def cache_info():
    """Sizes of the process-wide caches: ``{"fits", "rows", "fit_hits", "row_hits"}``."""
    return {
        "fits": len(_CACHES.fits),
        "rows": _CACHES.n_rows,
        "fit_hits": _CACHES.hits["fit"],
        "row_hits": _CACHES.hits["rows"],
    }


def fitted_state_fingerprint(estimator):
    """Hash of a fitted estimator's whole state, None if it cannot be hashed.

    Two objects with the same parameters and fitted attributes share a
    fingerprint; refitting an object in place changes it. Estimators that
    hold a loaded model drop it when pickled (``__getstate__``), so only
    their parameters and learned arrays are hashed.

    Examples
    --------
    >>> from sklearn.linear_model import Ridge
    >>> a, b = Ridge().fit([[0], [1]], [0, 1]), Ridge().fit([[0], [1]], [0, 1])
    >>> fitted_state_fingerprint(a) == fitted_state_fingerprint(b)
    True
    >>> fitted_state_fingerprint(a) == fitted_state_fingerprint(a.fit([[0], [1]], [1, 0]))
    False
    """
    try:
        return joblib.hash(estimator)
    except Exception:  # an unpicklable attribute: never cached
        logger.debug("cannot fingerprint %r", type(estimator), exc_info=True)
        return None


#: Containers longer than this are compared as one object, not item by item
#: (an estimator's ``estimators_`` list is walked, a ``vocabulary_`` dict is not).
MAX_WALKED_ITEMS = 256


def state_signature(estimator):
    """Everything `estimator` holds, recursively through estimators and small containers.

    The objects themselves (not their ids, which a freed object's successor
    may take): two signatures are equal when they hold the very same objects
    in the same places, which is what refitting in place or ``set_params``
    changes.
    """
    parts, seen = [], set()

    def walk(value):
        parts.append(value)
        if id(value) in seen:
            return
        if isinstance(value, (list, tuple, dict)) and len(value) > MAX_WALKED_ITEMS:
            parts.append(len(value))
        elif isinstance(value, BaseEstimator):
            seen.add(id(value))
            for key, attribute in vars(value).items():
                parts.append(key)
                walk(attribute)
        elif isinstance(value, (list, tuple)):
            seen.add(id(value))
            parts.append(len(value))
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            seen.add(id(value))
            parts.append(len(value))
            for key, item in value.items():
                parts.append(key)
                walk(item)

    walk(estimator)
    return parts


def _same_signature(first, second):
    return len(first) == len(second) and all(a is b for a, b in zip(first, second))


class StageFingerprints:
    """One router's fingerprints of its fitted stages, computed once per state.

    :meth:`get` returns the fingerprint it stored for this very object
    while the object holds the same things (:func:`state_signature`), and
    fingerprints it again otherwise. Kept beside the router, never in it
    (:func:`fingerprints_of`): nothing stale is pickled or copied with it,
    and predicting leaves the router's ``__dict__`` unchanged.
    """

    def __init__(self):
        self._entries = {}

    def set(self, stage, fingerprint):
        """Record `fingerprint` as the fingerprint of `stage` as it is now."""
        if fingerprint is not None:
            self._entries[id(stage)] = (stage, state_signature(stage), fingerprint)
            try:
                _CACHES.state_of[stage] = fingerprint
            except TypeError:  # not weak-referenceable
                pass

    def get(self, stage):
        """The fingerprint of `stage` as it is now (None if it cannot be hashed)."""
        entry = self._entries.get(id(stage))
        if entry is not None and entry[0] is stage:
            _, signature, fingerprint = entry
            if _same_signature(signature, state_signature(stage)):
                return fingerprint
            logger.debug("%s changed since it was fingerprinted", type(stage).__name__)
        fingerprint = fitted_state_fingerprint(stage)
        self.set(stage, fingerprint)
        return fingerprint


_FINGERPRINTS = weakref.WeakKeyDictionary()


def fingerprints_of(owner, *, reset=False):
    """The :class:`StageFingerprints` of `owner` (a router), new when `reset` or first asked.

    A copy, a clone or an unpickled router is another object: it starts
    with none and fingerprints its stages on first use.
    """
    try:
        if reset or owner not in _FINGERPRINTS:
            _FINGERPRINTS[owner] = StageFingerprints()
        return _FINGERPRINTS[owner]
    except TypeError:  # not weak-referenceable or hashable: fingerprinted on every call
        return StageFingerprints()


def measured_seconds_per_row(estimator):
    """Mean seconds per row of the last real (uncached) predictions of `estimator`.

    Those of another object in the same fitted state (a copy of the same
    cached fit, whose rows came from the cache) when `estimator` never ran.
    """
    try:
        seconds = _CACHES.seconds_per_row.get(estimator)
        if seconds is None:
            seconds = _CACHES.seconds_per_state.get(_CACHES.state_of.get(estimator))
        return seconds
    except TypeError:  # not weak-referenceable
        return None


def _record_seconds(estimator, fingerprint, seconds_per_row):
    try:
        _CACHES.seconds_per_row[estimator] = seconds_per_row
    except TypeError:
        pass
    if fingerprint is not None:
        _CACHES.seconds_per_state[fingerprint] = seconds_per_row
        _CACHES.seconds_per_state.move_to_end(fingerprint)
        while len(_CACHES.seconds_per_state) > MAX_CACHED_FITS * 64:
            _CACHES.seconds_per_state.popitem(last=False)


# --- fits ------------------------------------------------------------------------


def fit_key(stage, X, y, fit_params):
    """Hash of the unfitted stage's params and of the training data, or None."""
    try:
        return joblib.hash((clone(stage), X, y, fit_params))
    except Exception:  # an unpicklable parameter or input: fit without caching
        logger.debug("cannot hash %r for the fit cache", stage, exc_info=True)
        return None


def cached_fit(key):
    """A fresh copy of the stage fitted under `key` and its fingerprint, or None."""
    entry = None if key is None else _CACHES.get_fit(key)
    if entry is None:
        return None
    payload, fingerprint = entry
    return pickle.loads(payload), fingerprint


def store_fit(key, fitted):
    """Keep a copy of `fitted` under `key`; return its fingerprint (None: not cacheable)."""
    fingerprint = fitted_state_fingerprint(fitted)
    if key is None or fingerprint is None:
        return fingerprint
    try:
        payload = pickle.dumps(fitted, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        logger.debug("cannot pickle %r for the fit cache", type(fitted), exc_info=True)
        return fingerprint
    _CACHES.put_fit(key, (payload, fingerprint))
    return fingerprint


# --- predictions -----------------------------------------------------------------


def _hash_bytes(*parts):
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(part)
    return digest.digest()


def row_keys(X):
    """One hashable key per row of `X`, plus a namespace of the input's layout.

    Returns ``(None, None)`` for inputs whose rows cannot be hashed: they are
    then predicted without the cache.
    """
    try:
        if isinstance(X, pd.DataFrame):
            namespace = joblib.hash(("DataFrame", [str(c) for c in X.columns]))
            try:
                keys = pd.util.hash_pandas_object(X, index=False).to_numpy().tolist()
            except TypeError:  # unhashable cells such as dicts or lists
                keys = [joblib.hash(row) for row in X.itertuples(index=False)]
            return namespace, keys
        if sparse.issparse(X):
            X = X.tocsr()
            namespace = joblib.hash(("sparse", X.dtype.str, X.shape[1]))
            keys = [
                _hash_bytes(
                    X.indices[X.indptr[i] : X.indptr[i + 1]].tobytes(),
                    X.data[X.indptr[i] : X.indptr[i + 1]].tobytes(),
                )
                for i in range(X.shape[0])
            ]
            return namespace, keys
        if isinstance(X, np.ndarray) and X.dtype != object:
            namespace = joblib.hash(("ndarray", X.dtype.str, X.shape[1:]))
            rows = np.ascontiguousarray(X).reshape(X.shape[0], -1)
            return namespace, [_hash_bytes(row.tobytes()) for row in rows]
        namespace = joblib.hash(type(X).__name__)
        return namespace, [joblib.hash(row) for row in X]
    except Exception:
        logger.debug("cannot hash the rows of %s for the cache", type(X), exc_info=True)
        return None, None


def as_2d(predictions):
    predictions = np.asarray(predictions, dtype=float)
    return predictions.reshape(-1, 1) if predictions.ndim == 1 else predictions


def predict_rows(predict, estimator, fingerprint, X, keys, namespace):
    """``predict(X)`` as a 2-D float array, computing only rows not yet cached.

    `fingerprint` is `estimator`'s (:class:`StageFingerprints`); None, or
    `keys` None, predicts without the cache.
    """
    token = None if fingerprint is None else (fingerprint, getattr(predict, "__name__", ""))
    if token is None or keys is None:
        started = time.perf_counter()
        predictions = as_2d(predict(X))
        if predictions.shape[0]:
            seconds = (time.perf_counter() - started) / predictions.shape[0]
            _record_seconds(estimator, fingerprint, seconds)
        return predictions
    stored = _CACHES.rows(token, namespace)
    missing = [i for i, key in enumerate(keys) if key not in stored]
    _CACHES.hits["rows"] += len(keys) - len(missing)
    if missing:
        started = time.perf_counter()
        todo = X if len(missing) == len(keys) else _safe_indexing(X, missing)
        computed = as_2d(predict(todo))
        _record_seconds(estimator, fingerprint, (time.perf_counter() - started) / len(missing))
        for i, row in zip(missing, computed):
            stored[keys[i]] = row
        _CACHES.added(len(missing))
    return np.stack([stored[key] for key in keys])
