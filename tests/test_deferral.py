"""The hybrid system's calibrated deferral: the bound, SGR's guarantee, and deferral through package, predict
and gate on a real package."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import tsd
from tsd_edge.deferral import (
    Deferral,
    aurc,
    calibrate,
    calibration_half,
    confidences,
    recheck,
    risk_upper_bound,
    sgr,
)


def test_risk_upper_bound_is_clopper_pearson() -> None:
    # no errors in n: the bound solves (1 - p)^n = delta
    assert risk_upper_bound(0, 100, 0.05) == pytest.approx(1 - 0.05 ** (1 / 100), abs=1e-6)
    # k errors: P[X <= k | n, bound] = delta, checked against the binomial sum done directly
    k, n, delta = 7, 200, 0.05
    p = risk_upper_bound(k, n, delta)
    cdf = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))
    assert cdf == pytest.approx(delta, rel=1e-4)
    assert k / n < p < 0.1
    assert risk_upper_bound(5, 5, 0.05) == 1.0 and risk_upper_bound(0, 0, 0.05) == 1.0


def _draw(rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Confidence uniform on [0, 1]; agreement more likely the more confident: P = 0.75 + 0.25 sqrt(c)."""
    conf = rng.uniform(0, 1, m)
    return conf, (rng.uniform(0, 1, m) < 0.75 + 0.25 * np.sqrt(conf)).astype(np.float64)


def _true_answered_agreement(tau: float) -> float:
    c = np.linspace(tau, 1, 20001)
    return float(np.mean(0.75 + 0.25 * np.sqrt(c)))


def test_sgr_keeps_its_guarantee_over_repeated_draws() -> None:
    """With delta = 0.1, the true answered agreement at the chosen threshold falls under the target in at
    most about 10% of draws (here: 300 draws of 1,300 inputs, so the bound of 0.15 leaves room for chance)."""
    rng = np.random.default_rng(0)
    target, delta, misses, taus = 0.93, 0.1, 0, []
    for _ in range(300):
        tau, bound = sgr(*_draw(rng, 1300), target, delta)
        if tau is None:  # no threshold could be guaranteed on this draw: allowed, and counted below
            continue
        assert bound >= target
        taus.append(tau)
        misses += _true_answered_agreement(tau) < target
    assert misses / 300 <= 0.15
    # and it is not vacuous: a threshold is found on most draws, near the one that exactly meets the target
    # (0.24 here); the price of the guarantee is answering somewhat less
    assert len(taus) >= 270
    assert 0.2 < float(np.median(taus)) < 0.6


def test_sgr_says_so_when_no_threshold_holds() -> None:
    conf = np.linspace(0, 1, 500)
    agree = np.ones(500)
    agree[::5] = 0  # 80% everywhere: confidence carries no information
    tau, bound = sgr(conf, agree, 0.95, 0.05)
    assert tau is None and bound < 0.95
    assert sgr(np.array([]), np.array([]), 0.9, 0.05) == (None, 0.0)


def test_confidence_measures_and_the_choice_between_them() -> None:
    logits = np.array([[4.0, 3.9, -5.0], [1.0, 0.0, 0.0], [0.0, 0.0, 9.0]])
    prob, margin = confidences(logits, "probability"), confidences(logits, "margin")
    assert prob.argmax() == margin.argmax() == 2
    assert margin[0] < 0.05 < prob[0]  # two labels nearly tied: small margin, yet top probability ~0.52
    rng = np.random.default_rng(1)
    n = 2000
    logits = rng.normal(0, 3, (n, 5))
    texts = [f"query {i}" for i in range(n)]
    predicted = [str(i) for i in logits.argmax(1)]
    teacher = [p if m > 0.3 else "other" for p, m in zip(predicted, confidences(logits, "margin"), strict=True)]
    d = calibrate(logits, predicted, teacher, texts, target=0.95, confidence=0.9)
    # agreement here is decided by the margin, so the margin ranks disagreements better and is chosen
    assert d.measure == "margin" and d.aurc["margin"] < d.aurc["probability"]
    assert d.calibration["n"] + d.evaluation["n"] == n
    assert d.calibration["n"] == sum(calibration_half(t) for t in texts)  # the split is a function of the text
    assert d.threshold is not None and d.evaluation["answered_agreement"] >= 0.95
    assert recheck(d, logits, predicted, teacher, 0.05) is None
    worse = [t if i % 3 else "other" for i, t in enumerate(teacher)]  # a third of the answers now disagree
    assert "under the target" in str(recheck(d, logits, predicted, worse, 0.05))
    assert aurc(np.array([1.0, 0.0]), np.array([1.0, 0.0])) < aurc(np.array([0.0, 1.0]), np.array([1.0, 0.0]))


def test_package_predict_and_gate_carry_the_deferral_rule(hybrid_package: tuple[Path, Path], tmp_path: Path) -> None:
    from tsd_edge.runtime import load

    _, pkg = hybrid_package
    with load(pkg) as model:
        rule = model.manifest["deferral"]
        shipped = Deferral.from_dict(json.loads(model.package.file("deferral.json").read_text(encoding="utf-8")))
        assert rule["threshold"] == shipped.threshold is not None
        texts = ["I lost my card", "what is the weather on mars", "my card has not arrived yet"]
        preds = model.predict(texts)
    assert {p.source for p in preds} <= {"student", "deferred"}
    for p in preds:
        assert (p.source == "student") == (p.confidence is not None and p.confidence >= shipped.threshold)
    out = tsd("predict", pkg, *texts)
    assert out.code == 0, out.err
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert [r["source"] for r in rows] == [p.source for p in preds]
    gate = tsd("gate", pkg, "--json", tmp_path / "g.json", "--junit", tmp_path / "g.xml")
    assert gate.code == 0, gate.out
    checks = {c["name"]: c for c in json.loads((tmp_path / "g.json").read_text(encoding="utf-8"))[0]["checks"]}
    assert checks["deferral"]["passed"]
    against_itself = tsd("gate", pkg, "--baseline", pkg, "--json", tmp_path / "g.json", "--junit", tmp_path / "g.xml")
    assert against_itself.code == 0 and "coverage at answered agreement 0.8" in against_itself.out


def test_gate_fails_a_deferral_rule_that_does_not_hold(hybrid_package: tuple[Path, Path], tmp_path: Path) -> None:
    """The same artifact with a rule that promises more than it gives: answered agreement 0.999 at τ = 0."""
    from tsd_edge.runtime.package import read_package, write_package

    _, pkg = hybrid_package
    src = read_package(pkg, tmp_path / "src")
    files = {name: src.file(name).read_bytes() for name in src.manifest["files"]}
    rule = json.loads(files["deferral.json"])
    rule.update(threshold=0.0, target=0.999)
    files["deferral.json"] = json.dumps(rule).encode()
    manifest = {k: v for k, v in src.manifest.items() if k not in ("files", "schema", "created")}
    manifest["deferral"] = {**manifest["deferral"], "threshold": 0.0, "target": 0.999}
    bad = write_package(tmp_path / "bad.tsdpkg", files, manifest)
    gate = tsd("gate", bad, "--json", tmp_path / "g.json", "--junit", tmp_path / "g.xml")
    assert gate.code == 1
    assert "deferral" in gate.out and "under the target 0.999" in gate.out


def test_package_calibrates_on_the_logits_check_recorded(
    hybrid_package: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """check keeps the compiled artifact's held-out logits in the run folder, listed (with their SHA-256) in its
    record; package calibrates the deferral rule on them instead of running the artifact a second time."""
    import shutil

    import tsd_edge.runtime.backends as backends
    from tsd_edge.context import RunContext
    from tsd_edge.packaging import package
    from tsd_edge.runtime import load
    from tsd_edge.task import load_task

    task_file, pkg = hybrid_package
    run = tmp_path / "run"
    shutil.copytree(pkg.parent.parent, run)  # packaged again below: the session's package stays as it is
    record = json.loads((run / "records" / "check-cpu-x86.json").read_text(encoding="utf-8"))
    assert "reports/cpu-x86_logits.npy" in record["outputs"]
    recorded = np.load(run / "reports" / "cpu-x86_logits.npy")
    with load(pkg) as model:
        held = model.package.file("heldout.jsonl").read_text(encoding="utf-8").splitlines()
        np.testing.assert_allclose(model.logits([json.loads(x)["input"] for x in held if x]), recorded, atol=1e-4)
        shipped = json.loads(model.package.file("deferral.json").read_text(encoding="utf-8"))

    def ran_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("package ran the compiled artifact again instead of using check's logits")

    monkeypatch.setattr(backends, "open_runner", ran_again)
    result = package(RunContext.open(load_task(task_file), run), "cpu-x86")
    with load(Path(result.data["path"])) as again:
        rule = json.loads(again.package.file("deferral.json").read_text(encoding="utf-8"))
    assert (rule["threshold"], rule["evaluation"], rule["curve"]) == (
        shipped["threshold"],
        shipped["evaluation"],
        shipped["curve"],
    )
