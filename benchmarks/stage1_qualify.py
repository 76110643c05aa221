"""Stage 1 configurations measured for iso-quality on the same folds.

    python -m benchmarks.stage1_qualify embed --dataset NAME --configs torch:512 torch:128:60+59 ...
    python -m benchmarks.stage1_qualify budget --dataset NAME --configs torch:512 torch:128:60+59 ...
    python -m benchmarks.stage1_qualify qualify --dataset NAME --configs torch:256:124+123 openvino-bf16:256:124+123 ... \
        [--record filters/NAME/v1]

A configuration is ``backend:max_seq_length[:head+tail]`` (e.g.
``openvino-int8:128:60+59``: OpenVINO int8, 128 tokens, the first 60 and
last 59 e5 tokens). ``embed`` computes the embeddings of every article of a
labelled data set at each configuration once and keeps them as ``.npy``
under ``--cache-dir`` (``/tmp/stage1_qualify``); the other commands compute
what is missing and read the rest. Quality is that of
:mod:`benchmarks.budget`: the MAE of the weighted average of ridge probes
(:func:`~hybrid_estimators.make_ridge_probe`, the shipped probe's kind and
alpha search) out of fold, ``KFold(5, shuffle=True, random_state=seed)``
for each of ``--seeds`` (5 by default), the SAME folds for every
configuration; per-article errors averaged over the seeds; paired bootstrap
90% intervals over articles of the difference to the baseline; routing ROC
AUC for MEDIUM+.

- ``budget``: one probe per configuration, trained on its own embeddings
  (a filter at another token budget is a retrained filter); the baseline is
  the first configuration (512 tokens, head). The choice is the smallest
  budget whose upper 90% bound of the relative MAE difference stays within
  +1%.
- ``qualify``: the filter's probe is trained on the REFERENCE
  configuration's embeddings (torch, fp32, the filter's budget: the first
  of ``--configs``) and applied to each candidate's embeddings of the test
  fold, as a shipped filter's probe meets another runtime's features. A
  candidate qualifies when its MAE is within 1% of the reference's and its
  routing AUC within 0.005 (point estimates over 5 × 5 folds; the intervals
  are reported). The result holds ``qualified_configurations: {cpu_kind:
  [configuration, ...]}``, the shape a filter's probe metadata keeps for
  ``E5Embedder(backend="auto")``; only this machine's kind is measured.
  ``--record FILTER_DIR`` writes them into the filter's metadata
  (:func:`~hybrid_estimators.filters.record_qualified_configurations`),
  where ``load_filter(backend="auto")`` reads them.

Timings printed while embedding are one pass on a shared machine: not a
benchmark.
"""

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path(os.environ.get("STAGE1_QUALIFY_CACHE", "/tmp/stage1_qualify"))
logger = logging.getLogger("benchmarks.stage1_qualify")


def parse_config(text):
    """``"openvino-int8:128:60+59"`` -> ``{"backend", "max_seq_length", "head_tail"}``."""
    parts = text.split(":")
    backend, budget = parts[0], int(parts[1])
    head_tail = None
    if len(parts) > 2 and parts[2]:
        head, tail = parts[2].split("+")
        head_tail = [int(head), int(tail)]
    return {"backend": backend, "max_seq_length": budget, "head_tail": head_tail}


def config_name(config):
    head_tail = config.get("head_tail")
    suffix = "" if not head_tail else f":{head_tail[0]}+{head_tail[1]}"
    return f"{config['backend']}:{config['max_seq_length']}{suffix}"


def embed_configuration(X, config, *, dataset, cache_dir=DEFAULT_CACHE, model="intfloat/multilingual-e5-small",
                        prefix="passage: ", batch_size=16, fit_X=None):
    """Embeddings of every article of `X` at `config`, computed once and kept as ``.npy``."""
    path = Path(cache_dir) / dataset / (config_name(config).replace(":", "_") + ".npy")
    if path.exists():
        return np.load(path)
    from hybrid_estimators import ArticleText, E5Embedder

    texts_of = ArticleText(head_tail=config["head_tail"], tokenizer=model if config["head_tail"] else None)
    texts = list(texts_of.fit_transform(X)[:, 0])
    embedder = E5Embedder(model, prefix=prefix, backend=config["backend"], batch_size=batch_size,
                          max_seq_length=config["max_seq_length"], cache=False, show_progress_bar=False)
    embedder.fit(texts if fit_X is None else fit_X)
    start = time.perf_counter()
    embeddings = embedder.embed(texts)
    logger.info("%s %s: %.1f ms/article (shared machine: not a benchmark)", dataset, config_name(config),
                1000 * (time.perf_counter() - start) / len(texts))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, embeddings)
    return embeddings


# --- quality on the same folds ------------------------------------------------


def compare(configs, predictions, Y, spec, n_bootstrap=2000):
    """Rows of MAE, AUC and paired differences to the first configuration, with 90% intervals."""
    from benchmarks.budget import quality, summarise
    from hybrid_estimators.metrics import is_medium_plus

    weights = spec["dimensions"]
    positive = np.asarray(is_medium_plus(Y, weights, tiers=spec.get("tiers")))
    rows, per_row = [], {}
    for config, predicted in zip(configs, predictions):
        key = config_name(config)
        per_row[key] = quality(predicted, Y, weights, spec.get("tiers"))
        rows.append({"key": key, "configuration": dict(config)})
    summarise(rows, per_row, positive, config_name(configs[0]), n_bootstrap)
    for row in rows:
        row["delta_mae_relative_ci90"] = [v / (row["mae"] - row["delta_mae"]) for v in row["delta_mae_ci90"]]
        del row["key"]
    return rows


def choose_budget_by_interval(rows, mae_tolerance=0.01):
    """The row of the smallest budget whose upper 90% bound of the relative ΔMAE is within `mae_tolerance`."""
    within = [row for row in rows if row["delta_mae_relative_ci90"][1] <= mae_tolerance]
    return min(within, key=lambda row: row["configuration"]["max_seq_length"])


def qualifies(row, mae_tolerance=0.01, auc_tolerance=0.005):
    """MAE within `mae_tolerance` (relative) and routing AUC within `auc_tolerance` of the reference."""
    return bool(row["delta_mae_relative"] <= mae_tolerance and row["delta_auc"] >= -auc_tolerance)


def _load(dataset):
    from hybrid_estimators.datasets import load_articles, shared_data_dir

    folder = Path(dataset)
    if not (folder / "articles.jsonl").exists():
        folder = shared_data_dir() / dataset
    return folder.name, load_articles(folder)


def _embed_command(args):
    name, (X, _, _) = _load(args.dataset)
    for text in args.configs:
        embed_configuration(X, parse_config(text), dataset=name, cache_dir=args.cache_dir)


def _embeddings(args, name, X, configs):
    return [embed_configuration(X, config, dataset=name, cache_dir=args.cache_dir) for config in configs]


def _write(args, result, default_name):
    from hybrid_estimators._io import json_safe

    out = args.out or ROOT / "benchmarks" / "results" / default_name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_safe(result), indent=2) + "\n", encoding="utf-8")
    logger.info("wrote %s", out)


def _header(args, name, n_articles):
    from benchmarks._machine import describe_machine
    from hybrid_estimators.models.cpu import cpu_flags, cpu_kind

    return {
        "dataset": name,
        "n_articles": n_articles,
        "machine": describe_machine(),
        "cpu_kind": cpu_kind(cpu_flags()),
        "probe": "ridge (make_ridge_probe: StandardScaler + RidgeCV, alphas logspace(0, 5, 11))",
        "folds": f"KFold(5, shuffle=True, random_state=seed) for seed in {list(args.seeds)}, the same for every "
                 "configuration",
        "seeds": list(args.seeds),
        "n_bootstrap": args.bootstrap,
        "intervals": "90%, paired bootstrap over articles (per-article errors averaged over the seeds)",
        "loadavg": list(os.getloadavg()),
    }


def _budget_command(args):
    from benchmarks.budget import out_of_fold

    name, (X, Y, spec) = _load(args.dataset)
    configs = [parse_config(text) for text in args.configs]
    embeddings = _embeddings(args, name, X, configs)
    predictions = [out_of_fold(e, Y, "ridge", args.seeds) for e in embeddings]
    rows = compare(configs, predictions, Y, spec, args.bootstrap)
    chosen = choose_budget_by_interval(rows)
    result = _header(args, name, len(X)) | {
        "kind": "stage1-budget-repeated-cv",
        "baseline": configs[0],
        "rule": "the smallest budget whose upper 90% bound of the relative weighted-average MAE difference "
                "to the baseline is within +1%",
        "rows": rows,
        "chosen": chosen["configuration"],
        "chosen_meets_auc": bool(chosen["delta_auc_ci90"][0] >= -0.005),
    }
    print(format_rows(result, "budget"))
    _write(args, result, f"stage1_budget_cv_{name}.json")


def _qualify_command(args):
    from benchmarks.budget import out_of_fold
    from hybrid_estimators.models.cpu import BACKEND_PRECISION

    name, (X, Y, spec) = _load(args.dataset)
    configs = [parse_config(text) for text in args.configs]
    embeddings = _embeddings(args, name, X, configs)
    predictions = [out_of_fold(embeddings[0], Y, "ridge", args.seeds, applied_to=e) for e in embeddings]
    rows = compare(configs, predictions, Y, spec, args.bootstrap)
    for row, embedded in zip(rows, embeddings):
        row["configuration"]["precision"] = BACKEND_PRECISION[row["configuration"]["backend"]]
        row["cosine_to_reference_min"] = float((embedded * embeddings[0]).sum(1).min())
        row["qualified"] = qualifies(row)
    header = _header(args, name, len(X))
    result = header | {
        "kind": "stage1-qualification",
        "reference": rows[0]["configuration"],
        "criteria": {"mae_relative_at_most": 0.01, "auc_drop_at_most": 0.005,
                     "on": "point estimates over the seeds' folds; 90% intervals reported"},
        "rows": rows,
        "qualified_configurations": {
            header["cpu_kind"]: [row["configuration"] for row in rows if row["qualified"]],
        },
        "measured_cpu_kinds": [header["cpu_kind"]],
    }
    print(format_rows(result, "qualify"))
    _write(args, result, f"stage1_qualified_{name}.json")
    if args.record is not None:
        record_in_filter(args.record, result, args)


def record_in_filter(folder, result, args):
    """Write the qualified configurations into the filter's metadata, for ``backend="auto"``."""
    import sys

    from hybrid_estimators.filters import FilterSpec, embedding_budget, record_qualified_configurations

    reference = result["reference"]
    budget = embedding_budget(FilterSpec.from_yaml(Path(folder) / "config.yaml"))
    if (reference["max_seq_length"], reference["head_tail"]) != (budget["max_seq_length"],
                                                                 _as_list(budget["head_tail"])):
        raise SystemExit(f"--record {folder}: the reference {config_name(reference)} is not the filter's "
                         f"budget {budget}")
    qualified = [
        {"backend": row["configuration"]["backend"], "precision": row["configuration"]["precision"],
         "delta_mae_relative": row["delta_mae_relative"], "delta_mae_relative_ci90": row["delta_mae_relative_ci90"],
         "delta_auc": row["delta_auc"]}
        for row in result["rows"] if row["qualified"]
    ]
    out = args.out or ROOT / "benchmarks" / "results" / f"stage1_qualified_{result['dataset']}.json"
    record_qualified_configurations(
        folder, "stage1", {result["cpu_kind"]: qualified},
        measured_by="python -m benchmarks.stage1_qualify " + " ".join(sys.argv[1:]),
        evidence={"results": _relative(out), "criteria": result["criteria"], "folds": result["folds"],
                  "machine": result["machine"]},
    )


def _as_list(head_tail):
    return None if head_tail is None else [int(v) for v in head_tail]


def _relative(path):
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def format_rows(result, command):
    lines = [f"{result['dataset']}: {result['n_articles']} articles; {result['machine']}",
             f"{result['folds']}; {result['intervals']}"]
    lines.append(f"{'configuration':<28}{'MAE':>8}{'ΔMAE':>9}{'ΔMAE % [90% CI]':>26}{'AUC':>8}"
                 f"{'ΔAUC [90% CI]':>27}" + ("   qualified" if command == "qualify" else ""))
    for row in result["rows"]:
        low, high = (100 * v for v in row["delta_mae_relative_ci90"])
        auc_low, auc_high = row["delta_auc_ci90"]
        delta_mae = f"{100 * row['delta_mae_relative']:+.2f}% [{low:+.2f}, {high:+.2f}]"
        delta_auc = f"{row['delta_auc']:+.4f} [{auc_low:+.4f}, {auc_high:+.4f}]"
        line = (f"{config_name(row['configuration']):<28}{row['mae']:>8.4f}{row['delta_mae']:>+9.4f}"
                f"{delta_mae:>26}{row['auc']:>8.4f}{delta_auc:>27}")
        if command == "qualify":
            line += f"   {'yes' if row['qualified'] else 'no'}"
        lines.append(line)
    if command == "budget":
        lines.append(f"chosen (smallest budget, upper bound of relative ΔMAE <= +1%): {config_name(result['chosen'])}")
    else:
        lines.append(f"qualified_configurations: {json.dumps(result['qualified_configurations'])}")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stage1_qualify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("embed", "budget", "qualify"))
    parser.add_argument("--dataset", default="seece_energy_tech")
    parser.add_argument("--configs", nargs="+", default=[])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--record", type=Path, metavar="FILTER_DIR",
                        help="qualify: write the qualified configurations into this filter's metadata")
    return parser.parse_args(argv)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    {"embed": _embed_command, "budget": _budget_command, "qualify": _qualify_command}[args.command](args)


if __name__ == "__main__":
    main()
