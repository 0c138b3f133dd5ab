"""A real SSH server on 127.0.0.1 for tests: asyncssh's server in a background thread.

Keys are generated into a folder (host key, client key, known_hosts, authorized key). Every command
a client runs is a real `bash -c` subprocess in the device folder with the given environment, its
stdin/stdout/stderr wired to the channel and its exit status sent back; SFTP is rooted (chrooted)
in the same folder, which plays the login's home directory.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

USER = "edge"


@dataclass
class Keys:
    identity: Path  # the client's private key (OpenSSH format, mode 600)
    known_hosts: Path  # the server's host key for [127.0.0.1]:port
    host_key: Any
    client_public: Any


def make_keys(folder: Path) -> Keys:
    folder.mkdir(parents=True, exist_ok=True)
    host = asyncssh.generate_private_key("ssh-ed25519")
    client = asyncssh.generate_private_key("ssh-ed25519")
    identity = folder / "id_ed25519"
    identity.write_bytes(client.export_private_key())
    identity.chmod(0o600)
    return Keys(identity, folder / "known_hosts", host, client.convert_to_public())


class SshServer:
    """`with SshServer(root, keys, env) as server:` listens on 127.0.0.1:server.port until the block ends."""

    def __init__(self, root: Path, keys: Keys, env: Mapping[str, str] | None = None) -> None:
        self.root, self.keys = root, keys
        self.env = {**os.environ, "HOME": str(root), **(env or {})}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: Any = None
        self.port = 0
        self.commands: list[str] = []

    def __enter__(self) -> SshServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(timeout=30)
        self.port = self.server.sockets[0].getsockname()[1]
        line = f"[127.0.0.1]:{self.port} {self.keys.host_key.export_public_key().decode().strip()}\n"
        self.keys.known_hosts.write_text(line, encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()

    @property
    def url(self) -> str:
        return f"ssh://{USER}@127.0.0.1:{self.port}"

    async def _listen(self) -> Any:
        authorized = asyncssh.import_authorized_keys(self.keys.client_public.export_public_key().decode())
        return await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[self.keys.host_key],
            authorized_client_keys=authorized,
            process_factory=self._process,
            sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(self.root).encode()),
            encoding=None,  # bytes through the channel, as a real sshd passes them
            allow_scp=False,
        )

    async def _process(self, process: asyncssh.SSHServerProcess) -> None:
        command = process.command or "bash -l"
        self.commands.append(command)
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            command,
            cwd=self.root,
            env=self.env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdin and proc.stdout and proc.stderr
        to_command = proc.stdin

        async def feed() -> None:
            try:
                while data := await process.stdin.read(1 << 16):
                    to_command.write(data)
                    await to_command.drain()
                to_command.close()
            except (BrokenPipeError, ConnectionResetError):  # the command exited without reading all of it
                pass

        async def pump(source: asyncio.StreamReader, target: Any) -> None:
            while data := await source.read(1 << 16):
                target.write(data)
                await target.drain()

        stdin = asyncio.ensure_future(feed())
        await asyncio.gather(pump(proc.stdout, process.stdout), pump(proc.stderr, process.stderr))
        status = await proc.wait()
        stdin.cancel()
        process.exit(status)
