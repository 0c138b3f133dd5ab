"""A teacher fleet on a local Ray instance (2 CPU actors) fills the pair store exactly as one process does."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from slices import write_slice
from tsd_edge.collect import collect
from tsd_edge.fleet import FleetTeacher, with_fleet
from tsd_edge.store import PairStore
from tsd_edge.task import load_task
from tsd_edge.teachers import load_teacher

ray = pytest.importorskip("ray", reason="the teacher fleet needs the optional 'ray' extra")

COLUMNS = "input_hash, input, source, gold, split, status, label, reason, raw, relevant, relevance, probs, embedding"


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def rows(store: PairStore) -> dict[str, tuple]:
    return {r[0]: r for r in store.db.execute(f"SELECT {COLUMNS} FROM pairs")}


def test_fleet_store_equals_single_process_store(tmp_path: Path, local_ray: None) -> None:
    task_path = write_slice(tmp_path, train_per_label=15, test_per_label=8, hotels=10)
    single = load_task(task_path)
    with PairStore(tmp_path / "one.sqlite") as store:
        collect(single, store)
        one, one_rule = rows(store), store.get_meta(f"relevance/{load_teacher(single).fingerprint}")

    task_path.write_text(task_path.read_text(encoding="utf-8") + "fleet: {replicas: 2}\n", encoding="utf-8")
    task = load_task(task_path)
    fleet = with_fleet(task, load_teacher(task))
    assert isinstance(fleet, FleetTeacher)
    with PairStore(tmp_path / "fleet.sqlite") as store:
        result = collect(task, store, fleet)
        many, many_rule = rows(store), store.get_meta(f"relevance/{fleet.fingerprint}")

    # the answers came from Ray actors (one for the smoke round, then a pool of two), not from this process
    assert fleet.replicas_used == 2 and len(fleet.answered_by) == 3, fleet.answered_by
    assert all(not name.endswith(f":{os.getpid()}") for name in fleet.answered_by)
    assert sum(fleet.answered_by.values()) == result.asked == len(one)
    assert many.keys() == one.keys()
    for key, a in one.items():
        b = many[key]
        assert a[:10] == b[:10], (a[:10], b[:10])  # text, source, gold, split, status, label, reason, raw, relevant
        assert a[10] == pytest.approx(b[10], abs=1e-5)  # relevance score
        for blob_a, blob_b in zip(a[11:], b[11:], strict=True):  # probs, embedding
            assert np.allclose(np.frombuffer(blob_a, "<f4"), np.frombuffer(blob_b, "<f4"), atol=1e-5)
    assert one_rule["threshold"] == pytest.approx(many_rule["threshold"], abs=1e-6)
