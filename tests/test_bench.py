"""`tsd-edge bench` on the end-to-end slice: the JSON's structure and sanity, not its timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Ran, tsd


@pytest.fixture(scope="module")
def benched(pipeline: tuple[Path, Path, Ran]) -> tuple[Path, Ran, dict]:
    task, workdir, ran = pipeline
    assert ran.code == 0, ran.err
    out = tsd("bench", task, "--workdir", workdir, "--repeats", "2", "--queries", "3", "--batches", "1",
              "--batch-size", "8", timeout=300)  # fmt: skip
    assert out.code == 0, out.err
    return workdir, out, json.loads((workdir / "bench.json").read_text(encoding="utf-8"))


def test_every_system_is_measured(benched: tuple[Path, Ran, dict]) -> None:
    workdir, out, data = benched
    compiled = sorted(p.parent.name for p in (workdir / "compiled").glob("*/artifact.json"))
    assert compiled, "the pipeline compiled nothing"
    names = [s["name"] for s in data["systems"]]
    assert names == ["teacher", "student", *compiled]
    assert data["skipped"] == []
    for name in names:
        assert name in out.out  # the table
    assert data["schema"] == "tsd-edge/bench/1"
    assert data["settings"]["threads"] == 1 and data["machine"]["cores"] >= 1


def test_figures_are_sane(benched: tuple[Path, Ran, dict]) -> None:
    _, _, data = benched
    for s in data["systems"]:
        lat = s["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"], s["name"]
        assert lat["n"] == 2 * 3
        assert s["throughput_qps"] > 0 and len(s["throughput_runs"]) == 2
        assert 10 < s["peak_rss_mib"] < 8000 and s["peak_rss_mib"] >= s["rss_after_load_mib"] * 0.99
        assert s["size_bytes"] > 0 and s["parameters"] > 0
        assert s["energy"]["source"] in ("estimated", "measured")
        assert s["energy"]["joules_per_1k_b1"] > 0 and s["energy"]["joules_per_1k_b32"] > 0
        assert s["cost_per_1m_usd"]["total"] == pytest.approx(
            s["cost_per_1m_usd"]["energy"] + s["cost_per_1m_usd"]["machine"]
        )
        assert s["gflops"] is None or s["gflops"] > 0
        if s["kind"] != "teacher":
            assert 0 <= s["agreement"] <= 1
    ratios = data["ratios"]
    assert set(ratios) == {s["name"] for s in data["systems"]} - {"teacher"}
    assert all(v > 0 for r in ratios.values() for v in r.values())


def test_energy_label_shows_where_it_is_estimated(benched: tuple[Path, Ran, dict]) -> None:
    _, out, data = benched
    sources = {s["energy"]["source"] for s in data["systems"]}
    assert sources <= {"measured", "estimated"} and sources, sources
    # the table's energy column says "(estimated)" exactly when some figure is an estimate
    assert ("J/1k q (estimated)" in out.out) == ("estimated" in sources), out.out
    for s in data["systems"]:  # each figure says how it was got
        assert ("RAPL" in s["energy"]["method"]) == (s["energy"]["source"] == "measured"), s["energy"]


def test_chart_has_one_point_per_system(benched: tuple[Path, Ran, dict]) -> None:
    workdir, _, data = benched
    svg = (workdir / "bench.svg").read_text(encoding="utf-8")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert svg.count("<circle") == len(data["systems"])


def test_flop_count_reads_the_student_graph(benched: tuple[Path, Ran, dict]) -> None:
    from tsd_edge.bench import onnx_flop_terms

    workdir, _, _ = benched
    per_token, per_seq, per_l2 = onnx_flop_terms(workdir / "onnx" / "model.onnx")
    assert per_token > 0 and per_seq > 0 and per_l2 > 0


def test_unknown_target_is_bad_input(pipeline: tuple[Path, Path, Ran]) -> None:
    task, workdir, _ = pipeline
    out = tsd("bench", task, "--workdir", workdir, "--target", "no-such-target", timeout=120)
    assert out.code == 2 and "error:" in out.err


def test_an_http_teacher_is_charged_per_token(tmp_path: Path) -> None:
    """Token counts stored with each answer (rejected ones too: they were paid for) price the teacher."""
    from tsd_edge.bench.measure import tokens_per_query
    from tsd_edge.store import Pair, PairStore

    def pair(text: str, status: str, tokens: tuple[int, int] | None) -> Pair:
        t_in, t_out = tokens or (None, None)
        label = "card_arrival" if status == "ok" else None
        return Pair(
            text, text, "in.txt", None, "train", status, label, None, None, None, True, None, None, 12.0, t_in, t_out
        )

    with PairStore(tmp_path / "pairs.sqlite") as store:
        store.register_teacher("t1", ["card_arrival"], {"kind": "openai"})
        store.add("t1", [pair("a", "ok", (100, 4)), pair("b", "rejected", (120, 30)), pair("c", "ok", (80, 2))])
        store.register_teacher("local", ["card_arrival"], {"kind": "embedding"})
        store.add("local", [pair("a", "ok", None)])
        tokens = tokens_per_query(store.pairs("t1", status=None))
        assert tokens == {"prompt": 100.0, "completion": 12.0, "answers": 3}
        assert tokens_per_query(store.pairs("local", status=None)) is None
