"""Peak memory of ``score`` against the size of one article line (Stage 1 only).

A line's text is cut to what the stages read before anything copies it
(:data:`hybrid_estimators.scoring.KEEP_CHARS` from each end), so the peak
memory of a run should not grow with the line. Each size runs
``hybrid-estimators score --stage1-only`` in a process of its own on one
generated line (words of generated text, never article texts) and reads
that process's peak resident memory from ``os.wait4``.

Usage::

    python -m benchmarks.line_memory [--filter filters/seece_energy_tech/v1] [--sizes-mb 0.001 1 8 31]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ._machine import describe_machine

ROOT = Path(__file__).resolve().parents[1]
FILTER = ROOT / "filters" / "seece_energy_tech" / "v1"
WORDS = ("grid", "battery", "solar", "turbine", "storage", "policy", "carbon", "market", "wind", "hydrogen")


def write_line(path, size_bytes, seed=0):
    """One JSONL article whose content is about `size_bytes` of generated words."""
    rng = np.random.default_rng(seed)
    words = rng.choice(WORDS, size=max(1, size_bytes // 7))
    content = " ".join(words)[:size_bytes]
    path.write_text(json.dumps({"id": "big", "title": "A long article", "content": content}) + "\n", encoding="utf-8")


def peak_rss_mb(command):
    """Peak resident memory (MB) of `command`, run in a process of its own, and its exit status."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    process.stderr.close()
    return usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def measure(filter_dir, sizes_mb):
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size_mb in sizes_mb:
            source, out = Path(folder) / "in.jsonl", Path(folder) / "out.jsonl"
            write_line(source, int(size_mb * 1_000_000))
            command = [sys.executable, "-m", "hybrid_estimators", "score", "--filter", str(filter_dir),
                       "--stage1-only", "--no-progress", "--quiet", str(source), "-o", str(out)]
            started = time.perf_counter()
            peak, status = peak_rss_mb(command)
            row = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
            rows.append({"line_mb": round(source.stat().st_size / 1e6, 3), "peak_rss_mb": round(peak, 1),
                         "exit_status": status, "seconds": round(time.perf_counter() - started, 1),
                         "error": row.get("error"), "weighted_average": row.get("weighted_average")})
            out.unlink(missing_ok=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filter", type=Path, default=FILTER)
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[0.001, 1, 8, 31])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "line_memory.json")
    args = parser.parse_args(argv)
    result = {"kind": "line-memory", "machine": describe_machine(), "filter": str(args.filter),
              "rows": measure(args.filter, args.sizes_mb)}
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"Peak memory of score --stage1-only against one line's size ({result['machine']})")
    print(f"{'line MB':>9}  {'peak RSS MB':>11}  {'status':>6}  {'s':>6}  w.avg / error")
    for row in result["rows"]:
        print(f"{row['line_mb']:>9.3f}  {row['peak_rss_mb']:>11.1f}  {row['exit_status']:>6}  {row['seconds']:>6.1f}  "
              f"{row['error'] or row['weighted_average']}")


if __name__ == "__main__":
    main()
