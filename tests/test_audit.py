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
