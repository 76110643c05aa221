"""A cascade report as fixed-width text tables (what ``hybrid-estimators evaluate`` prints)."""

import numpy as np

from ._distribution import DISTRIBUTION_METRICS
from ._report import SYSTEMS, CascadeReport, verdict_of

# --- text -----------------------------------------------------------------------------


def _value(estimate, digits=3):
    value = None if estimate is None else estimate["value"]
    return "n/a" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def _with_interval(estimate, digits=3):
    text = _value(estimate, digits)
    low, high = estimate["low"], estimate["high"]
    if text == "n/a" or low is None or high is None or np.isnan(low) or np.isnan(high):
        return text
    return f"{text} [{low:.{digits}f}, {high:.{digits}f}]"


def _milliseconds(estimate):
    value = estimate["value"]
    return "n/a" if value is None or np.isnan(value) else f"{1000 * value:.2f}"


def _table(headers, rows):
    """Fixed-width table: first column left-aligned, the others right-aligned."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells):
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _system_rows(systems):
    rows = []
    for system in SYSTEMS:
        metrics = systems[system]
        if metrics is None:
            rows.append([system, "unavailable", "", "", "", "", ""])
            continue
        rows.append(
            [
                system,
                _with_interval(metrics["weighted_average_mae"]),
                _with_interval(metrics["tier_accuracy"]),
                _with_interval(metrics["medium_plus_recall"]),
                _with_interval(metrics["medium_plus_precision"]),
                _value(metrics["skip_rate"]),
                _milliseconds(metrics["seconds_per_article"]),
            ]
        )
    return rows


_SYSTEM_HEADERS = [
    "system",
    "MAE",
    "tier accuracy",
    "MEDIUM+ recall",
    "MEDIUM+ precision",
    "skip",
    "ms/article",
]


def format_report(report):
    """A :class:`CascadeReport` as readable fixed-width tables (for the CLI).

    Parameters
    ----------
    report : CascadeReport

    Returns
    -------
    text : str

    See Also
    --------
    cascade_report : Computes the report.
    verdict_of : The one-line verdict of a comparison.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import Ridge
    >>> from hybrid_estimators.evaluation import cascade_report
    >>> from hybrid_estimators.router import HybridRouterRegressor
    >>> X = np.linspace(0, 10, 40).reshape(-1, 1)
    >>> stage1 = Ridge().fit(X, X)
    >>> router = HybridRouterRegressor(stage1, stage1, threshold=5.0,
    ...                                prefit=["stage1", "stage2"]).fit(X, X)
    >>> text = format_report(cascade_report(router, X, X, n_bootstraps=50,
    ...                                     random_state=0))
    >>> text.splitlines()[0].split(", ")[:3]
    ['Cascade report: 40 articles', 'threshold 5.00', '90% bootstrap intervals (50 resamples']
    """
    report = report if isinstance(report, CascadeReport) else CascadeReport.from_dict(report)
    mark = " [in sample]" if report.in_sample else ""
    lines = [
        f"Cascade report{mark}: {report.n} articles, threshold {report.threshold:.2f}, "
        f"{report.confidence:.0%} bootstrap intervals ({report.n_bootstraps} resamples, "
        f"random_state={report.random_state})",
        "Stage 1 scores: "
        + ("the router's" if report.stage1_source == "router" else "given (stage1_predictions)")
        + "; Stage 2 scores: "
        + ("the router's" if report.stage2_source == "router" else "given (stage2_predictions)")
        + ("" if report.stage2_weight == 1 else
           f", blended with Stage 1's (stage2_weight={report.stage2_weight:g}) as the router blends them")
        + "; MAE of the weighted average (gatekeepers applied); MEDIUM+ of the final tiers",
        *_training_lines(report),
        "",
        _table(_SYSTEM_HEADERS, _system_rows(report.systems)),
        "",
    ]
    lines += _comparison_lines(report, mark)
    if report.distribution:
        lines += ["", f"Weighted averages, predicted against true{mark}", _distribution_table(report)]
    lines += ["", f"MAE per dimension{mark}"]
    rows = [
        [name]
        + [
            "n/a" if report.systems[s] is None else _value(report.systems[s]["mae"][name])
            for s in SYSTEMS
        ]
        for name in report.dimension_names
    ]
    lines.append(_table(["dimension", *SYSTEMS], rows))
    for title, breakdown in (("By true tier", report.by_tier), ("By language", report.by_language)):
        if breakdown:
            lines += ["", title + mark, _breakdown_table(breakdown)]
    if report.grid:
        lines += ["", f"Hybrid over the threshold grid{mark}", _grid_table(report)]
    return "\n".join(lines) + "\n"


def _training_lines(report):
    training = report.training_articles
    if training is None:  # a report from before the check
        return []
    unchecked = [stage.replace("stage", "Stage ") for stage in training.get("unchecked_stages", [])]
    lines = [f"Training articles of {' and '.join(unchecked)}: not recorded, not checked"] if unchecked else []
    if not training["recorded"]:
        return lines or ["Training articles: the router records none, so these articles cannot be "
                         "checked to be held out"]
    return lines + _checked_lines(report, training, training["n_trained_on"], training["n_given"])


def _checked_lines(report, training, n, given):
    if report.in_sample:
        return [f"IN SAMPLE: {n} of these {given} articles are articles a stage was trained on: "
                "every number below is in sample and says nothing of new articles"]
    if training["n_left_out"]:
        return [f"Training articles: {training['n_left_out']} of the {given} articles given were left "
                "out (a stage that scores them here was trained on them)"]
    return ["Training articles: none of these articles is one a stage that scores it here was trained on"]


def _comparison_lines(report, mark=""):
    if report.comparison is None:
        return ["Stage 2 is unavailable (Stage-1-only router): nothing to compare."]
    lines = [f"Stage 2 - Stage 1 MAE of the weighted average, paired on the same articles{mark}:"]
    rows = []
    for scope, label in (("all", "all articles"), ("routed", "routed articles")):
        entry = report.comparison[scope]
        rows.append(
            [
                label,
                entry["n"],
                _value(entry["stage1_mae"]),
                _value(entry["stage2_mae"]),
                _with_interval(entry["difference"]),
                "yes" if entry["stage2_better"] else "no",
            ]
        )
    lines.append(_table(["articles", "n", "stage1", "stage2", "difference", "stage2 better"], rows))
    verdict, reason = (
        (report.verdict, report.verdict_reason)
        if report.verdict is not None
        else verdict_of(report.comparison)
    )
    text = {
        "stage2_better": "Stage 2 earns its place: it beats Stage 1 on the articles it is given",
        "stage2_worse": "Stage 2 does not earn its place: it is worse than Stage 1 on the "
        "articles it is given",
        "inconclusive": "inconclusive",
    }[verdict]
    return [*lines, f"Verdict{mark}: {text} ({reason})."]


def _distribution_table(report):
    rows = []
    for system in SYSTEMS:
        statistics = report.distribution.get(system)
        if statistics is None:
            rows.append([system, "unavailable", "", "", "", ""])
            continue
        rows.append(
            [system, _with_interval(report.systems[system]["high_recall"])]
            + [_with_interval(statistics[name], 2) for name in DISTRIBUTION_METRICS[:-1]]
            + [_value({"value": statistics["ks_statistic"]})]
        )
    headers = ["system", "HIGH recall", "sd ratio (pred/true)", "p90 predicted", "p90 true", "KS"]
    text = _table(headers, rows)
    for metric, reason in (report.undefined_metrics or {}).items():
        text += f"\n({metric}: n/a: {reason})"
    return text


def _breakdown_table(breakdown):
    rows = []
    for group, systems in breakdown.items():
        for row in _system_rows(systems):
            n = next((m["n"] for m in systems.values() if m is not None), 0)
            rows.append([group, n, *row])
    return _table(["group", "n", *_SYSTEM_HEADERS], rows)


def _grid_table(report):
    rows = []
    for point in report.grid:
        marker = " *" if np.isclose(point["threshold"], report.threshold) else ""
        rows.append(
            [
                f"{point['threshold']:.2f}{marker}",
                point["n_routed"],
                _value(point["skip_rate"]),
                _milliseconds(point["seconds_per_article"]),
                _with_interval(point["weighted_average_mae"]),
                _value(point["tier_accuracy"]),
                _value(point["medium_plus_recall"]),
                _value(point["medium_plus_precision"]),
                _value(point["medium_plus_routed"]),
            ]
        )
    headers = [
        "threshold",
        "routed",
        "skip",
        "ms/article",
        "MAE",
        "tier acc",
        "M+ recall",
        "M+ precision",
        "M+ to Stage 2",
    ]
    return _table(headers, rows) + "\n(* the router's threshold)"
