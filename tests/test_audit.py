"""Live recall audit: seeded selection, untouched scores, the bound."""

import logging

import numpy as np
import pytest

from hybrid_estimators.audit import RecallAudit, audit_selection, audit_summary

from _numeric_filter import articles, numeric_filter


def test_selection_is_seeded_by_text_not_by_order_or_batching():
    X = articles(np.linspace(0, 10, 2000))
    chosen = audit_selection(X, 0.2, random_state=3)
    assert 0.17 < chosen.mean() < 0.23
    reordered = audit_selection(X.iloc[::-1], 0.2, random_state=3)[::-1]
    halves = np.concatenate([audit_selection(X.iloc[:700], 0.2, 3), audit_selection(X.iloc[700:], 0.2, 3)])
    np.testing.assert_array_equal(chosen, reordered)
    np.testing.assert_array_equal(chosen, halves)
    assert (audit_selection(X, 0.2, random_state=4) != chosen).any()


@pytest.mark.parametrize("rate", [0, -0.1, 1.5])
def test_a_rate_outside_0_1_is_refused(rate):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        audit_selection(articles([1.0]), rate)


def test_audit_never_changes_scores_and_audits_only_skipped_articles():
    filter_ = numeric_filter()
    X = articles(np.random.RandomState(1).uniform(0, 10, 400), start=1000)
    report = filter_.predict_report(X)
    before = report.copy()
    columns = RecallAudit(filter_, rate=0.5).audit(X, report)
    assert report.equals(before)
    audited = columns["audited"].to_numpy()
    assert audited.any() and not (audited & (report["stage_used"] == "stage2").to_numpy()).any()
    assert columns.loc[~audited, "audit_tier"].isna().all()
    # Stage 2 is exact: an audited article's tier follows its title's value.
    values = X["title"].str.split().str[0].astype(float).to_numpy()
    expected = np.where(values >= 4.0, "medium", "low")
    np.testing.assert_array_equal(columns.loc[audited, "audit_tier"], expected[audited])


def test_summary_measures_recall_against_stage2_with_a_bound_below_it(caplog):
    # A noisy Stage 1 and a high threshold: some Stage-2 MEDIUM+ articles are skipped.
    filter_ = numeric_filter(noise=2.5, threshold=5.0)
    X = articles(np.random.RandomState(2).uniform(0, 10, 3000), start=5000)
    monitor = RecallAudit(filter_, rate=1.0, confidence=0.9, target_recall=0.99)
    for start in range(0, len(X), 500):
        batch = X.iloc[start : start + 500]
        monitor.audit(batch, filter_.predict_report(batch))
    with caplog.at_level(logging.WARNING):
        summary = monitor.summary()
    values = X["title"].str.split().str[0].astype(float).to_numpy()
    medium_plus = values >= 4.0
    routed = filter_.route(X)
    true_recall = routed[medium_plus].mean()
    assert summary["n_audited"] == summary["n_skipped"] == int((~routed).sum())
    assert summary["recall"] == pytest.approx(true_recall)
    assert summary["recall_lower_bound"] <= summary["recall"]
    assert summary["below_target"] and "numeric/v1" in caplog.text


def test_audit_summary_of_rows_counts_blocked_rows_out():
    summary = audit_summary(
        ["stage2", "stage1", None, "stage1"], ["medium", "low", None, "low"],
        [False, True, False, False], [None, "medium", None, None], confidence=0.9,
    )
    assert (summary["n_scored"], summary["n_routed"], summary["n_skipped"]) == (3, 1, 2)
    assert summary["audited_medium_plus"] == 1
    assert summary["recall"] == pytest.approx(1 / (1 + 1 * 2))


# --- one audit, linear in the stream; strict JSON; a defined verdict without MEDIUM+ -----


def test_audit_chunk_and_audit_are_one_implementation_with_constant_state():
    from hybrid_estimators.scoring import audit_chunk, parse_article, score_chunk

    filter_ = numeric_filter(noise=2.5, threshold=5.0)
    X = articles(np.random.RandomState(4).uniform(0, 10, 200), start=9000)
    by_batch, by_rows = RecallAudit(filter_, rate=0.5), RecallAudit(filter_, rate=0.5)
    for start in range(0, len(X), 50):
        batch = X.iloc[start : start + 50]
        columns = by_batch.audit(batch, filter_.predict_report(batch))
        rows = score_chunk(filter_, [parse_article(i, a) for i, a in enumerate(batch.to_dict("records"))])
        audit_chunk(by_rows, rows)
        skipped = [row for row in rows if row.stage_used == "stage1"]
        assert [row.audited for row in skipped] == columns["audited"][columns.index[
            (filter_.predict_report(batch)["stage_used"] == "stage1").to_numpy()]].tolist()
    assert by_batch.summary() == by_rows.summary()
    # The state is the counts, not the rows: the same size after 12 batches as after one.
    assert set(vars(by_rows)) == {"scorer", "rate", "random_state", "confidence", "target_recall", "counts_"}
    assert sum(by_rows.counts_.values()) < 4 * len(X)


@pytest.mark.parametrize("audited", [0, 5])
def test_no_medium_plus_reference_is_undetermined_not_a_failure(audited):
    summary = audit_summary(
        ["stage1"] * 5 + ["stage2"], ["low"] * 6, [True] * audited + [False] * (6 - audited),
        ["low"] * audited + [None] * (6 - audited), target_recall=0.95,
    )
    assert summary["verdict"] == "undetermined" and summary["below_target"] is None
    assert summary["recall"] is None and summary["recall_lower_bound"] is None
    assert summary["undetermined"]
    import json

    json.loads(json.dumps(summary, allow_nan=False))  # strict JSON: no NaN


def test_a_failing_bound_is_a_fail_and_a_passing_one_a_pass():
    fail = audit_summary(["stage2", "stage1"], ["medium", "low"], [False, True], [None, "medium"],
                         target_recall=0.9)
    assert (fail["verdict"], fail["below_target"]) == ("fail", True)
    passing = audit_summary(["stage2"] * 50, ["medium"] * 50, [False] * 50, [None] * 50, target_recall=0.9)
    assert (passing["verdict"], passing["below_target"], passing["recall"]) == ("pass", False, 1.0)
