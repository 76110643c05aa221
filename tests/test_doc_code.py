"""Every Python block of the README and the guide (docs/*.md) runs.

Each page's blocks run in order in one namespace, as a reader pasting them
into a notebook would, in a scratch folder laid out like the repository
(``filters/`` with the shipped filters, ``examples/``, ``../shared`` when
the real data is there: the first articles of each file, so that a page
runs in about a minute), so that a documented call that does not exist, or
a changed signature, fails here.

The guide's blocks continue a story (``router``, ``X_test`` were made in
the text before them); :data:`CONTEXT` gives each page the names its
blocks use without defining them, built on generated articles. Two
stand-ins are files, never mocks:

* ``Qwen/Qwen2.5-1.5B``: no model hub is reachable, so a tiny Qwen2 saved
  in a local folder of that name is what the blocks load: the production
  path resolves a local folder first, as it would for a user's copy;
* ``my_data``: a labelled folder (``articles.jsonl`` + ``filter.yaml``)
  of generated articles.
"""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hybrid_estimators.datasets import make_articles, shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
WEIGHTS = {"energy_progress": 0.5, "health_benefit": 0.25, "economic_impact": 0.25}


def code_blocks(page):
    return BLOCK.findall(page.read_text(encoding="utf-8"))


def test_every_page_with_code_is_run():
    with_code = {page.name for page in PAGES if code_blocks(page)}
    assert with_code == set(CONTEXT), "a page's Python blocks are not run: add it to CONTEXT"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, tiny_qwen2_path):
    """A folder laid out like the repository, for the blocks' relative paths."""
    top = tmp_path_factory.mktemp("docs_code")
    work = top / "work"
    (work / "filters").mkdir(parents=True)
    for shipped in (ROOT / "filters").iterdir():
        (work / "filters" / shipped.name).symlink_to(shipped, target_is_directory=True)
    _examples(work / "examples")
    shared = shared_data_dir()
    if shared is not None:
        _shared_sample(shared, top / "shared" / "data")
    shutil.copytree(tiny_qwen2_path, work / "Qwen" / "Qwen2.5-1.5B")
    shutil.copy(ROOT / "examples" / "articles.jsonl", work / "articles.jsonl")
    _labelled_folder(work / "my_data")
    return work


#: Articles of each real labelled folder the pages' blocks get (their first lines): the
#: blocks' meaning is the same on fewer articles, in a minute rather than several.
SHARED_SAMPLE = 60
#: Of ``examples/articles.jsonl``: enough to show a report with both stages.
EXAMPLE_SAMPLE = 4


def _examples(folder):
    """``examples/`` with its scripts, and the first lines of its articles."""
    folder.mkdir()
    for path in (ROOT / "examples").iterdir():
        if path.name != "articles.jsonl":
            (folder / path.name).symlink_to(path)
    lines = (ROOT / "examples" / "articles.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "articles.jsonl").write_text("".join(lines[:EXAMPLE_SAMPLE]), encoding="utf-8")


def _shared_sample(shared, data):
    """``../shared/data`` with each labelled folder's first :data:`SHARED_SAMPLE` articles."""
    for source in shared.iterdir():
        if not (source / "articles.jsonl").is_file():
            continue
        (data / source.name).mkdir(parents=True)
        for path in source.iterdir():
            if path.name != "articles.jsonl" and path.is_file():
                shutil.copy(path, data / source.name / path.name)
        with open(source / "articles.jsonl", encoding="utf-8") as articles:
            head = [line for _, line in zip(range(SHARED_SAMPLE), articles)]
        (data / source.name / "articles.jsonl").write_text("".join(head), encoding="utf-8")


def _labelled_folder(folder):
    X, Y = make_articles(40, random_state=0)  # filters.md fits two probes, a tuner and a Stage 2 on it
    folder.mkdir()
    with open(folder / "articles.jsonl", "w", encoding="utf-8") as out:
        for i, (article, scores) in enumerate(zip(X.to_dict("records"), Y.to_dict("records"))):
            out.write(json.dumps({"id": f"a{i}", **article, "scores": scores}) + "\n")
    (folder / "filter.yaml").write_text(
        yaml.safe_dump({"name": "my_filter", "dimensions": WEIGHTS,
                        "tiers": {"high": 7.0, "medium": 4.0, "low": 0.0}}),
        encoding="utf-8",
    )


def _data(n=60, random_state=0):
    X, Y = make_articles(n, random_state=random_state)
    return X, Y


def _small_router(minilm_path):
    """A fitted two-stage router on generated articles (MiniLM Stage 1, kNN Stage 2)."""
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline

    from hybrid_estimators import ArticleText, E5Embedder, HybridRouterRegressor, make_probe

    embedder = E5Embedder(minilm_path, prefix="", show_progress_bar=False)
    stage1 = make_pipeline(ArticleText(), embedder, make_probe((32,), random_state=0))
    stage2 = make_pipeline(ArticleText(), embedder, KNeighborsRegressor(3))
    return stage1, stage2


def _router_context(minilm_path):
    from sklearn.model_selection import KFold

    from hybrid_estimators import HybridRouterRegressor

    X, Y = _data(80)
    stage1, stage2 = _small_router(minilm_path)
    router = HybridRouterRegressor(stage1, stage2, WEIGHTS, threshold=4.5).fit(X[:60], Y[:60])
    return {
        "stage1": stage1, "stage2": stage2, "weights": WEIGHTS, "router": router,
        "spec": {"dimensions": WEIGHTS, "tiers": {"high": 7.0, "medium": 4.0, "low": 0.0}},
        "X": X, "Y": Y, "X_train": X[:60], "Y_train": Y[:60], "X_test": X[60:], "Y_test": Y[60:],
        "X_cal": X[:60], "Y_cal": Y[:60], "KFold": KFold,
    }


def _evaluation_context(minilm_path):
    from sklearn.model_selection import cross_val_predict

    context = _router_context(minilm_path)
    oof = cross_val_predict(context["stage1"], context["X"], context["Y"], cv=3)
    return {**context, "oof": oof, "t1": 0.001}


def _filters_context(minilm_path):
    return {"articles": pd.read_json(ROOT / "examples" / "articles.jsonl", lines=True)[:3],
            "folder": "filters/ai_engineering_practice/v1",
            "folders": ["filters/seece_energy_tech/v1", "filters/ai_engineering_practice/v1"]}


CONTEXT = {  # page -> the names its blocks use without defining them
    "README.md": lambda minilm_path: {},
    "quickstart.md": lambda minilm_path: {},
    "index.md": _router_context,
    "stage1.md": _router_context,
    "stage2.md": _router_context,
    "router-and-calibration.md": _router_context,
    "evaluation.md": _evaluation_context,
    "filters.md": _filters_context,
    "scale-out.md": lambda minilm_path: {},
    "scores.md": lambda minilm_path: {},
}
#: Pages whose blocks need the real labelled data.
NEEDS_SHARED_DATA = {"README.md", "quickstart.md"}


@pytest.mark.slow
@pytest.mark.parametrize("page", [page for page in PAGES if code_blocks(page)], ids=lambda page: page.name)
def test_page_code_runs(page, scratch, minilm_path, monkeypatch):
    if page.name in NEEDS_SHARED_DATA and shared_data_dir() is None:
        pytest.skip("the real labelled data is absent")
    if page.name == "scale-out.md":
        pytest.importorskip("ray.data")
    monkeypatch.chdir(scratch)
    monkeypatch.setenv("HYBRID_ESTIMATORS_EXAMPLE_SMALL", "1")
    if (scratch.parent / "shared" / "data").is_dir():  # shared_data_dir() is the sample too
        monkeypatch.setenv("HYBRID_ESTIMATORS_SHARED_DATA", str(scratch.parent / "shared" / "data"))
    import matplotlib

    matplotlib.use("Agg")
    namespace = {"__name__": f"docs_{page.stem}", **CONTEXT[page.name](minilm_path)}
    try:
        for number, block in enumerate(code_blocks(page), start=1):
            code = compile(block, f"{page.name} block {number}", "exec")
            exec(code, namespace)  # noqa: S102 - the documentation's own code, run as a reader would
    finally:
        if page.name == "scale-out.md":  # score_dataset starts a local Ray: stop it, as the page's reader would
            import ray

            ray.shutdown()
