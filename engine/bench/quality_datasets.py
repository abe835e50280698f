"""The quality benchmark's datasets and the published numbers beside them: plain data, so that the
command line lists them without loading numpy (`engine.bench.quality` runs the benchmark)."""

from __future__ import annotations

from typing import Any

DATASETS: dict[str, dict[str, Any]] = {
    "yoochoose-100k": {"format": "rsc15", "path": "yoochoose-clicks-100k_train_full.txt.gz",
                       "test": "yoochoose-clicks-100k_test.txt.gz",
                       "cfg": {"min_session_length": 2, "split_mode": "test_file", "val_ratio": 0.1,
                               "blackout_days": 0.0}},
    "diginetica-sample": {"format": "diginetica", "batch_size": 64, "path": "diginetica-sample_train-item-views.csv.gz",
                          "cfg": {"min_session_length": 2, "min_item_support": 5, "split_mode": "days",
                                  "test_days": 7.0, "val_ratio": 0.1, "blackout_days": 0.0}},
    "diginetica": {"format": "srgnn", "path": "srgnn/diginetica"},
    "yoochoose1_64": {"format": "srgnn", "path": "srgnn/yoochoose1_64"},
    "demo-tiny": {"demo": "tiny"},
    "demo-small": {"demo": "small"},
    "demo-full": {"demo": "full"},
}


# ../shared/data/README.md, "srgnn/": P@20 (= Recall@20) / MRR@20 in percent, all-prefixes protocol
PUBLISHED: dict[str, dict[str, tuple[float, float]]] = {
    "diginetica": {"Item-kNN": (35.75, 11.57), "NARM": (49.70, 16.17), "STAMP": (45.64, 14.32),
                   "SR-GNN": (50.73, 17.59), "GCE-GNN": (54.22, 19.04), "SGNN-HN": (55.67, 19.45)},
    "yoochoose1_64": {"Item-kNN": (51.60, 21.81), "NARM": (68.32, 28.63), "STAMP": (68.74, 29.67),
                      "SR-GNN": (70.57, 30.94), "SGNN-HN": (72.06, 32.61)},
}
# where ../shared/data/README.md names the paper a row comes from
PUBLISHED_SOURCES = {"Item-kNN": "SR-GNN paper", "SR-GNN": "AAAI 2019", "GCE-GNN": "SIGIR 2020",
                     "SGNN-HN": "CIKM 2020"}
PUBLISHED_CAVEAT = ("published: the papers' tables on these exact files; most pick the best epoch on the "
                    "test set, so treat them as optimistic")
