"""Real TLS for the secure-connection tests: certificates made by the ``openssl`` CLI, servers on loopback.

- :func:`certificates`: a CA, and the server certificate (127.0.0.1 and localhost) and the
  client certificate it signs, in a folder of the test's.
- :func:`server_process`: a server started on a free loopback port, stopped afterwards.
- :func:`tls_front`: TLS (with client certificates required) in front of a plaintext
  service, so that clients speak real TLS to a broker that has none (Tansu 0.6.0 cannot
  listen with TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0
_CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Certificates:
    """PEM files: the CA, a server's certificate and key, a client's certificate and key."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_context(self) -> ssl.SSLContext:
        """A server's TLS context that requires a client certificate signed by the CA."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca))
        context.load_cert_chain(self.server_cert, self.server_key)
        context.verify_mode = ssl.CERT_REQUIRED
        return context


def certificates(folder: Path) -> Certificates:
    """Make a CA and the server (127.0.0.1, localhost) and client certificates it signs, valid 2 days."""
    folder.mkdir(parents=True, exist_ok=True)
    openssl = shutil.which("openssl")
    assert openssl, "the openssl command makes the tests' certificates"

    def run(*args: str | Path) -> None:
        subprocess.run([openssl, *map(str, args)], cwd=folder, check=True, capture_output=True)

    ca, ca_key = folder / "ca.crt", folder / "ca.key"
    run(
        "req",
        "-x509",
        *_CURVE,
        "-keyout",
        ca_key,
        "-out",
        ca,
        "-days",
        "2",
        "-subj",
        "/CN=scoring test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    signed = {}
    for name, usage, names in (
        ("server", "serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"),
        ("client", "clientAuth", ""),
    ):
        extensions = folder / f"{name}.ext"
        extensions.write_text(
            f"{names}basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"
            "authorityKeyIdentifier=keyid,issuer\n"
        )
        key, request, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.crt"
        run("req", *_CURVE, "-keyout", key, "-out", request, "-subj", f"/CN=scoring test {name}")
        run(
            "x509",
            "-req",
            "-in",
            request,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-out",
            cert,
            "-days",
            "2",
            "-extfile",
            extensions,
        )
        signed[name] = (cert, key)
    return Certificates(ca, *signed["server"], *signed["client"])


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{process.args!r} did not listen on {port}:\n{log.read_text()}") from None
            time.sleep(0.05)


@contextlib.contextmanager
def server_process(command: Sequence[str | Path], port: int, log: Path) -> Iterator[None]:
    """Run ``command`` until the ``with`` block ends, once it listens on 127.0.0.1:``port``."""
    with log.open("wb") as out:
        process = subprocess.Popen(list(map(str, command)), stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, process, log)
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def tls_front(port: int, target_port: int, context: ssl.SSLContext) -> Iterator[None]:
    """Accept TLS on 127.0.0.1:``port`` and relay each connection, decrypted, to ``target_port``."""
    loop = asyncio.new_event_loop()
    relay = functools.partial(_relay, target_port)
    server = loop.run_until_complete(asyncio.start_server(relay, "127.0.0.1", port, ssl=context))
    thread = threading.Thread(target=loop.run_forever, name="tls-front", daemon=True)
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.run_until_complete(_cancel_relays())
        loop.close()


async def _cancel_relays() -> None:
    relays = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in relays:
        task.cancel()
    await asyncio.gather(*relays, return_exceptions=True)


async def _relay(target_port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
    except OSError:
        writer.close()
        return
    await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass  # the other side went away: close this one too
    finally:
        writer.close()
