"""HybridRouterRegressor: routing, caches, properties, bad input, estimator checks."""

import copy
import pickle
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.tree import DecisionTreeRegressor
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from hybrid_estimators.datasets import make_articles
from hybrid_estimators.embedding import E5Embedder
from hybrid_estimators.router import HybridRouterRegressor, cache_info, clear_cache
from hybrid_estimators.text import ArticleText
from hybrid_estimators.tiers import weighted_average

# --- cheap real estimators over numeric features ------------------------------


def numeric_data(n_samples=120, random_state=0):
    """Scores spread over 0-10 that Ridge learns roughly and k-NN closely."""
    rng = np.random.RandomState(random_state)
    X = rng.uniform(0, 10, size=(n_samples, 3))
    Y = np.c_[X[:, 0], 0.5 * (X[:, 1] + X[:, 0]), np.sqrt(10 * X[:, 2])]
    return X, np.clip(Y + rng.normal(scale=0.3, size=Y.shape), 0, 10)


@pytest.fixture(scope="module")
def numeric_router():
    X, Y = numeric_data()
    router = HybridRouterRegressor(
        Ridge(), KNeighborsRegressor(n_neighbors=3), [0.5, 0.3, 0.2], threshold=5.0
    )
    return router.fit(X, Y), X, Y


@parametrize_with_checks(
    [
        HybridRouterRegressor(Ridge(), DecisionTreeRegressor(random_state=0)),
        HybridRouterRegressor(
            Ridge(), KNeighborsRegressor(n_neighbors=2), threshold=0.0, cache=False
        ),
        HybridRouterRegressor(
            Ridge(), DecisionTreeRegressor(random_state=0), routing_score="max_dimension"
        ),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# --- properties ----------------------------------------------------------------

thresholds = st.floats(min_value=-2.0, max_value=12.0, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(threshold=thresholds, rows=st.lists(st.integers(0, 119), min_size=1, max_size=40))
def test_each_row_gets_exactly_its_stages_scores(numeric_router, threshold, rows):
    router, X, _ = numeric_router
    router = copy.copy(router).set_params(threshold=threshold)
    X = X[rows]
    routed = router.route(X)
    predicted = router.predict(X)
    report = router.predict_report(X)

    assert predicted.shape == (len(rows), 3)
    assert report["stage_used"].isin(["stage1", "stage2"]).all()
    np.testing.assert_array_equal(report["stage_used"] == "stage2", routed)
    if not routed.all():
        np.testing.assert_allclose(
            predicted[~routed], np.clip(router.stage1_.predict(X[~routed]), 0, 10), rtol=1e-12
        )
    if routed.any():
        np.testing.assert_allclose(
            predicted[routed], np.clip(router.stage2_.predict(X[routed]), 0, 10), rtol=1e-12
        )
    stage1_average = np.clip(weighted_average(router.stage1_.predict(X), router.weights_), 0, 10)
    np.testing.assert_array_equal(routed, stage1_average >= threshold)


@settings(max_examples=40, deadline=None)
@given(threshold=thresholds, stage2_weight=st.floats(0.0, 1.0),
       rows=st.lists(st.integers(0, 119), min_size=1, max_size=40))
def test_routed_rows_get_the_stage2_weight_blend_and_skipped_rows_stage1(
    numeric_router, threshold, stage2_weight, rows
):
    router, X, _ = numeric_router
    router = copy.copy(router).set_params(threshold=threshold, stage2_weight=stage2_weight)
    X = X[rows]
    routed = router.route(X)
    stage1, stage2 = router.stage1_.predict(X), router.stage2_.predict(X)
    blend = np.clip(stage2_weight * stage2 + (1 - stage2_weight) * stage1, 0, 10)

    predicted = router.predict(X)
    np.testing.assert_allclose(predicted[routed], blend[routed], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(predicted[~routed], np.clip(stage1[~routed], 0, 10), rtol=1e-12)
    np.testing.assert_allclose(router.predict_stage2(X), blend, rtol=1e-12, atol=1e-12)
    # A routed row's score lies between the two stages' (clipped) scores.
    low = np.minimum(np.clip(stage1, 0, 10), np.clip(stage2, 0, 10))
    high = np.maximum(np.clip(stage1, 0, 10), np.clip(stage2, 0, 10))
    assert np.all(predicted[routed] >= low[routed] - 1e-9) and np.all(predicted[routed] <= high[routed] + 1e-9)


def test_stage2_weight_is_validated_and_predict_stage2_needs_a_stage2():
    X, Y = numeric_data()
    for bad in (-0.1, 1.5, np.nan, "half"):
        with pytest.raises(InvalidParameterError, match="'stage2_weight' parameter"):
            HybridRouterRegressor(Ridge(), Ridge(), stage2_weight=bad).fit(X, Y)
    with pytest.raises(ValueError, match="has no Stage 2"):
        HybridRouterRegressor(Ridge()).fit(X, Y).predict_stage2(X)


@settings(max_examples=40, deadline=None)
@given(low=thresholds, high=thresholds)
def test_skip_rate_does_not_decrease_with_threshold(numeric_router, low, high):
    router, X, _ = numeric_router
    low, high = sorted((low, high))
    skipped_low = ~copy.copy(router).set_params(threshold=low).route(X)
    skipped_high = ~copy.copy(router).set_params(threshold=high).route(X)
    assert skipped_low.mean() <= skipped_high.mean()
    assert not (skipped_low & ~skipped_high).any()  # a row skipped stays skipped


@settings(max_examples=20, deadline=None)
@given(
    below=st.floats(min_value=-100, max_value=0),
    above=st.floats(min_value=10.0001, max_value=100),
)
def test_threshold_at_most_zero_routes_all_above_ten_none(numeric_router, below, above):
    router, X, _ = numeric_router
    assert copy.copy(router).set_params(threshold=below).route(X).all()
    assert not copy.copy(router).set_params(threshold=above).route(X).any()


@settings(max_examples=30, deadline=None)
@given(permutation=st.permutations(list(range(30))))
def test_output_follows_input_order(numeric_router, permutation):
    router, X, _ = numeric_router
    X = X[:30]
    np.testing.assert_array_equal(
        router.predict(X[permutation]), router.predict(X)[permutation]
    )
    assert len(router.predict_report(X[permutation])) == 30


# --- fitting, prefit and frozen stages -------------------------------------------


class CountingKNN(KNeighborsRegressor):
    """A real k-NN regressor that counts its fits, predict calls and predicted rows."""

    fits = 0
    predicted_rows = Counter()
    batch_sizes = []

    def fit(self, X, y):
        type(self).fits += 1
        return super().fit(X, y)

    def predict(self, X):
        rows = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
        type(self).batch_sizes.append(len(rows))
        for row in rows:
            type(self).predicted_rows[row.tobytes()] += 1
        return super().predict(X)


def test_frozen_stage_is_used_as_is_and_others_are_refitted():
    X, Y = numeric_data()
    clear_cache()
    CountingKNN.fits = 0
    fitted = CountingKNN(n_neighbors=3).fit(X, Y)
    router = HybridRouterRegressor(Ridge(), FrozenEstimator(fitted), threshold=0.0)
    router.fit(X[:60], Y[:60])
    assert CountingKNN.fits == 1
    assert router.stage2_.estimator is fitted
    np.testing.assert_array_equal(router.predict(X), fitted.predict(X))

    refitted = HybridRouterRegressor(Ridge(), fitted, threshold=0.0).fit(X[:60], Y[:60])
    assert CountingKNN.fits == 2
    assert refitted.stage2_ is not fitted
    assert refitted.stage2_.n_samples_fit_ == 60


def test_prefit_stage_must_be_fitted_and_is_not_refitted():
    X, Y = numeric_data()
    fitted = KNeighborsRegressor().fit(X, Y)
    router = HybridRouterRegressor(Ridge(), fitted, prefit=["stage2"]).fit(X[:50], Y[:50])
    assert router.stage2_ is fitted
    assert router.stage2_.n_samples_fit_ == 120

    with pytest.raises(Exception, match="stage2 is marked prefit"):
        HybridRouterRegressor(Ridge(), KNeighborsRegressor(), prefit=["stage2"]).fit(X, Y)
    with pytest.raises(ValueError, match="prefit may only name"):
        HybridRouterRegressor(Ridge(), Ridge(), prefit=["stage3"]).fit(X, Y)


def test_fit_reuses_cached_stages_and_cache_false_does_not():
    X, Y = numeric_data()
    clear_cache()
    CountingKNN.fits = 0
    for threshold in (3.0, 4.0, 5.0):
        HybridRouterRegressor(Ridge(), CountingKNN(), threshold=threshold).fit(X, Y)
    assert CountingKNN.fits == 1
    HybridRouterRegressor(Ridge(), CountingKNN(n_neighbors=4)).fit(X, Y)
    assert CountingKNN.fits == 2  # other params: another fit
    HybridRouterRegressor(Ridge(), CountingKNN()).fit(X, Y + 0.5)
    assert CountingKNN.fits == 3  # other training targets: another fit
    for _ in range(2):
        HybridRouterRegressor(Ridge(), CountingKNN(), cache=False).fit(X, Y)
    assert CountingKNN.fits == 5
    assert cache_info()["fits"] > 0
    clear_cache()
    assert cache_info() == {"fits": 0, "rows": 0, "fit_hits": 0, "row_hits": 0}


def test_stage2_sees_only_routed_rows_in_one_batch():
    X, Y = numeric_data()
    clear_cache()
    # A KD-tree counts its queries in its state: "brute" keeps the fitted state fixed.
    router = HybridRouterRegressor(Ridge(), CountingKNN(algorithm="brute"), threshold=5.0).fit(X, Y)
    CountingKNN.predicted_rows, CountingKNN.batch_sizes = Counter(), []
    routed = router.route(X)
    router.predict(X)
    router.predict(X)  # served from the cache
    assert 0 < routed.sum() < len(X)
    assert CountingKNN.batch_sizes == [routed.sum()]
    assert CountingKNN.predicted_rows == Counter(row.tobytes() for row in X[routed])


def test_pickle_keeps_predictions_and_leaves_the_caches_out():
    X, Y = numeric_data()
    router = HybridRouterRegressor(Ridge(), KNeighborsRegressor(), threshold=5.0).fit(X, Y)
    expected = router.predict(X)
    payload = pickle.dumps(router)
    clear_cache()
    loaded = pickle.loads(payload)
    np.testing.assert_array_equal(loaded.predict(X), expected)
    assert len(payload) < len(pickle.dumps((router.stage1_, router.stage2_))) + 2_000


# --- reports, gatekeepers, routing scores ---------------------------------------


def test_predict_report_names_dimensions_and_applies_gatekeepers():
    X, Y = numeric_data()
    Y = pd.DataFrame(Y, columns=["energy", "economy", "evidence"])
    router = HybridRouterRegressor(
        Ridge(),
        KNeighborsRegressor(n_neighbors=3),
        {"evidence": 0.2, "energy": 0.5, "economy": 0.3},
        threshold=5.0,
        gatekeepers={"evidence": {"threshold": 4.0, "max_score": 3.0}},
    ).fit(X, Y)
    np.testing.assert_allclose(router.weights_, [0.5, 0.3, 0.2])
    assert router.dimension_names_ == ["energy", "economy", "evidence"]
    assert router.gatekeepers_ == {2: (4.0, 3.0)}

    report = router.predict_report(X)
    assert report.columns.tolist() == [
        "energy", "economy", "evidence", "weighted_average", "tier", "stage_used",
        "stage1_estimate", "routing_score", "gatekeeper_applied",
    ]  # fmt: skip
    gated = report["gatekeeper_applied"].to_numpy()
    raw = weighted_average(report[router.dimension_names_], router.weights_)
    assert gated.any()
    np.testing.assert_array_equal(gated, (report["evidence"] < 4.0) & (raw > 3.0))
    np.testing.assert_allclose(report.loc[gated, "weighted_average"], 3.0)
    assert (report.loc[gated, "tier"] == "low").all()
    np.testing.assert_allclose(report.loc[~gated, "weighted_average"], raw[~gated])


def test_routing_score_options():
    X, Y = numeric_data()
    kwargs = dict(stage1=Ridge(), stage2=KNeighborsRegressor(), threshold=6.0)
    by_max = HybridRouterRegressor(routing_score="max_dimension", **kwargs).fit(X, Y)
    np.testing.assert_allclose(
        by_max.routing_scores(X), np.clip(by_max.stage1_.predict(X).max(axis=1), 0, 10)
    )
    by_callable = HybridRouterRegressor(
        routing_score=lambda stage1, X: stage1[:, 0] * 2, **kwargs
    ).fit(X, Y)
    np.testing.assert_allclose(
        by_callable.routing_scores(X),
        np.clip(by_callable.stage1_.predict(X)[:, 0] * 2, 0, 10),
    )
    by_classifier = HybridRouterRegressor(routing_score=LogisticRegression(), **kwargs)
    by_classifier.fit(X, Y)
    probability = by_classifier.routing_score_.predict_proba(X)[:, 1]
    np.testing.assert_allclose(by_classifier.routing_scores(X), 10 * probability)
    assert by_classifier.route(X).sum() == (10 * probability >= 6.0).sum()


# --- bad input -----------------------------------------------------------------


def test_bad_input_is_refused_at_fit_naming_the_parameter():
    X, Y = numeric_data()
    with pytest.raises(ValueError, match="weights has 2 entries .* 3 dimensions"):
        HybridRouterRegressor(Ridge(), Ridge(), [0.5, 0.5]).fit(X, Y)
    with pytest.raises(ValueError, match="weights must be finite and non-negative"):
        HybridRouterRegressor(Ridge(), Ridge(), [0.5, -0.5, 1.0]).fit(X, Y)
    with pytest.raises(ValueError, match="weights names"):
        HybridRouterRegressor(Ridge(), Ridge(), {"a": 1, "b": 1, "c": 1}).fit(
            X, pd.DataFrame(Y, columns=["x", "y", "z"])
        )
    with pytest.raises(InvalidParameterError, match="'threshold' parameter"):
        HybridRouterRegressor(Ridge(), Ridge(), threshold="high").fit(X, Y)
    with pytest.raises(InvalidParameterError, match="'threshold' parameter"):
        HybridRouterRegressor(Ridge(), Ridge(), threshold=np.nan).fit(X, Y)
    with pytest.raises(ValueError, match="gatekeepers names the dimension 'nope'"):
        HybridRouterRegressor(Ridge(), Ridge(), gatekeepers={"nope": (3, 3)}).fit(X, Y)
    with pytest.raises(ValueError, match=r"gatekeepers\[0\] must be"):
        HybridRouterRegressor(Ridge(), Ridge(), gatekeepers={0: "low"}).fit(X, Y)
    narrow = FrozenEstimator(Ridge().fit(X, Y[:, 0]))
    with pytest.raises(ValueError, match="stage2 predicts 1 dimensions but Y has 3"):
        HybridRouterRegressor(Ridge(), narrow).fit(X, Y)
    with pytest.raises(ValueError, match="requires y to be passed"):
        HybridRouterRegressor(Ridge(), Ridge()).fit(X, None)


# --- real text stages: input forms and the GridSearchCV caches ------------------


class CountingEmbedder(E5Embedder):
    """The real E5Embedder (MiniLM here) counting every text it embeds."""

    embedded = Counter()

    def embed(self, texts):
        type(self).embedded.update(texts)
        return super().embed(texts)


def first_column(cells):
    return cells[:, 0]


def tfidf_stage(regressor):
    """A second, different real text regressor: tf-idf features, no embedding."""
    return make_pipeline(
        ArticleText(), FunctionTransformer(first_column), TfidfVectorizer(), regressor
    )


def text_stage(embedder_class, minilm_path, regressor):
    embedder = embedder_class(
        minilm_path, prefix="", cache=False, show_progress_bar=False
    )
    return make_pipeline(ArticleText(), embedder, regressor)


def test_grid_search_embeds_each_article_once_per_fold(minilm_path):
    X, Y = make_articles(24, random_state=1)
    texts = ArticleText().fit_transform(X)[:, 0].tolist()
    clear_cache()
    CountingEmbedder.embedded = Counter()
    CountingKNN.fits = 0
    CountingKNN.predicted_rows = Counter()
    router = HybridRouterRegressor(
        text_stage(CountingEmbedder, minilm_path, Ridge()),
        tfidf_stage(CountingKNN(n_neighbors=3)),
        [1, 1, 1],
    )
    search = GridSearchCV(
        router, {"threshold": [1.0, 3.0, 5.0]}, cv=KFold(3), refit=False
    ).fit(X, Y)

    assert search.cv_results_["mean_test_score"].shape == (3,)
    assert CountingEmbedder.embedded == Counter({text: 3 for text in texts})
    assert CountingKNN.fits == 3
    # every held-out article routed at threshold 1.0 is scored by Stage 2 once
    assert sum(CountingKNN.predicted_rows.values()) == len(CountingKNN.predicted_rows)
    assert 0 < len(CountingKNN.predicted_rows) <= len(texts)

    # The same search without the router's caches embeds per candidate.
    CountingEmbedder.embedded = Counter()
    GridSearchCV(
        router.set_params(cache=False), {"threshold": [1.0, 3.0]}, cv=KFold(3), refit=False
    ).fit(X, Y)
    assert CountingEmbedder.embedded == Counter({text: 6 for text in texts})


def test_text_inputs_select_rows_by_position(minilm_path):
    X, Y = make_articles(40, random_state=2)
    router = HybridRouterRegressor(
        text_stage(E5Embedder, minilm_path, Ridge()),
        text_stage(E5Embedder, minilm_path, KNeighborsRegressor(n_neighbors=3)),
        [1, 1, 1],
        threshold=2.5,
    ).fit(X, Y)
    X_test, _ = make_articles(12, random_state=3)
    X_test.index = np.arange(100, 112)[::-1]  # positions, not labels, select rows
    router.set_params(threshold=np.median(router.routing_scores(X_test)))
    from_frame = router.predict(X_test)
    routed = router.route(X_test)
    assert 0 < routed.sum() < len(X_test)
    records = X_test.to_dict("records")
    np.testing.assert_array_equal(router.predict(records), from_frame)
    np.testing.assert_array_equal(router.route(records), routed)
    report = router.predict_report(X_test)
    assert report.index.tolist() == X_test.index.tolist()
    assert report.columns[:3].tolist() == Y.columns.tolist()
    np.testing.assert_allclose(
        report.loc[report["stage_used"] == "stage2", Y.columns].to_numpy(),
        np.clip(router.stage2_.predict(X_test[routed]), 0, 10),
        rtol=1e-6,
    )

    texts = ArticleText().fit_transform(X)[:, 0].tolist()
    on_texts = router.fit(texts, Y)
    test_texts = ArticleText().fit_transform(X_test)[:, 0].tolist()
    on_texts.set_params(threshold=np.median(on_texts.routing_scores(test_texts)))
    routed_texts = on_texts.route(test_texts)
    predicted = on_texts.predict(test_texts)
    assert 0 < routed_texts.sum() < len(test_texts)
    np.testing.assert_allclose(
        predicted[routed_texts],
        on_texts.stage2_.predict([t for t, r in zip(test_texts, routed_texts) if r]),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        predicted[~routed_texts],
        np.clip(on_texts.stage1_.predict(test_texts)[~routed_texts], 0, 10),
    )


# --- caches keyed by content; Stage-1-only routers ------------------------------


def test_refitting_a_stage_in_place_is_always_seen():
    """The stale-prediction reproduction: a refitted Stage 1 gives fresh predictions."""
    X, Y = numeric_data()
    stage1, stage2 = Ridge().fit(X, Y), KNeighborsRegressor().fit(X, Y)
    first = HybridRouterRegressor(
        stage1, stage2, weights=[0.5, 0.3, 0.2], threshold=11, prefit=["stage1", "stage2"]
    ).fit(X, Y)
    before = first.predict(X[:5])
    stage1.fit(X, 10 - Y)
    second = HybridRouterRegressor(
        stage1, stage2, weights=[0.5, 0.3, 0.2], threshold=11, prefit=["stage1", "stage2"]
    ).fit(X, Y)
    after = second.predict(X[:5])
    np.testing.assert_allclose(after, np.clip(stage1.predict(X[:5]), 0, 10))
    assert not np.allclose(before, after)
    np.testing.assert_allclose(first.predict(X[:5]), after)  # same object, refitted


def test_a_router_without_stage2_routes_nothing_and_keeps_its_threshold():
    X, Y = numeric_data()
    router = HybridRouterRegressor(Ridge(), None, [0.5, 0.3, 0.2], threshold=3.0).fit(X, Y)
    assert router.stage2_ is None and router.threshold == 3.0
    assert not router.route(X).any()
    assert (router.routing_scores(X) >= 3.0).any()
    np.testing.assert_allclose(router.predict(X), np.clip(router.stage1_.predict(X), 0, 10))
    assert set(router.predict_report(X)["stage_used"]) == {"stage1"}


def test_final_scores_stay_on_the_0_to_10_scale_and_the_raw_estimate_is_kept():
    X, Y = numeric_data()
    router = HybridRouterRegressor(Ridge(), None, [0.5, 0.3, 0.2]).fit(X, Y * 1.6 - 3)
    report = router.predict_report(X)
    raw = weighted_average(router.stage1_.predict(X), router.weights_)
    assert raw.min() < 0 and raw.max() > 10
    dimensions = router.dimension_names_
    assert report[dimensions].to_numpy().min() >= 0 and report[dimensions].to_numpy().max() <= 10
    np.testing.assert_allclose(report["stage1_estimate"], raw)


def _cache_files(folder):
    return {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in folder.rglob("*.npy")}


def test_parallel_grid_search_shares_a_persistent_embedding_cache(minilm_path, tmp_path):
    """With n_jobs=2 the workers read the embeddings the serial search stored: none re-embeds."""
    X, Y = make_articles(24, random_state=5)
    embedder = E5Embedder(minilm_path, prefix="", cache=str(tmp_path), show_progress_bar=False)
    router = HybridRouterRegressor(
        make_pipeline(ArticleText(), embedder, Ridge()),
        tfidf_stage(KNeighborsRegressor(n_neighbors=3, algorithm="brute")),
        [1, 1, 1],
    )
    grid = {"threshold": [1.0, 3.0, 5.0]}
    serial = GridSearchCV(router, grid, cv=KFold(3), refit=False).fit(X, Y)
    stored = _cache_files(tmp_path)
    assert len(stored) == len(X)  # one entry per article, whatever the folds and candidates
    parallel = GridSearchCV(router, grid, cv=KFold(3), refit=False, n_jobs=2).fit(X, Y)
    assert _cache_files(tmp_path) == stored  # nothing embedded (or rewritten) again
    np.testing.assert_allclose(
        parallel.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"]
    )


def test_a_frozen_stage2_runs_once_per_row_across_threshold_candidates():
    X, Y = numeric_data()
    stage2 = FrozenEstimator(CountingKNN(algorithm="brute").fit(X, Y))
    clear_cache()
    CountingKNN.predicted_rows = Counter()
    router = HybridRouterRegressor(Ridge(), stage2, [0.5, 0.3, 0.2])
    GridSearchCV(router, {"threshold": [0.0, 2.0, 4.0, 6.0]}, cv=KFold(3), refit=False).fit(X, Y)
    assert set(CountingKNN.predicted_rows.values()) == {1}
    assert len(CountingKNN.predicted_rows) == len(X)  # threshold 0 routes every held-out row


# --- no cache shares fitted state; fingerprints taken once per fitted state ------


def test_routers_fitted_alike_own_their_stages():
    """Issue 20: a cached fit is copied, so changing one router's stage leaves the other's."""
    X, Y = numeric_data()
    clear_cache()
    CountingKNN.fits = 0
    first, second = (
        HybridRouterRegressor(Ridge(), CountingKNN(algorithm="brute"), threshold=0.0).fit(X, Y)
        for _ in range(2)
    )
    assert CountingKNN.fits == 1  # the second router reused the cached fit
    assert first.stage1_ is not second.stage1_ and first.stage2_ is not second.stage2_
    expected = second.predict(X[:10])

    first.stage2_.fit(X, 10 - Y)  # refitted in place
    first.stage1_.set_params(alpha=1e6).fit(X, Y)
    np.testing.assert_array_equal(second.predict(X[:10]), expected)
    np.testing.assert_allclose(
        first.predict(X[:10]), np.clip(first.stage2_.predict(X[:10]), 0, 10), rtol=1e-12
    )
    assert not np.allclose(first.predict(X[:10]), expected)
    # the cache kept its own copy too: a third router gets the original fit
    third = HybridRouterRegressor(Ridge(), CountingKNN(algorithm="brute"), threshold=0.0).fit(X, Y)
    np.testing.assert_array_equal(third.predict(X[:10]), expected)
    assert CountingKNN.fits == 2  # first.stage2_.fit above; third reused the cache


def test_a_stage_is_fingerprinted_once_per_fitted_state(monkeypatch):
    import hybrid_estimators._cache as cache_module

    X, Y = numeric_data()
    clear_cache()
    hashed = []
    fingerprint = cache_module.fitted_state_fingerprint

    def counting(estimator):
        hashed.append(type(estimator).__name__)
        return fingerprint(estimator)

    monkeypatch.setattr(cache_module, "fitted_state_fingerprint", counting)
    monkeypatch.setattr("hybrid_estimators.router.fitted_state_fingerprint", counting)
    inner = KNeighborsRegressor(algorithm="brute").fit(X, Y)
    router = HybridRouterRegressor(Ridge(), FrozenEstimator(inner), threshold=0.0).fit(X, Y)
    assert sorted(hashed) == ["FrozenEstimator", "Ridge"]
    for start in range(0, 100, 10):  # new rows each call: the stages run every time
        router.predict(X[start : start + 10])
    assert len(hashed) == 2

    # A frozen stage changed by the user is seen: fingerprinted again on its next call.
    before = router.predict(X[:10])
    inner.set_params(n_neighbors=1)
    np.testing.assert_allclose(router.predict(X[:10]), np.clip(inner.predict(X[:10]), 0, 10))
    assert not np.allclose(router.predict(X[:10]), before)
    assert hashed[2:] == ["FrozenEstimator"]

    # Kept beside the router, not in it: an unpickled (or copied) router fingerprints
    # its stages on first use, and predicting leaves the router's __dict__ as it was.
    loaded = pickle.loads(pickle.dumps(router))
    attributes = dict(vars(loaded))
    np.testing.assert_array_equal(loaded.predict(X[:10]), router.predict(X[:10]))
    assert len(hashed) == 5  # its Ridge and FrozenEstimator, once each
    loaded.predict(X[10:20])
    assert len(hashed) == 5
    assert vars(loaded).keys() == attributes.keys()
    assert all(vars(loaded)[key] is value for key, value in attributes.items())
    copy.copy(router).predict(X[:10])
    assert len(hashed) == 7


def test_an_in_place_array_change_is_seen_after_refitting_the_router():
    """What the cheap check cannot see (documented): refit the router, as scikit-learn asks."""
    X, Y = numeric_data()
    stage1 = Ridge().fit(X, Y)
    router = HybridRouterRegressor(stage1, None, prefit=["stage1"]).fit(X, Y)
    router.predict(X[:5])
    stage1.coef_ *= 0  # written into the array it already holds
    router.fit(X, Y)
    np.testing.assert_allclose(
        router.predict(X[:5]), np.clip(np.tile(stage1.intercept_, (5, 1)), 0, 10)
    )
