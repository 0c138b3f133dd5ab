"""Building on the device over SSH (`tsd-edge compile --target T --device ssh://user@host[:port]`).

    ssh.py           the transport (asyncssh, imported only when used): SshDevice, Connection
    probe.py         the device's facts against the profile: every mismatch, each with its fix
    protocol.py      the host's half of the protocol: request.json, inputs.npz, response.json
    remote.py        the sessions: build (probe, check, host part, upload, build and run, fetch) and bench
    remote_build.py  the device's half: one file run with python3 (stdlib + numpy + the runtime)

The compile stage moves what `build_on_device` fetched into `compiled/<target>/`; the check stage then
scores the logits computed on the device.
"""

from __future__ import annotations

from .remote import DeviceBuild, build_on_device
from .ssh import SshDevice

__all__ = ["DeviceBuild", "SshDevice", "build_on_device"]
