"""Teacher files as ``score --filter F --all-stage2 U -o T`` writes them: rows and sidecar."""

import json

from hybrid_estimators.teacher import input_digest, teacher_identity


def write_sidecar(path, unlabelled, identity=None):
    """``T.meta.json``: the sidecar of a complete ``score --all-stage2`` run over `unlabelled`."""
    n_lines, sha256 = input_digest(unlabelled)
    sidecar = {
        "format": "hybrid-estimators-score/1",
        "input": {"path": str(unlabelled), "lines": n_lines, "sha256": sha256},
        "filter": identity or {},
        "options": {"stage1_only": False, "backend": "torch", "batch_size": 32, "all_stage2": True},
    }
    (path.parent / f"{path.name}.meta.json").write_text(json.dumps(sidecar, indent=1) + "\n")


def write_teacher_file(path, filter_, ids, scores, unlabelled):
    """Rows of Stage 2 `scores` (n_articles x n_dimensions) for the articles `ids`, one a line."""
    identity = teacher_identity(filter_)
    rows = [{"line": i + 1, "id": article_id, "scores": dict(zip(filter_.dimension_names_, map(float, row))),
             "stage_used": "stage2", "blocked_by": None, "error": None, "teacher": identity}
            for i, (article_id, row) in enumerate(zip(ids, scores))]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    write_sidecar(path, unlabelled)
    return path
