"""Energy on a Jetson from its INA3221 power monitors, for `bench --device` (measured on the device itself).

Standard library only. `power_rails(root)` finds the rails the kernel exposes, `PowerMeter` samples the
input rail (or the sum of all) through a phase on a thread and integrates the power over time.
"""

from __future__ import annotations

import glob
import os
import re
import threading
import time
from typing import Any, List, Tuple

POWER_ROOT = "/sys/bus/i2c/drivers"
# the module's (or board's) input rail, by the names the device trees give it; without one, every rail is summed
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0", "VIN")

Rail = Tuple[str, List[str]]


def _read_number(path: str) -> float:
    with open(path, encoding="ascii", errors="replace") as fh:
        return float(fh.read().strip())


def _read_label(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.read().strip()


def power_rails(root: str = POWER_ROOT) -> list[Rail]:
    """The INA3221 power monitors' rails under `root`: [(label, [power_mW_file] or [voltage_mV_file, current_mA_file])].

    JetPack 5 and 6 (L4T 34+, the kernel's hwmon driver `ina3221`): <root>/ina3221/<bus>-<addr>/hwmon/hwmon*/
    in<N>_label, in<N>_input (bus voltage, mV) and curr<N>_input (current, mA), N = 1..3; power = V x I.
    JetPack 4 (L4T 32, NVIDIA's IIO driver `ina3221x`): <root>/ina3221x/<bus>-<addr>/iio:device*/rail_name_<N>
    and in_power<N>_input (mW), or in_voltage<N>_input x in_current<N>_input. Unconnected channels
    ('NC') and files that cannot be read are left out."""
    rails: list[Rail] = []
    for folder in sorted(glob.glob(os.path.join(root, "ina3221*", "*", "hwmon", "hwmon*"))):
        for label_file in sorted(glob.glob(os.path.join(folder, "in*_label"))):
            n = re.match(r"in(\d+)_label$", os.path.basename(label_file))
            volt = os.path.join(folder, f"in{n.group(1)}_input") if n else ""
            curr = os.path.join(folder, f"curr{n.group(1)}_input") if n else ""
            if n and os.path.isfile(volt) and os.path.isfile(curr):
                rails.append((_read_label(label_file), [volt, curr]))
    for folder in sorted(glob.glob(os.path.join(root, "ina3221*", "*", "iio:device*"))):
        for name_file in sorted(glob.glob(os.path.join(folder, "rail_name_*"))):
            k = name_file.rsplit("_", 1)[1]
            power = os.path.join(folder, f"in_power{k}_input")
            volt = os.path.join(folder, f"in_voltage{k}_input")
            curr = os.path.join(folder, f"in_current{k}_input")
            if os.path.isfile(power):
                rails.append((_read_label(name_file), [power]))
            elif os.path.isfile(volt) and os.path.isfile(curr):
                rails.append((_read_label(name_file), [volt, curr]))
    readable = []
    for label, files in rails:
        try:
            for f in files:
                _read_number(f)
        except (OSError, ValueError):
            continue
        if label and label.upper() != "NC":
            readable.append((label, files))
    return readable


def rail_watts(files: list[str]) -> float:
    """One rail's power now, in watts: mW, or mV x mA."""
    if len(files) == 1:
        return _read_number(files[0]) / 1e3
    return _read_number(files[0]) * _read_number(files[1]) / 1e6


class PowerMeter:
    """Energy over a phase from the INA3221 rails: the power sampled every `interval` seconds by a thread
    (and at the phase's start and end), integrated over time (trapezoids). The input rail when the board has
    one (TOTAL_RAILS), else the sum of every rail."""

    def __init__(self, rails: list[Rail], interval: float = 0.01) -> None:
        total = [r for r in rails if r[0].upper() in TOTAL_RAILS]
        self.rails = total[:1] or rails
        self.rail = self.rails[0][0] if total else "+".join(r[0] for r in rails)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self.stop_event = threading.Event()
        self.thread: Any | None = None
        self.begin = self.seconds = 0.0

    def watts(self) -> float:
        return sum(rail_watts(files) for _, files in self.rails)

    def _sample(self) -> None:
        self.samples.append((time.perf_counter(), self.watts()))

    def _loop(self) -> None:
        while not self.stop_event.wait(self.interval):
            self._sample()

    def start(self) -> None:
        self.samples, self.stop_event = [], threading.Event()
        self.thread = threading.Thread(target=self._loop)
        self.thread.daemon = True
        self.thread.start()
        self.begin = time.perf_counter()  # last: the phase starts now
        self.samples.append((self.begin, self.watts()))

    def stop(self) -> float:
        """Joules from start() to now (samples outside that window, taken while the thread started or
        stopped, are left out)."""
        end = (time.perf_counter(), self.watts())  # first: the phase ended now
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join()
        self.seconds = end[0] - self.begin
        points = [*sorted(p for p in self.samples if self.begin <= p[0] <= end[0]), end]
        return sum(
            (points[i][0] - points[i - 1][0]) * (points[i][1] + points[i - 1][1]) / 2 for i in range(1, len(points))
        )
