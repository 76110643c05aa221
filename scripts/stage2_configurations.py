"""Stage 2 at cheaper configurations: token budget, layers read, precision.

The shipped ``seece_energy_tech/v1`` Stage 2 is Qwen2.5-Coder-0.5B, frozen,
read by :class:`~hybrid_estimators.qwen.QwenRegressor` (mean pools of
hidden states 6/12/18/24, head + tail 256 + 256 tokens, float32) with a
ridge head, blended half and half with Stage 1 (``stage2_weight: 0.5``).
This script measures it at cheaper configurations on the same folds as
its recorded evaluation (``KFold(5, shuffle=True, random_state=seed)``,
seeds 0, 1, 2, as in ``benchmarks/results/seece_stage2_oof.npz``):

* ``extract``: one forward pass per article at a budget and precision,
  through the production code (``QwenRegressor(..., layers="all",
  pooling="mean").hidden_features``): the mean pools of all 25 hidden
  states, from which every layer subset is a column slice. Saved in chunks
  of 16 articles (an interrupted pass resumes), with the seconds each chunk
  took.
* ``evaluate``: for every extracted configuration and layer subset
  (6/12, 6/12/18, 6/12/18/24), the ridge head
  (:func:`~hybrid_estimators.qwen.fit_ridge_head`, what ``max_epochs=0``
  fits) out of fold on those folds, blended 0.5 / 0.5 with Stage 1 out of
  fold on the same folds (the shipped Stage 1: e5-small at the filter's
  token budget + its probe, ``scripts/make_filters.py``'s ``stage1_cv``),
  against the reference configuration (fp32, 256 + 256, 6/12/18/24). The
  weighted average's error of each article is averaged over the seeds;
  2,000 paired bootstrap resamples of the articles give the 90% interval
  of the relative difference of MAE. A configuration qualifies when the
  upper bound is within +1%. Where a float32 pass of the same budget
  exists, a bfloat16 row also reports the float32-fitted heads applied to
  its features (``float32_head_applied``: what a shipped head meets);
  ``--record FILTER_DIR`` writes the precisions that pass that check at
  the filter's own budget and layers into its metadata.
* ``time``: seconds per article of each configuration as it would ship
  (the forward pass stops at the last layer read), all in one process and
  interleaved, so their ratios share the machine's load.
* ``oof``: the out-of-fold predictions of one configuration's ridge head
  (``--save-oof NPZ``), for ``scripts/make_filters.py --stage2-oof``.

Run (in the background; one pass per budget and precision)::

    nohup nice -n 5 python scripts/stage2_configurations.py extract \\
        --head-tail 128 128 --dtype float32 > /tmp/stage2_cfg.log 2>&1 &
    python scripts/stage2_configurations.py evaluate --record filters/seece_energy_tech/v1
    python scripts/stage2_configurations.py oof --head-tail 128 128 --dtype float32 \\
        --save-oof benchmarks/results/seece_stage2_oof.npz
    python scripts/stage2_configurations.py time --articles 8
"""

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import KFold

from hybrid_estimators import models
from hybrid_estimators.datasets import load_articles, shared_data_dir
from hybrid_estimators.qwen import QwenRegressor, fit_ridge_head
from hybrid_estimators.tiers import weighted_average

logger = logging.getLogger("stage2_configurations")
ROOT = Path(__file__).resolve().parents[1]
CHUNK = 16
N_HIDDEN_STATES = 25  # Qwen2.5-Coder-0.5B: embeddings + 24 layers
LAYER_SETS = {24: [6, 12, 18, 24], 18: [6, 12, 18], 12: [6, 12]}
REFERENCE = ("float32", (256, 256))
OOF_NPZ = ROOT / "benchmarks" / "results" / "seece_stage2_oof_256+256.npz"  # the reference: float32, 256 + 256


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2],
    )
    parser.add_argument("command", choices=["extract", "evaluate", "time", "oof"])
    parser.add_argument("--data", type=Path, default=None, help="labelled folder (default: shared seece_energy_tech)")
    parser.add_argument("--features", type=Path, default=Path("/tmp/stage2_cfg"), help="where passes are saved")
    parser.add_argument("--head-tail", type=int, nargs=2, default=[256, 256])
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--articles", type=int, default=8, help="articles timed per configuration (time)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "stage2_configurations.json")
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 12, 18, 24], help="oof: hidden states read")
    parser.add_argument("--save-oof", type=Path, metavar="NPZ", help="oof: where to write the predictions")
    parser.add_argument("--record", type=Path, metavar="FILTER_DIR",
                        help="evaluate: write the precisions qualified at the filter's budget and layers "
                        "into its metadata")
    return parser.parse_args()


def base_model():
    return models.resolve_stage2_base(models.QWEN25_CODER_NAME, models.QWEN25_CODER_GGUF)


def regressor(head_tail, dtype, layers, batch_size):
    """The shipped Stage 2's QwenRegressor at a budget, precision and `layers`."""
    return QwenRegressor(
        base_model(), gguf_file=models.QWEN25_CODER_GGUF, head_tail=tuple(head_tail),
        max_length=sum(head_tail), pooling="mean", layers=layers, dtype=dtype,
        batch_size=batch_size, show_progress_bar=False,
    )


def config_name(dtype, head_tail):
    return f"{dtype}-{head_tail[0]}+{head_tail[1]}"


def cpu_flags_line():
    flags = set()
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo", encoding="utf-8")
                  if line.startswith("model name")), platform.processor())
    shown = sorted(flag for flag in flags if flag.startswith(("avx", "amx", "fma")) or "vnni" in flag or "bf16" in flag)
    return f"{model}; {' '.join(shown)}"


def load_average():
    with open("/proc/loadavg", encoding="utf-8") as handle:
        return handle.read().split()[:3]


# --- extract ------------------------------------------------------------------


def extract(args, X):
    """Mean pools of every hidden state at one budget and precision, in resumable chunks."""
    where = args.features / config_name(args.dtype, args.head_tail)
    where.mkdir(parents=True, exist_ok=True)
    model = regressor(args.head_tail, args.dtype, "all", args.batch_size)
    for start in range(0, len(X), CHUNK):
        path, timing = where / f"chunk{start:04d}.npy", where / f"chunk{start:04d}.json"
        if path.exists() and timing.exists():
            continue
        began = time.perf_counter()
        features = model.hidden_features(X.iloc[start : start + CHUNK]).astype(np.float32)
        took = time.perf_counter() - began
        np.save(path, features)
        timing.write_text(json.dumps({"seconds": took, "n": len(features), "load": load_average(), "first": start == 0}))
        logger.info("%s: %d/%d articles, %.2f s/article (load %s)", where.name, start + len(features), len(X),
                    took / len(features), "/".join(load_average()))
    (where / "done.json").write_text(json.dumps({"n_articles": len(X), "cpu": cpu_flags_line(),
                                                 "threads": args.threads}))


def load_pass(features_dir, name, n_articles):
    """A finished pass's features (n_articles, 25 * hidden) and its seconds per article, or None."""
    where = features_dir / name
    if not (where / "done.json").exists():
        return None
    chunks = [np.load(where / f"chunk{start:04d}.npy") for start in range(0, n_articles, CHUNK)]
    timings = [json.loads((where / f"chunk{start:04d}.json").read_text()) for start in range(0, n_articles, CHUNK)]
    later = [t for t in timings if not t["first"]]  # the first chunk loads the model
    seconds = sum(t["seconds"] for t in later) / sum(t["n"] for t in later)
    return np.concatenate(chunks).astype(np.float64), seconds


def layer_columns(layers, n_columns):
    hidden = n_columns // N_HIDDEN_STATES
    return np.concatenate([np.arange(layer * hidden, (layer + 1) * hidden) for layer in layers])


# --- evaluate -----------------------------------------------------------------


def stage1_out_of_fold(X, Y, seeds, n_folds):
    """The shipped Stage 1's out-of-fold predictions for every seed (scripts/make_filters.py's recipe)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_filters import stage1_cv

    from hybrid_estimators.filters import FilterSpec

    folder = ROOT / "filters" / "seece_energy_tech" / "v1"
    spec = FilterSpec.from_yaml(folder / "config.yaml")
    probe = json.loads((folder / "probe" / "metadata.json").read_text(encoding="utf-8"))["metrics"]["probe"]
    Y = Y[spec.dimension_names]
    threshold = spec.hybrid_inference["threshold"]
    return np.stack([
        np.asarray(stage1_cv(spec, X, Y, None, threshold, kinds=(probe,), cv=n_folds, random_state=seed)[1])
        for seed in seeds
    ])


def ridge_out_of_fold(F, Y, folds, applied_to=None):
    """Out-of-fold ridge heads' predictions; a head fitted on `F` predicts `applied_to` when given
    (a float32-trained head meeting another precision's features, as a shipped head does)."""
    applied_to = F if applied_to is None else applied_to
    predicted = np.empty_like(Y)
    for train, test in folds:
        weight, bias, _ = fit_ridge_head(F[train], Y[train])
        predicted[test] = applied_to[test] @ weight.T + bias
    return predicted


def article_errors(per_seed, Y, weights):
    """Each article's error of the weighted average (scores clipped to 0-10), averaged over the seeds."""
    truth = weighted_average(Y, weights)
    return np.mean([np.abs(weighted_average(np.clip(P, 0, 10), weights) - truth) for P in per_seed], axis=0)


def paired_relative_interval(errors, reference, n_boot, seed=0):
    """90% bootstrap interval of MAE / reference MAE - 1, the articles resampled in pairs."""
    rng = np.random.RandomState(seed)
    idx = rng.randint(0, len(errors), size=(n_boot, len(errors)))
    relative = errors[idx].mean(axis=1) / reference[idx].mean(axis=1) - 1
    absolute = (errors - reference)[idx].mean(axis=1)
    return {
        "relative": float(errors.mean() / reference.mean() - 1),
        "relative_ci90": [float(v) for v in np.percentile(relative, [5, 95])],
        "absolute": float((errors - reference).mean()),
        "absolute_ci90": [float(v) for v in np.percentile(absolute, [5, 95])],
    }


def evaluate(args, X, Y_frame, spec, data):
    saved = np.load(OOF_NPZ)
    seeds, n_folds = [int(s) for s in saved["seeds"]], int(saved["folds"])
    if list(saved["ids"]) != X["id"].astype(str).tolist():
        raise SystemExit(f"{OOF_NPZ}: its articles are not those of {data}")
    dims = [str(d) for d in saved["dimensions"]]
    Y = Y_frame[dims].to_numpy()
    weights = np.array([spec["dimensions"][d] for d in dims])
    folds = {seed: list(KFold(n_folds, shuffle=True, random_state=seed).split(X)) for seed in seeds}
    stage1 = stage1_out_of_fold(X, Y_frame, seeds, n_folds)
    stage1_errors = article_errors(stage1, Y, weights)

    rows, applied = {}, {}
    for dtype in ("float32", "bfloat16"):
        for head_tail in ((256, 256), (128, 128), (64, 64)):
            name = config_name(dtype, head_tail)
            loaded = load_pass(args.features, name, len(X))
            if loaded is None:
                logger.info("%s: no finished pass under %s", name, args.features)
                continue
            F_all, seconds = loaded
            float32_pass = load_pass(args.features, config_name("float32", head_tail), len(X))
            for last, layers in LAYER_SETS.items():
                columns = layer_columns(layers, F_all.shape[1])
                F = F_all[:, columns]
                per_seed = [ridge_out_of_fold(F, Y, folds[seed]) for seed in seeds]
                rows[(dtype, head_tail, last)] = {
                    "dtype": dtype, "head_tail": list(head_tail), "max_length": sum(head_tail), "layers": layers,
                    "layers_run": last, "extraction_seconds_per_article": seconds, "per_seed": per_seed,
                }
                if dtype != "float32" and float32_pass is not None:
                    applied[(dtype, head_tail, last)] = [
                        ridge_out_of_fold(float32_pass[0][:, columns], Y, folds[seed], applied_to=F)
                        for seed in seeds
                    ]
    reference_key = (REFERENCE[0], REFERENCE[1], 24)
    if reference_key in rows:
        reference_source = "this script's float32 256+256 pass"
    else:
        reference_source = f"{OOF_NPZ.relative_to(ROOT)} (the shipped Stage 2's recorded out-of-fold predictions)"
        rows[reference_key] = {"dtype": "float32", "head_tail": [256, 256], "max_length": 512,
                               "layers": LAYER_SETS[24], "layers_run": 24, "extraction_seconds_per_article": None,
                               "per_seed": list(saved["predictions"])}
    recorded_errors = article_errors(list(saved["predictions"]), Y, weights)

    def blend(per_seed):
        return [0.5 * P + 0.5 * S for P, S in zip(per_seed, stage1)]

    rows_per_seed_float32 = {key[1:]: row["per_seed"] for key, row in rows.items() if key[0] == "float32"}

    reference_errors = article_errors(blend(rows[reference_key]["per_seed"]), Y, weights)
    results = []
    for key, row in rows.items():
        per_seed = row.pop("per_seed")
        errors = article_errors(blend(per_seed), Y, weights)
        stage2_errors = article_errors(per_seed, Y, weights)
        versus = paired_relative_interval(errors, reference_errors, args.bootstrap)
        if key in applied:  # the float32 head of the same budget and layers on these features
            float32_errors = article_errors(blend(rows_per_seed_float32[key[1:]]), Y, weights)
            applied_errors = article_errors(blend(applied[key]), Y, weights)
            row["float32_head_applied"] = {
                "blend_mae": float(applied_errors.mean()),
                "vs_float32_features": paired_relative_interval(applied_errors, float32_errors, args.bootstrap),
            }
        row.update({
            "configuration": f"{row['dtype']}, {row['head_tail'][0]}+{row['head_tail'][1]}, layers {row['layers']}",
            "blend_mae": float(errors.mean()),
            "blend_mae_per_seed": [float(article_errors([b], Y, weights).mean()) for b in blend(per_seed)],
            "stage2_alone_mae": float(stage2_errors.mean()),
            "blend_vs_stage1": float((errors - stage1_errors).mean()),
            "blend_vs_reference": versus,
            "qualifies": bool(versus["relative_ci90"][1] <= 0.01),
            "relative_cost": row["layers_run"] / 24 * row["max_length"] / 512,
        })
        results.append(row)
        logger.info("%s: blend MAE %.4f, vs reference %+.2f%% [%+.2f%%, %+.2f%%]%s", row["configuration"],
                    row["blend_mae"], 100 * versus["relative"], 100 * versus["relative_ci90"][0],
                    100 * versus["relative_ci90"][1], " qualifies" if row["qualifies"] else "")
    qualifying = [row for row in results if row["qualifies"]]
    cheapest = min(qualifying, key=lambda r: (r["relative_cost"], r["dtype"] == "float32")) if qualifying else None
    output = {
        "data": data.name,
        "n_articles": len(X),
        "folds": f"KFold({n_folds}, shuffle=True, random_state=seed), seeds {seeds} (as {OOF_NPZ.name})",
        "stage1": "the shipped Stage 1 (scripts/make_filters.py stage1_cv: e5-small at the filter's budget + its probe), out of fold on the same folds",
        "blend": "0.5 * Stage 2 + 0.5 * Stage 1 on every article (stage2_weight 0.5); weighted average of the scores clipped to 0-10",
        "reference": {"configuration": "float32, 256+256, layers [6, 12, 18, 24]", "source": reference_source,
                      "blend_mae": float(reference_errors.mean()),
                      "blend_mae_from_recorded_oof": float(article_errors(blend(list(saved["predictions"])), Y, weights).mean()),
                      "stage2_alone_mae_recorded_oof": float(recorded_errors.mean())},
        "stage1_mae": float(stage1_errors.mean()),
        "criterion": "qualifies when the upper bound of the 90% paired bootstrap interval of blend MAE / reference blend MAE - 1 is <= +1%",
        "bootstrap": f"{args.bootstrap} paired resamples of the articles (seed 0), each article's error averaged over the seeds",
        "relative_cost": "layers run / 24 x tokens / 512 (a rough guide; the time command measures it)",
        "cpu": cpu_flags_line(),
        "configurations": sorted(results, key=lambda r: (r["dtype"], -r["max_length"], -r["layers_run"])),
        "cheapest_qualifying": None if cheapest is None else cheapest["configuration"],
    }
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    output["timing"] = previous.get("timing")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(output, indent=2) + "\n")
    logger.info("wrote %s; cheapest qualifying: %s", args.out, output["cheapest_qualifying"])
    print(markdown_table(output))
    if args.record is not None:
        record_in_filter(args.record, output, args)


def record_in_filter(folder, output, args):
    """Write the precisions at iso-quality at the filter's own budget and layers into its metadata.

    float32 is the reference. Another precision qualifies when the filter's
    kind of head, fitted on float32 features out of fold, applied to that
    precision's features gives a blend MAE within +1% (upper 90% bound)
    of the same heads on the float32 features: a shipped head meets them so.
    """
    from hybrid_estimators.filters import FilterSpec, record_qualified_configurations
    from hybrid_estimators.models import cpu_flags, cpu_kind

    stage2 = FilterSpec.from_yaml(Path(folder) / "config.yaml").hybrid_inference["stage2"]
    shipped = (list(stage2["head_tail"]), list(stage2["layers"]))
    qualified = [{"dtype": "float32", "reference": True}]
    for row in output["configurations"]:
        swap = row.get("float32_head_applied")
        if swap is None or (row["head_tail"], row["layers"]) != shipped:
            continue
        versus = swap["vs_float32_features"]
        if versus["relative_ci90"][1] <= 0.01:
            qualified.append({"dtype": row["dtype"], "blend_mae_relative": versus["relative"],
                              "blend_mae_relative_ci90": versus["relative_ci90"]})
    out = args.out.resolve()
    record_qualified_configurations(
        folder, "stage2", {cpu_kind(cpu_flags()): qualified},
        measured_by="python scripts/stage2_configurations.py " + " ".join(sys.argv[1:]),
        evidence={
            "results": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out),
            "criterion": "a head fitted on float32 features, applied to the precision's features: blend MAE "
                         "within +1% (upper 90% bound) of the same heads on float32 features, same folds",
            "folds": output["folds"], "cpu": output["cpu"],
        },
    )





def markdown_table(output):
    lines = ["| configuration | layers run | Stage 2 alone MAE | blend MAE | blend − reference [90% CI] | qualifies |",
             "|---|---:|---:|---:|---|---|"]
    for row in output["configurations"]:
        v = row["blend_vs_reference"]
        lines.append(f"| {row['dtype']}, {row['head_tail'][0]}+{row['head_tail'][1]}, {row['layers']} | {row['layers_run']} "
                     f"| {row['stage2_alone_mae']:.3f} | {row['blend_mae']:.4f} "
                     f"| {100 * v['relative']:+.2f}% [{100 * v['relative_ci90'][0]:+.2f}%, {100 * v['relative_ci90'][1]:+.2f}%] "
                     f"| {'yes' if row['qualifies'] else 'no'} |")
    return "\n".join(lines)


def save_out_of_fold(args, X, Y_frame):
    """The recipe's out-of-fold predictions at --dtype/--head-tail/--layers, for make_filters.py --stage2-oof."""
    saved = np.load(OOF_NPZ)
    seeds, n_folds = [int(s) for s in saved["seeds"]], int(saved["folds"])
    dims = [str(d) for d in saved["dimensions"]]
    name = config_name(args.dtype, args.head_tail)
    loaded = load_pass(args.features, name, len(X))
    if loaded is None:
        raise SystemExit(f"{name}: no finished pass under {args.features}: run extract first")
    F = loaded[0][:, layer_columns(args.layers, loaded[0].shape[1])]
    Y = Y_frame[dims].to_numpy()
    per_seed = [
        ridge_out_of_fold(F, Y, list(KFold(n_folds, shuffle=True, random_state=seed).split(X))) for seed in seeds
    ]
    description = (f"Qwen2.5-Coder-0.5B frozen, {args.dtype}, head+tail {args.head_tail[0]}+{args.head_tail[1]}, "
                   f"mean pools of layers {args.layers}, ridge head (fit_ridge_head): out-of-fold predictions "
                   f"of KFold({n_folds}, shuffle=True, random_state=seed) for seeds {seeds}, the head refitted "
                   "without each fold")
    args.save_oof.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.save_oof, ids=np.array(X["id"].astype(str).tolist(), dtype=str), dimensions=np.array(dims),
             predictions=np.stack(per_seed), seeds=np.array(seeds), folds=np.array(n_folds),
             description=np.array(description))
    logger.info("wrote %s", args.save_oof)


# --- time ---------------------------------------------------------------------


#: (dtype, head + tail, last layer read): today's reference, and bfloat16 at each budget and depth.
TIMED = [("float32", (256, 256), 24)] + [
    ("bfloat16", head_tail, last) for head_tail in ((256, 256), (128, 128), (64, 64)) for last in (24, 12)
]


def time_configurations(args, X):
    """Seconds per article of each configuration as shipped (the pass stops at the last layer read).

    Rounds over the configurations (one model loaded at a time), so every
    configuration is timed across the same stretch of the machine's load;
    the fastest round counts.
    """
    sample = X.sample(args.articles, random_state=0)
    best = {}
    for round_ in range(2):
        for dtype, head_tail, last in TIMED:
            model = regressor(head_tail, dtype, LAYER_SETS[last], args.batch_size)
            model.hidden_features(sample.iloc[:1])  # loads the model, warms the kernels
            began = time.perf_counter()
            model.hidden_features(sample)
            seconds = (time.perf_counter() - began) / len(sample)
            key = config_name(dtype, head_tail) + f"-L{last}"
            best[key] = min(best.get(key, np.inf), seconds)
            logger.info("round %d %s: %.2f s/article (load %s)", round_, key, seconds, "/".join(load_average()))
            del model
    reference = best[config_name(*REFERENCE) + "-L24"]
    timing = {
        "cpu": cpu_flags_line(), "threads": args.threads, "articles": args.articles, "rounds": 2,
        "load_average_end": load_average(),
        "seconds_per_article": best,
        "speedup_vs_reference": {key: reference / value for key, value in best.items()},
    }
    output = json.loads(args.out.read_text()) if args.out.exists() else {}
    output["timing"] = timing
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(output, indent=2) + "\n")
    for key, value in best.items():
        print(f"{key}: {value:.2f} s/article, {reference / value:.2f}x")


# --- main ---------------------------------------------------------------------


def main():
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    data = args.data or shared_data_dir() / "seece_energy_tech"
    X, Y, spec = load_articles(data)
    if args.command == "extract":
        extract(args, X)
    elif args.command == "evaluate":
        evaluate(args, X, Y, spec, data)
    elif args.command == "oof":
        save_out_of_fold(args, X, Y)
    else:
        time_configurations(args, X)


if __name__ == "__main__":
    sys.exit(main())
