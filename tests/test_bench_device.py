"""`tsd-edge bench --device`: compiled artifacts measured on a device over SSH, for real, through the asyncssh
server of tests/ssh_server.py (its "device" has numpy and onnxruntime but no tsd_edge: the runtime goes there as
tsd-runtime.pyz); and the device side's INA3221 power reader (tsd_edge.runtime.power) against sysfs trees written
into tmp_path, as JetPack 4 and JetPack 5/6 lay them out."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tsd
from test_device_ssh import Device, _files, device, workcopy  # noqa: F401 (the fixtures)
from tsd_edge.runtime import power as rb


@pytest.mark.network
def test_bench_measures_the_artifact_on_the_device(device: Device) -> None:  # noqa: F811
    d, w = device, device.workdir
    args = ["--repeats", "2", "--queries", "4", "--batches", "1", "--batch-size", "8", "--target", "cpu-x86"]
    ran = tsd("bench", d.task, "--workdir", w, *args, *d.options(), timeout=120)
    assert ran.code == 0, ran.out + ran.err
    assert d.server.commands[-1].endswith("python3 ../tsd-runtime.pyz bench request.json")
    assert _files(d.root) == []  # the device's bench folder is removed
    data = json.loads((w / "bench.json").read_text(encoding="utf-8"))
    by = {s["name"]: s for s in data["systems"]}
    assert list(by) == ["teacher", "student", "cpu-x86", "cpu-x86@127.0.0.1"], data["skipped"]
    assert data["skipped"] == []
    for name in ("teacher", "student", "cpu-x86"):
        assert by[name]["runtime"].endswith("on this host")
    s = by["cpu-x86@127.0.0.1"]
    assert s["runtime"].startswith("onnxruntime ") and s["runtime"].endswith("on 127.0.0.1 over SSH")
    assert 0 < s["latency_ms"]["p50"] <= s["latency_ms"]["p90"] <= s["latency_ms"]["p99"]
    assert s["latency_ms"]["n"] == 2 * 4 and s["throughput_qps"] > 0 and len(s["throughput_runs"]) == 2
    assert s["peak_rss_mib"] > 10 and s["peak_rss_mib"] >= s["rss_after_load_mib"] * 0.99
    assert s["energy"]["source"] == "estimated" and "no INA3221" in s["energy"]["method"]
    assert s["energy"]["joules_per_1k_b1"] > 0 and s["cost_per_1m_usd"]["total"] > 0
    assert s["agreement"] == by["cpu-x86"]["agreement"] and s["size_bytes"] == by["cpu-x86"]["size_bytes"]
    assert s["gflops"] > 0 and s["parameters"] == by["student"]["parameters"]
    settings = data["settings"]["device"]
    assert settings["url"] == d.url and settings["power"] is None and settings["machine"]["cores"] >= 1
    assert "not in the device's time" in settings["tokenization"]
    assert "cpu-x86@127.0.0.1" in ran.out and "estimated" in ran.out  # the table
    assert "latency_b1_vs_teacher" in data["ratios"]["cpu-x86@127.0.0.1"]


# -- the INA3221 reader ---------------------------------------------------------------------------


def _write(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text + "\n", encoding="utf-8")


def _orin(root: Path, vdd_in_ma: int = 1200) -> None:
    """JetPack 5/6 (Orin): the hwmon driver, bus voltage in mV and current in mA per channel."""
    _write(
        root / "ina3221" / "1-0040" / "hwmon" / "hwmon3",
        {
            "name": "ina3221",
            "in1_label": "VDD_IN",
            "in1_input": "5000",
            "curr1_input": str(vdd_in_ma),
            "in2_label": "VDD_CPU_GPU_CV",
            "in2_input": "4992",
            "curr2_input": "400",
            "in3_label": "VDD_SOC",
            "in3_input": "5000",
            "curr3_input": "300",
            "in4_input": "2400",  # shunt voltages (uV): no label, no current
            "in7_label": "sum of shunt voltages",  # no curr7: not a rail
            "in7_input": "7000",
        },
    )


def test_ina3221_rails_on_jetpack_5_and_6(tmp_path: Path) -> None:
    _orin(tmp_path)
    rails = rb.power_rails(str(tmp_path))
    assert [label for label, _ in rails] == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    watts = {label: rb.rail_watts(files) for label, files in rails}
    assert watts == pytest.approx({"VDD_IN": 6.0, "VDD_CPU_GPU_CV": 4.992 * 0.4, "VDD_SOC": 1.5})
    meter = rb.PowerMeter(rails)
    assert meter.rail == "VDD_IN" and meter.watts() == pytest.approx(6.0)  # the module's input, not the sum


def test_ina3221_rails_on_jetpack_4(tmp_path: Path) -> None:
    """JetPack 4 (Nano, TX2, Xavier): NVIDIA's ina3221x IIO driver, power in mW, or voltage x current."""
    _write(
        tmp_path / "ina3221x" / "6-0040" / "iio:device0",
        {
            "rail_name_0": "POM_5V_IN",
            "in_power0_input": "3120",
            "rail_name_1": "POM_5V_GPU",
            "in_voltage1_input": "5000",
            "in_current1_input": "100",
            "rail_name_2": "NC",
            "in_power2_input": "0",
        },
    )
    rails = rb.power_rails(str(tmp_path))
    assert [label for label, _ in rails] == ["POM_5V_IN", "POM_5V_GPU"]
    assert [rb.rail_watts(f) for _, f in rails] == pytest.approx([3.12, 0.5])
    assert rb.PowerMeter(rails).rail == "POM_5V_IN"
    assert rb.power_rails(str(tmp_path / "nothing-here")) == []


def test_energy_is_power_integrated_over_the_phase(tmp_path: Path) -> None:
    _orin(tmp_path)
    meter = rb.PowerMeter(rb.power_rails(str(tmp_path)), interval=0.005)
    meter.start()
    _samples_at(meter, 6.0)  # samples taken, not a time slept: a loaded machine delays the sampling thread
    joules = meter.stop()
    assert len(meter.samples) >= 5 and joules == pytest.approx(6.0 * meter.seconds)  # constant 6 W
    curr = tmp_path / "ina3221" / "1-0040" / "hwmon" / "hwmon3" / "curr1_input"
    meter.start()
    _samples_at(meter, 6.0)  # waits for samples, not for a time: a loaded machine delays the sampling thread
    switched = time.perf_counter()
    curr.write_text("2400\n", encoding="utf-8")  # 12 W from here on
    _samples_at(meter, 12.0)
    joules = meter.stop()
    span, after = meter.seconds, meter.begin + meter.seconds - switched
    # 6 W until the switch, 12 W after it; the samples on either side of the step bound where it is seen
    times = [t for t, _ in meter.samples]
    gap = min(t for t in times if t >= switched) - max(t for t in times if t <= switched)
    slack = 6.0 * gap + 1e-6
    assert 6.0 * span < joules < 12.0 * span
    assert joules == pytest.approx(6.0 * (span - after) + 12.0 * after, abs=slack)


def _samples_at(meter: rb.PowerMeter, watts: float, n: int = 5) -> None:
    """Until the meter has taken `n` samples at `watts` (at most 30 s)."""
    deadline = time.monotonic() + 30
    while sum(w == pytest.approx(watts) for _, w in list(meter.samples)) < n and time.monotonic() < deadline:
        time.sleep(meter.interval)


def test_the_device_bench_with_power_rails_reports_measured_energy(
    workcopy: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The device side's bench (the zipapp) run here on the cpu-x86 artifact with a fake INA3221 tree, its response
    turned into a System row by the host's code: energy "measured" from the rail, not estimated."""
    from tsd_edge.bench import remote
    from tsd_edge.device import SshDevice, protocol, zipapp
    from tsd_edge.device.remote import DeviceBench
    from tsd_edge.runtime.tokenizer import TextEncoder, length_batches

    _, w = workcopy
    _orin(tmp_path / "sys")
    job = tmp_path / "device" / "cpu-x86"
    job.mkdir(parents=True)
    encode = TextEncoder(w / "student" / "tokenizer.json", 64)
    texts = ["how do I top up my card", "why was my card declined", "exchange rates?", "I lost my phone"] * 2
    ids = encode.ids(texts)
    batch = [encode.pad([ids[i] for i in idx]) for idx in length_batches([len(r) for r in ids], 4)]
    plan = protocol.write_bench_inputs(
        tmp_path / "device" / protocol.BENCH_INPUTS, [([encode(texts[:1])] * 3, [batch])]
    )
    shutil.copy(w / "compiled" / "cpu-x86" / "model.onnx", job / "model.onnx")
    body = {**protocol.bench_request("onnxruntime", "model.onnx", 1, None, plan), "power_root": str(tmp_path / "sys")}
    (job / protocol.REQUEST).write_text(json.dumps(body), encoding="utf-8")
    pyz = zipapp.build(tmp_path / "cache")
    ran = subprocess.run([sys.executable, str(pyz), "bench", protocol.REQUEST], cwd=job, capture_output=True)
    assert ran.returncode == 0, ran.stderr
    response = protocol.read_response(job / protocol.RESPONSE, "here", protocol.BENCH_FIELDS, "the bench")
    assert response["power"] == {
        "source": "ina3221",
        "rail": "VDD_IN",
        "rails": ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"],
    }
    run = response["runs"][0]
    assert run["batch_queries"] == len(texts) and run["joules_batch"] == pytest.approx(6.0 * run["batch_s"], rel=0.5)

    url = SshDevice.parse("ssh://nvidia@orin.local")
    got = DeviceBench(url, {"hostname": "orin", "machine": "aarch64"}, {"cpu-x86@orin.local": response}, {})
    spec = {"name": "cpu-x86@orin.local", "precision": "int8", "source": "s", "size_bytes": 1, "report": "-"}
    rows, skipped = remote.rows(got, [spec], [[texts]], {}, None, threads=1, price_kwh=0.15, price_hour=0.1)
    assert skipped == [] and rows[0].energy["source"] == "measured" and "VDD_IN" in rows[0].energy["method"]
    assert rows[0].energy["joules_per_1k_b32"] == pytest.approx(1e3 * run["joules_batch"] / len(texts))
