"""The benchmark runs end to end with a tiny N and reports every section: never a speed check."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from bench import apache_kafka, broker_load, services, state_cost
from bench import run as bench_run
from bench.scale import SHARDS, WORKERS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _positive(section: dict[str, Any], *keys: str) -> None:
    assert section["status"] == "ok", section
    for key in keys:
        assert section[key] > 0, (key, section)


@pytest.mark.timeout(300)
def test_bench_reports_every_section(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--events",
            "10000",  # throughput phases of a few batches: spans long enough to sample CPU and commands
            "--latency-rate",
            "500",
            "--latency-seconds",
            "1",
            "--processes",
            "2",
            "--rss-events",
            "2000",
            "--redis-cluster",
            "3",
            "--state-events",
            "2000",
            "--out",
            str(out),
            "--work-dir",
            str(tmp_path / "work"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=290,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = orjson.loads(out.read_bytes())

    assert result["machine"]["nproc"] > 0 and result["machine"]["cpu_model"]
    for name in ("worker", "stock_faust", "confluent_loop", "passthrough"):
        throughput = result["throughput"][name]
        _positive(throughput, "events_per_second", "vs_stock_faust", "cpu_us_per_event", "peak_rss_mb")
        assert throughput["predictions"] >= throughput["valid_events"] == 10000
        assert throughput["events"] > 10000  # the invalid ones too
    for rate in ("fixed", "half_max"):  # 500 events/s, and half the worker's events/s
        latency = result["latency"][rate]
        assert latency["offered_rate"] > 0
        _positive(latency["broker_floor"], "p50_ms", "p99_ms", "samples")
        _positive(latency["worker"], "p50_ms", "p99_ms", "samples", "p99_vs_floor")
        # Not offered a rate above their events/s:
        for baseline in ("stock_faust", "confluent_loop", "passthrough"):
            assert latency[baseline]["status"] in ("ok", "skipped"), latency[baseline]
    _positive(result["labels"]["worker"], "labels_joined_per_second")
    _positive(result["labels"]["worker"], "labels_learned_per_second")
    _positive(result["scaling"], "events_per_second", "ratio_to_one")
    assert result["scaling"]["processes"] == 2
    memory = result["memory"]  # the worker's and its learner process's
    _positive(memory, "rss_mb_at_checkpoint", "rss_mb_at_end", "learner_rss_mb_at_end")
    assert memory["learner_rss_mb_at_end"] < memory["rss_mb_at_end"]
    assert "worker" in done.stdout and "broker floor" in done.stdout  # the table

    state = result["redis_state"]  # bench.state_cost's one-Redis part
    _positive(state, "redis_cpu_us_per_event", "redis_cpu_us_per_label")
    assert state["events"] == 4000
    for use_case in ("fraud", "demand"):
        # A learned event's record keeps its prediction only; either is a fraction of the
        # 1.3-1.4 KB an event took before its record was packed (these few events weigh
        # the growth of Redis's tables more than 10,000 would: fraud about 400 bytes).
        waiting = state["bytes_per_waiting_event"][use_case]
        assert 0 < state["bytes_per_learned_event"][use_case] < waiting < 700
    assert "bytes per event waiting for its label: fraud" in done.stdout

    cluster = result["cluster"]
    assert cluster["status"] == "ok" and cluster["masters"] == 3
    assert [run["workers"] for run in cluster["runs"]] == [1, 2]
    for run in cluster["runs"]:
        _positive({"status": "ok", **run}, "events_per_second", "cpu_us_per_event", "redis_cpu_us_per_event")
        assert run["predictions"] >= 10000
        assert len(run["redis_cpu_us_per_event_per_shard"]) == len(run["commands_per_event_per_shard"]) == 3
        assert all(n > 0 for n in run["commands_per_event_per_shard"])  # every master has buckets
        assert run["balance"] >= 1.0
    rows = cluster["projection"]["rows"]
    assert {(r["workers"], r["shards"]) for r in rows} == {(w, s) for w in WORKERS for s in SHARDS}
    assert all(r["events_per_second"] > 0 and r["limit"] in ("workers", "redis", "broker") for r in rows)
    assert "cluster of 3 masters" in done.stdout and "projected events/s" in done.stdout


@pytest.mark.timeout(180)
def test_bench_api_reports_the_api_next_to_its_floor(tmp_path: Path) -> None:
    out = tmp_path / "api.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bench.api", "--rate", "100", "--seconds", "1"),
            *("--saturate-seconds", "1", "--connections", "4"),
            *("--out", str(out), "--work-dir", str(tmp_path / "work")),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = orjson.loads(out.read_bytes())
    for phase in ("latency", "throughput"):
        for server in ("api", "floor"):
            section = result[phase][server]
            assert section["errors"] == 0 and section["requests"] > 0, (phase, server, section)
            assert 0 < section["p50_ms"] <= section["p99_ms"]
        assert result[phase]["api"]["requests_per_second_vs_floor"] > 0
    assert result["latency"]["api"]["requests"] == 100
    assert "POST /v1/score/fraud" in done.stdout and "API / floor" in done.stdout


# Like test_prometheus.py's: where a program it needs is missing, the test is skipped and says why.
APACHE_KAFKA_UNAVAILABLE = apache_kafka.unavailable(services.CACHE)
needs_apache_kafka = pytest.mark.skipif(
    APACHE_KAFKA_UNAVAILABLE is not None, reason=str(APACHE_KAFKA_UNAVAILABLE)
)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("broker", ["tansu", pytest.param("apache-kafka", marks=needs_apache_kafka)])
def test_bench_broker_load_reports_each_sending(broker: str, tmp_path: Path) -> None:
    args = broker_load.parse_args(["--rate", "200", "--seconds", "1", "--keys", "10", "--broker", broker])
    results = broker_load.run(args, tmp_path)
    assert [r["sending"] for r in results] == [s.name for s in broker_load.SENDINGS]
    for r in results:
        assert r["forwarded"] == r["events"] == 200, r  # one forwarded record per event, none lost
        assert 0 < r["p50_ms"] <= r["p99_ms"] and r["broker_cpu_cores"] > 0, r
    assert "keyed, linger 50 ms" in broker_load.table(results, args)


@pytest.mark.timeout(180)
@needs_apache_kafka
def test_apache_kafka_serves_created_topics_and_stops_both_its_processes(tmp_path: Path) -> None:
    with apache_kafka.running_kafka(tmp_path, services.CACHE) as kafka:
        kafka.create_topics(["probe"])
        client = {"bootstrap.servers": kafka.bootstrap, **apache_kafka.CLIENT_OPTIONS}
        producer = Producer(client)
        producer.produce("probe", b"one", b"key")
        assert producer.flush(10) == 0
        member = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 500, "auto.offset.reset": "earliest"}
        consumer = Consumer({**client, **member, "group.id": "probe"})
        consumer.subscribe(["probe"])
        message = consumer.poll(15)
        consumer.close()
        assert message is not None and message.error() is None and message.value() == b"one"
        assert (
            len(AdminClient(client).list_topics("probe").topics["probe"].partitions)
            == apache_kafka.PARTITIONS
        )
        pids = kafka.pids
    assert len(pids) == 2 and not any(Path(f"/proc/{pid}").exists() for pid in pids)


@pytest.mark.timeout(180)
def test_state_cost_against_another_commit_runs_each_checkouts_own_bench_in_turn(
    capsys: pytest.CaptureFixture[str],
) -> None:
    worktrees = subprocess.run(["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True)
    runs = state_cost.compare("HEAD", pairs=1, events=100)
    assert set(runs) == {"this", "HEAD"}
    for run in (*runs["this"], *runs["HEAD"]):
        assert set(run) == {"one Redis", "3-master cluster"}
        assert all(cost > 0 for costs in run.values() for cost in costs), run
    printed = capsys.readouterr().out
    assert "pair 1, this first: one Redis" in printed
    assert "one Redis, per scored event:" in printed and "3-master cluster, per joined label:" in printed
    after = subprocess.run(["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True)
    assert after.stdout == worktrees.stdout  # the checkout of HEAD is gone


@pytest.mark.timeout(180)
def test_state_cost_counts_redis_instructions_of_each_checkout_alike_for_the_same_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    worktrees = subprocess.run(["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True)
    counts = state_cost.compare_instructions("HEAD", events=100)
    (ours_scored, ours_joined), (head_scored, head_joined) = counts["this"], counts["HEAD"]
    assert ours_scored > 0 and ours_joined > 0, counts
    # The same code: the same instructions within a few per cent (Redis's timer, its hash seeds,
    # Lua's garbage collector: 1-2 % apart in runs here).
    assert abs(ours_scored / head_scored - 1) < 0.1 and abs(ours_joined / head_joined - 1) < 0.1, counts
    printed = capsys.readouterr().out
    assert "per scored event: " in printed and "of HEAD's" in printed
    after = subprocess.run(["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True)
    assert after.stdout == worktrees.stdout  # the checkout of HEAD is gone


@pytest.mark.timeout(240)
@needs_apache_kafka
def test_bench_runs_the_worker_and_the_confluent_baselines_on_apache_kafka(tmp_path: Path) -> None:
    opts = bench_run.Options(  # enough events that the pass-through's span holds a few CPU ticks (10 ms)
        events=10_000, latency_rate=500, latency_seconds=1, half_max=False, processes=1, broker="apache-kafka"
    )
    result = bench_run.run(opts, tmp_path, out=io.StringIO())

    for name in ("worker", "confluent_loop", "passthrough"):  # their clients given SCORING_KAFKA_OPTIONS
        throughput = result["throughput"][name]
        _positive(throughput, "events_per_second", "cpu_us_per_event", "broker_cpu_us_per_event")
        assert throughput["predictions"] >= throughput["valid_events"] == 10_000
        latency = result["latency"]["fixed"][name]  # timed on arrival: Kafka 0.9 keeps no CreateTime
        _positive(latency, "p50_ms", "p99_ms", "samples", "broker_cpu_cores")
        assert latency["missing"] == 0
    _positive(result["latency"]["fixed"]["broker_floor"], "p50_ms", "p99_ms")
    _positive(result["labels"]["worker"], "labels_joined_per_second", "labels_learned_per_second")
    assert result["throughput"]["stock_faust"]["status"] == "skipped"
    assert "aiokafka" in result["latency"]["fixed"]["stock_faust"]["reason"]
