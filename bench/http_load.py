"""HTTP load for the API bench: keep-alive HTTP/1.1 connections writing prepared requests.

A general client (httpx, aiohttp) spends a few hundred microseconds of CPU a request; on a
2-core machine that also runs the server, Redis and the broker, the client would cap the
throughput measured. This one writes prepared bytes and reads the status line, the headers
and a ``Content-Length`` body (the servers measured here answer no other way), a few tens of
microseconds a request.

Examples
--------
>>> post("/v1/score/fraud", b'{"a":1}').split(b"\\r\\n")[0]
b'POST /v1/score/fraud HTTP/1.1'
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

HOST = "127.0.0.1"


def post(path: str, body: bytes) -> bytes:
    """The bytes of a POST of a JSON ``body`` to ``path``."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    """One keep-alive connection: a request, then its answer, then the next."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection(HOST, port))

    async def exchange(self, request: bytes) -> int:
        """Send ``request``; the status of its answer, once read whole.

        Raises :class:`ConnectionResetError` when the server had closed the connection (an idle
        one, after its keep-alive timeout).
        """
        self._writer.write(request)
        line = await self._reader.readline()
        if not line:
            raise ConnectionResetError("the server closed the connection")
        status = int(line.split(b" ", 2)[1])
        length = 0
        while (header := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = header.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        await self._reader.readexactly(length)
        return status

    def close(self) -> None:
        self._writer.close()


@dataclass(frozen=True)
class Exchanges:
    """What a load got back: each request's latency (seconds) and status, and the time it took."""

    latencies: list[float]
    statuses: list[int]
    seconds: float


async def paced(port: int, requests: Sequence[bytes], rate: float) -> Exchanges:
    """Send ``requests[i]`` at ``i / rate`` seconds (an open loop, on as many connections as
    the answers need); each latency runs from when its request was due, so a server that
    falls behind is charged for the wait, not hidden by it."""
    loop = asyncio.get_running_loop()
    idle: list[Connection] = []
    latencies: list[float] = []
    statuses: list[int] = []

    async def one(request: bytes, due: float) -> None:
        connection = idle.pop() if idle else await Connection.open(port)
        try:
            status = await connection.exchange(request)
        except ConnectionResetError:  # idle too long: the server closed it
            connection = await Connection.open(port)
            status = await connection.exchange(request)
        statuses.append(status)
        latencies.append(loop.time() - due)
        idle.append(connection)

    began = loop.time()
    sending = []
    for i, request in enumerate(requests):
        due = began + i / rate
        if (wait := due - loop.time()) > 0:
            await asyncio.sleep(wait)
        sending.append(asyncio.ensure_future(one(request, due)))
    await asyncio.gather(*sending)
    seconds = loop.time() - began
    for connection in idle:
        connection.close()
    return Exchanges(latencies, statuses, seconds)


async def saturating(port: int, requests: Iterator[bytes], connections: int, seconds: float) -> Exchanges:
    """Keep ``connections`` requests in flight for ``seconds`` (a closed loop: each connection
    sends its next request as soon as its answer is read): the most the server answers."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    statuses: list[int] = []
    began = loop.time()
    end = began + seconds

    async def keep_busy() -> None:
        connection = await Connection.open(port)
        for request in itertools.takewhile(lambda _: loop.time() < end, requests):
            sent = loop.time()
            statuses.append(await connection.exchange(request))
            latencies.append(loop.time() - sent)
        connection.close()

    await asyncio.gather(*(keep_busy() for _ in range(connections)))
    return Exchanges(latencies, statuses, loop.time() - began)
