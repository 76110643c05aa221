"""Re-record the shipped filters' ``training_articles_sha256`` with the normalised text hash.

    python scripts/rerecord_training_hashes.py [--data ../shared/data] [--check]

Filters saved before :func:`hybrid_estimators.text.text_hashes` normalised
the text (NFKC, case folded, whitespace collapsed) recorded the sha256 of
the exact title and content, which one trailing space defeats. For each
shipped filter this reads its labelled data (never copied), checks that
they are the articles the probe was fitted on (``training_data_sha256``,
and the recorded exact hashes), and rewrites ``probe/metadata.json`` with
the normalised hashes, nothing else changed. ``--check`` only says whether
a filter's record is up to date (exit 1 when one is not).
"""

import argparse
import json
import logging
import sys
from pathlib import Path

from hybrid_estimators._io import atomic_write
from hybrid_estimators.datasets import load_articles, shared_data_dir
from hybrid_estimators.filters import METADATA_FILE, data_hash
from hybrid_estimators.text import text_hashes

logger = logging.getLogger("rerecord_training_hashes")
FILTERS = Path(__file__).resolve().parents[1] / "filters"


def _training_data(metadata, data_root):
    name = metadata["filter"].split("/")[0]
    X, Y, _ = load_articles(data_root / name)
    Y = Y[metadata["dimension_names"]]
    if data_hash(X, Y) != metadata["training_data_sha256"]:
        raise SystemExit(f"{data_root / name} is not the data {metadata['filter']} was trained on")
    return X


def rerecord(metadata_path, data_root, check_only):
    """True when the record was (or is) up to date."""
    metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    X = _training_data(metadata, data_root)
    recorded = metadata["training_articles_sha256"]
    normalised = sorted(set(text_hashes(X)))
    if recorded == normalised:
        logger.info("%s: already normalised (%d articles)", metadata_path, len(normalised))
        return True
    if recorded != sorted(set(text_hashes(X, normalised=False))):
        raise SystemExit(f"{metadata_path}: the recorded hashes are neither scheme's for its training data")
    if check_only:
        logger.warning("%s: records exact hashes; run without --check", metadata_path)
        return False
    metadata["training_articles_sha256"] = normalised
    text = json.dumps(metadata, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write(metadata_path, text)
    logger.info("%s: %d exact hashes -> %d normalised", metadata_path, len(recorded), len(normalised))
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=shared_data_dir(), help="the shared data folder")
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when a record is stale")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.data is None:
        raise SystemExit("no shared data folder: pass --data")
    ok = [rerecord(path, args.data, args.check) for path in sorted(FILTERS.glob(f"*/*/{METADATA_FILE}"))]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
