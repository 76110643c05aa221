"""The documentation builds with ``mkdocs build --strict`` and renders the API."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API_PAGES = {  # page -> names its rendered HTML must show
    "router": ["HybridRouterRegressor", "HybridRouterRegressor.predict_report", "clear_cache"],
    "calibration": ["TunedThresholdRouterCV", "TunedThresholdRouterCV.plot", "clopper_pearson_upper"],
    "embedding": ["E5Embedder"],
    "text": ["ArticleText", "as_texts"],
    "probe": ["make_probe", "make_ridge_probe"],
    "qwen": ["QwenRegressor", "QwenRegressor.save_adapter"],
    "filters": ["FilterSpec", "load_filter", "save_filter", "ALLOWED_PROBE_TYPES"],
    "metrics": ["ROUTING_SCORERS", "medium_plus_recall"],
    "prefilter": ["Prefilter"],
    "tiers": ["weighted_average", "tier_of"],
    "datasets": ["make_articles", "load_articles"],
    "models": ["resolve_model", "offline_e5_small"],
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    for module in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "WARNING" not in completed.stderr, completed.stderr
    return out


def test_docs_build_strict(site):
    for page in ("index.html", "quickstart/index.html", "router-and-calibration/index.html",
                 "filters/index.html", "cli/index.html", "speed/index.html"):
        assert (site / page).is_file(), page


@pytest.mark.parametrize("module", sorted(API_PAGES))
def test_api_page_renders(site, module):
    html = (site / "api" / module / "index.html").read_text(encoding="utf-8")
    assert f'id="hybrid_estimators.{module}.' in html  # mkdocstrings rendered members
    for name in API_PAGES[module]:
        assert f'id="hybrid_estimators.{module}.{name}"' in html, name


def test_plots_are_shown(site):
    for page, image in (
        ("quickstart", "predicted_vs_true.png"),
        ("router-and-calibration", "threshold_tradeoff.png"),
        ("speed", "time_per_stage.png"),
    ):
        html = (site / page / "index.html").read_text(encoding="utf-8")
        assert f"../images/{image}" in html
        assert (site / "images" / image).is_file()
