"""The SSH transport to a device: one asyncssh connection, commands and SFTP transfers over it.

asyncssh is an optional extra (`pip install 'tsd-edge[device]'`) imported only when a device is
used. The key comes from ssh-agent and the default key files, or from `--identity`; the device's
host key must be known (~/.ssh/known_hosts, or the file given with `--known-hosts`): tsd-edge never
accepts an unknown host key by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from ..errors import InputError, RuntimeMissingError, TsdEdgeError


class DeviceExtraMissingError(RuntimeMissingError):
    """asyncssh is not installed (exit 4)."""

    def __init__(self) -> None:
        TsdEdgeError.__init__(self, "working on a device over SSH needs asyncssh: pip install 'tsd-edge[device]'")
        self.package = "asyncssh"


def import_asyncssh() -> ModuleType:
    try:
        import asyncssh
    except ImportError:
        raise DeviceExtraMissingError() from None
    return asyncssh


@dataclass(frozen=True)
class SshDevice:
    """Where to build: `ssh://[user@]host[:port]`, with an optional key file and known_hosts file."""

    host: str
    port: int = 22
    user: str | None = None
    identity: Path | None = None
    known_hosts: Path | None = None

    @classmethod
    def parse(cls, url: str, identity: Path | None = None, known_hosts: Path | None = None) -> SshDevice:
        parts = urlsplit(url)
        usage = f"--device {url!r}: expected ssh://user@host[:port]"
        if parts.scheme != "ssh" or not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise InputError(usage)
        if parts.password is not None:
            raise InputError(f"{usage} (no password in the address: use ssh-agent or --identity)")
        try:
            port = parts.port or 22
        except ValueError:
            raise InputError(f"{usage} (the port is not a number from 1 to 65535)") from None
        for option, path in (("--identity", identity), ("--known-hosts", known_hosts)):
            if path is not None and not path.is_file():
                raise InputError(f"{option} {path}: no such file")
        return cls(parts.hostname, port, parts.username, identity, known_hosts)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user + '@' if self.user else ''}{host}:{self.port}"


@dataclass
class Ran:
    code: int
    out: str
    err: str


class Connection:
    """`async with Connection(device) as ssh`: `run`, `put`, `get`, `rmtree`; errors become one InputError line."""

    def __init__(self, device: SshDevice, connect_timeout: float = 20) -> None:
        self.device = device
        self.timeout = connect_timeout
        self.asyncssh = import_asyncssh()
        self.conn: Any = None
        self.sftp: Any = None

    async def __aenter__(self) -> Connection:
        ssh, d = self.asyncssh, self.device
        options: dict[str, Any] = {"port": d.port, "connect_timeout": self.timeout}
        if d.user:
            options["username"] = d.user
        if d.identity is not None:
            options["client_keys"] = [str(d.identity)]
        if d.known_hosts is not None:
            options["known_hosts"] = str(d.known_hosts)
        try:
            self.conn = await ssh.connect(d.host, **options)
            self.sftp = await self.conn.start_sftp_client()
        except ssh.HostKeyNotVerifiable:
            raise InputError(
                f"{d.url}: the device's host key is not known: connect once with `ssh -p {d.port} "
                f"{d.user + '@' if d.user else ''}{d.host}` and accept it, or pass --known-hosts FILE"
            ) from None
        except ssh.PermissionDenied:
            raise InputError(
                f"{d.url}: the device refused the key: add yours to ssh-agent (ssh-add) or pass --identity PATH, "
                "and make sure its public key is in the device's ~/.ssh/authorized_keys"
            ) from None
        except ssh.KeyImportError as exc:
            raise InputError(
                f"--identity {d.identity}: cannot read the key ({exc}): a passphrase-protected key goes through "
                "ssh-agent (ssh-add it and drop --identity)"
            ) from None
        except (TimeoutError, ssh.Error, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise InputError(
                f"{d.url}: cannot connect ({reason}): check the address, that sshd runs there, and the network"
            ) from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.sftp is not None:
            self.sftp.exit()
        if self.conn is not None:
            self.conn.close()
            await self.conn.wait_closed()

    async def run(self, command: str, stdin: str | None = None) -> Ran:
        result = await self.conn.run(command, input=stdin, check=False)
        code = result.exit_status if result.exit_status is not None else 255
        return Ran(code, str(result.stdout or ""), str(result.stderr or ""))

    async def put(self, local: Path, remote: str) -> None:
        await self.sftp.put(str(local), remote)

    async def get(self, remote: str, local: Path) -> None:
        await self.sftp.get(remote, str(local))

    async def makedirs(self, remote: str) -> None:
        await self.sftp.makedirs(remote, exist_ok=True)

    async def rmtree(self, remote: str) -> None:
        await self.sftp.rmtree(remote, ignore_errors=True)
