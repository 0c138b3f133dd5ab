"""Working on a device over SSH: `compile --device`, `bench --device` and `gate --device ssh://user@host[:port]`.

    ssh.py           the transport (asyncssh, imported only when used): SshDevice, Connection
    probe.py         the device's facts against the profile: every mismatch, each with its fix
    protocol.py      the host's half of the protocol: request.json, inputs.npz, response.json
    zipapp.py        the device's half: tsd_edge.runtime as one file, tsd-runtime.pyz, uploaded with each request
    remote.py        the sessions: build (probe, check, host part, upload, build and run, fetch), bench, and
                     logits (the gate's re-run of a package's artifact on the device)

The compile stage moves what `build_on_device` fetched into `compiled/<target>/`; the check stage then
scores the logits computed on the device. The device side is tsd_edge.runtime.device: the same runtime that
runs the gate, `predict` and `serve` here. Python 3.8+.
"""

from __future__ import annotations

from .remote import DeviceBuild, build_on_device, logits_on_device
from .ssh import SshDevice

__all__ = ["DeviceBuild", "SshDevice", "build_on_device", "logits_on_device"]
