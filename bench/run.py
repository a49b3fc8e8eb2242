"""The benchmark's phases, on a fresh broker and Redis, each variant in a namespace of its own.

For each variant (the real worker, the stock Faust agent, the plain confluent loop, and the
broker's pass-through, the plain loop doing no work: :mod:`bench.confluent_loop`):

1. **throughput**: prefill the N events (valid and invalid, generated once), start the
   variant, wait until it has published one prediction per valid event. Events/s is all
   input messages over the span from the first to the last prediction's CreateTime (the
   time the scorer produced it); CPU per event is the variant's processes' user + system
   time over that span, a worker's learner processes included (interpolated from samples
   every ~50 ms); peak RSS is VmHWM, its learner processes' added.
2. **labels** (worker only): the labels of the N events are produced while the worker
   runs; labels joined/s is counted from the worker's ``scoring_labels_total{outcome=joined}``,
   labels learned/s from its learners' ``scoring_learner_labels_learned``. Before the
   latency phase: a load the worker fell behind on would still be in its way.
3. **latency**: the running variant gets an offered load for ``latency_seconds`` at each
   rate: ``latency_rate`` and, with ``half_max``, half the worker's events/s measured in
   phase 1. Fresh events (distinct ids) come at the rate, and their labels too, each
   ``LABEL_DELAY`` seconds after its event, as in production: the worker joins and learns
   them while it scores (the baselines read no labels, the pass-through reads them; the
   broker carries them all the same). Latency is each event's send time to its
   prediction's CreateTime (the predictions are read while the load is sent: on a broker
   that keeps no CreateTime, Kafka 0.9, the time each is read). A baseline whose events/s
   in phase 1 is below a rate is not offered it (it could only fall behind).

The broker is the local stack's Tansu, or Apache Kafka 0.9.0.1 (``Options.broker``,
:mod:`bench.services`), where the stock Faust agent cannot run (:data:`UNSUPPORTED`). The
broker's own floor (plain produce -> consume round trip at the same rate, one fresh
unkeyed topic) is measured at each rate (the second once the worker's events/s is known);
the pass-through's latency is the broker's floor under the phase's whole load. Then the
worker with several processes on the same N events, and optionally the worker's memory
after 100k events and after many more. A variant that fails or times out is reported as
failed with the reason; its processes are stopped in every case.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import gc
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from subprocess import Popen
from typing import Any, TextIO

import orjson

from bench import measure, services, traffic
from bench.services import Services
from bench.traffic import Paced, PredictionReader
from stream.settings import Settings
from stream.tools import localstack, simulator
from stream.tools.demo import scrape
from stream.usecases import USE_CASES, all_topics

COMMANDS = {
    "worker": ["-m", "stream.tools.cli", "worker"],
    "stock_faust": ["-m", "bench.stock_faust"],
    "confluent_loop": ["-m", "bench.confluent_loop"],
    "passthrough": ["-m", "bench.confluent_loop", "--passthrough"],
}
START = dt.datetime(2026, 3, 4, 12, tzinfo=dt.UTC)
"""Where the simulated streams end: every run measures the same events, whatever the hour."""
LABEL_DELAY = (1.0, 3.0)
"""Seconds from an event to its label in the latency phase (uniform): labels flow at the event rate."""
UNSUPPORTED = {
    ("apache-kafka", "stock_faust"): "Faust's client, aiokafka, cannot connect to Kafka 0.9 "
    "(it asks each broker its ApiVersions, which came with 0.10)"
}
"""Variants that cannot run on a broker, and why."""
MIN_RATE = 500.0
"""Events (or labels) per second below which a phase is called stuck: its timeout is N / MIN_RATE + 60 s."""

Result = dict[str, Any]


@dataclass(frozen=True)
class Options:
    events: int = 200_000
    latency_rate: float = 2000.0
    latency_seconds: float = 60.0
    half_max: bool = True
    processes: int = 2
    rss_events: int = 0
    state_events: int = 10_000
    fetch_wait_ms: int = Settings.defaults().fetch_max_wait_ms
    broker: str = "tansu"  # or "apache-kafka": bench.services
    malformed_rate: float = 0.03
    seed: int = 1


class Failed(Exception):
    """A phase did not complete: reported with this reason, and the run goes on."""


def _timeout(n: int) -> float:
    return 60.0 + n / MIN_RATE


@dataclass(frozen=True)
class Dataset:
    events: list[simulator.Message]  # valid and invalid, in stream order
    labels: list[simulator.Message]
    valid: int


def dataset(opts: Options, n: int, seed: int) -> Dataset:
    config = simulator.SimulationConfig(
        transactions=n // 2,
        sales=n - n // 2,
        rate=0,
        malformed_rate=opts.malformed_rate,
        label_delay=(0.0, 0.0),
        seed=seed,
    )
    messages = list(simulator.generate(config, start=START))
    labels = [m for m in messages if m.kind == "label"]
    events = [m for m in messages if m.kind != "label"]
    return Dataset(events, labels, valid=len(labels))


@dataclass(frozen=True)
class Load:
    """An offered load: events (ids unlike the prefilled ones) at ``rate`` events/s, and their labels."""

    name: str  # "fixed" (the rate asked for) or "half_max" (half the worker's maximum)
    rate: float
    messages: list[Paced]


LOAD_SEEDS = {"fixed": 1, "half_max": 3}
"""Added to the run's seed for each load: ids unlike the prefilled events', each other's and the
memory phase's (+2). An event of one load must not be taken for one of another load."""


def offered_load(opts: Options, name: str, rate: float) -> Load:
    """Events at ``rate`` events/s for ``latency_seconds``, each label ``LABEL_DELAY`` after its event."""
    valid = max(2, round(rate * opts.latency_seconds / (1 + opts.malformed_rate)))
    config = simulator.SimulationConfig(
        transactions=valid // 2,
        sales=valid - valid // 2,
        rate=rate,
        malformed_rate=opts.malformed_rate,
        label_delay=LABEL_DELAY,
        seed=opts.seed + LOAD_SEEDS[name],
    )
    messages = [
        Paced(m.topic, m.key, m.value, m.at, orjson.loads(m.value)["event_id"] if m.kind == "event" else None)
        for m in simulator.generate(config, start=START)
    ]
    return Load(name, rate, messages)


@dataclass(frozen=True)
class Proc:
    process: Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Bench:
    opts: Options
    services: Services
    work: Path
    out: TextIO
    began: float = dataclasses.field(default_factory=time.monotonic)

    def settings(self, namespace: str) -> Settings:
        return Settings.defaults().replace(
            kafka_bootstrap=self.services.broker.bootstrap,
            kafka_options=self.services.broker.kafka_options,
            redis_url=self.services.redis_url,
            namespace=namespace,
            session_timeout_seconds=2.0,
            heartbeat_interval_seconds=0.5,
            metrics_port=localstack.free_port(),
            log_level="WARNING",
            state_dir=str(self.work),
            max_event_age_seconds=0,  # the streams end at START, in the past
            fetch_max_wait_ms=self.opts.fetch_wait_ms,
        )

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.began:6.1f} s] {text}", file=self.out, flush=True)

    def create_topics(self, settings: Settings, names: Sequence[str]) -> None:
        """Create the logical topics ``names`` of ``settings``' namespace."""
        self.services.broker.create_topics([settings.topic(name) for name in names])

    @contextlib.contextmanager
    def processes(self, variant: str, settings: Sequence[Settings]) -> Iterator[list[Proc]]:
        """One process of ``variant`` per settings, started together, all stopped afterwards."""
        with contextlib.ExitStack() as stack:
            started = []
            for i, s in enumerate(settings):
                env = s.child_environment()
                log = self.work / f"{s.namespace}-{i}.log"
                command = [sys.executable, *COMMANDS[variant]]
                started.append(Proc(stack.enter_context(measure.child(command, env, log, self.work)), log))
            yield started


def _alive_or_fail(processes: Sequence[Proc]) -> None:
    for proc in processes:
        if proc.process.poll() is not None:
            tail = measure.log_tail(proc.log)
            last = tail.rpartition("\n")[2]
            raise Failed(f"process exited with code {proc.process.returncode}: {last}\n{tail}")


def throughput(
    bench: Bench,
    processes: Sequence[Proc],
    reader: PredictionReader,
    data: Dataset,
) -> Result:
    """Wait for one prediction per valid event; events/s, CPU/event and peak RSS over that span."""
    pids = [p.pid for p in processes]

    def sample() -> tuple[float, float, float, float]:
        return (
            time.time(),
            sum(_cpu_seconds(pid) for pid in pids),
            measure.cpu_seconds(bench.services.redis_pid),
            bench.services.broker.cpu_seconds(),
        )

    samples = [sample()]
    timeout = _timeout(len(data.events))
    deadline = time.monotonic() + timeout
    while reader.count < data.valid:
        _alive_or_fail(processes)
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:.0f} s with {reader.count} of {data.valid} predictions")
        reader.poll()
        samples.append(sample())
    time.sleep(0.1)  # a sample after the last prediction, for the interpolation
    samples.append(sample())
    span = max(reader.last - reader.first, 1e-3)
    n = len(data.events)

    def cpu_us(column: int) -> float:
        series = [(s[0], s[column]) for s in samples]
        used = measure.interpolate(series, reader.last) - measure.interpolate(series, reader.first)
        return used / n * 1e6

    return {
        "status": "ok",
        "events": n,
        "valid_events": data.valid,
        "predictions": reader.count,
        "seconds": round(span, 3),
        "events_per_second": n / span,
        "cpu_us_per_event": cpu_us(1),
        "redis_cpu_us_per_event": cpu_us(2),
        "broker_cpu_us_per_event": cpu_us(3),
        "peak_rss_mb": sum(measure.tree_mb(pid, "VmHWM") for pid in pids),
    }


def _cpu_seconds(pid: int) -> float:
    """CPU seconds of a variant's process and its children (a worker's learner processes)."""
    return measure.cpu_seconds(pid) + sum(measure.cpu_seconds(child) for child in measure.children(pid))


def latency_stats(latencies: Sequence[float], expected: int) -> Result:
    if not latencies:
        raise Failed(f"no event of {expected} came back")
    ms = [x * 1000.0 for x in latencies]
    return {
        "status": "ok",
        "samples": len(ms),
        "missing": expected - len(ms),
        "p50_ms": measure.percentile(ms, 50),
        "p99_ms": measure.percentile(ms, 99),
        "max_ms": max(ms),
    }


def latency(
    bench: Bench,
    processes: Sequence[Proc],
    settings: Settings,
    reader: PredictionReader,
    load: Load,
) -> Result:
    """Offer ``load`` at its pace; each event's send time to its prediction's CreateTime.

    Predictions are awaited 30 s after the last event is sent; those that have not come by then
    (``missing``) count as that late: the percentiles are then lower bounds. ``sender_behind_ms``
    is how far the bench's own producer fell behind the schedule (its queue full): the broker
    did not take the load as fast as it was offered.

    Also the cores used meanwhile by the variant's process, its children (a worker's learner
    processes), Redis and the broker.
    """
    reader.reset(track_events=True)
    main = processes[0].pid

    def cpu() -> dict[str, float]:
        seconds = {
            "cpu_cores": measure.cpu_seconds(main),
            "redis_cpu_cores": measure.cpu_seconds(bench.services.redis_pid),
            "broker_cpu_cores": bench.services.broker.cpu_seconds(),
        }
        seconds["children_cpu_cores"] = _cpu_seconds(main) - seconds["cpu_cores"]
        return {"time": time.monotonic(), **seconds}

    sending = threading.Event()
    sending.set()

    def read() -> None:  # while the load is sent, for the predictions timed on arrival (no CreateTime)
        while sending.is_set():
            reader.poll()

    reading = threading.Thread(target=read, name="prediction-reader")
    before = cpu()
    reading.start()
    try:
        sent = traffic.send_paced(settings, load.messages)
    finally:
        sending.clear()
        reading.join()
    after = cpu()
    deadline = time.monotonic() + 30.0
    while len(reader.by_event) < len(sent.at) and time.monotonic() < deadline:
        _alive_or_fail(processes)
        reader.poll()
    got, given_up = reader.by_event, time.time()
    out = latency_stats([got.get(e, given_up) - t for e, t in sent.at.items()], len(sent.at))
    out["missing"] = sum(1 for e in sent.at if e not in got)
    out["samples"] = len(sent.at) - out["missing"]
    out["sender_behind_ms"] = sent.behind_seconds * 1000.0
    span = after["time"] - before["time"]
    out.update({name: (after[name] - before[name]) / span for name in after if name != "time"})
    return out


def latencies(
    bench: Bench,
    name: str,
    processes: Sequence[Proc],
    settings: Settings,
    reader: PredictionReader,
    loads: Sequence[Load],
    result: Result,
) -> None:
    """The latency phase of variant ``name`` at each load's rate (those it can sustain), into ``result``."""
    measured = result["throughput"][name]["events_per_second"]
    for load in loads:
        section = result["latency"][load.name]
        if load.rate > measured:
            section[name] = {
                "status": "skipped",
                "reason": f"offered {load.rate:,.0f} events/s, above its {measured:,.0f} events/s",
            }
            continue
        section[name] = out = latency(bench, processes, settings, reader, load)
        bench.say(f"{name}: at {load.rate:,.0f} events/s p50 {out['p50_ms']:.1f}, p99 {out['p99_ms']:.1f} ms")


def _joined(samples: dict[str, float]) -> float:
    return sum(
        v for k, v in samples.items() if k.startswith("scoring_labels_total") and "outcome=joined" in k
    )


def _learned(samples: dict[str, float]) -> float:
    return sum(v for k, v in samples.items() if k.startswith("scoring_learner_labels_learned"))


def _predicted(port: int) -> float:
    return sum(v for k, v in scrape(port).items() if k.startswith("scoring_predictions_total"))


def labels(bench: Bench, processes: Sequence[Proc], settings: Settings, data: Dataset) -> Result:
    """Produce every label while the worker runs: labels joined/s, and learned/s by its learners.

    Each rate is all labels over the span from the last moment none was joined (learned)
    yet to the moment all were.
    """
    counters = {"joined": _joined, "learned": _learned}
    first = scrape(settings.metrics_port)
    base = {what: count(first) for what, count in counters.items()}
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            traffic.prefill(settings, data.labels)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    n = len(data.labels)
    producer = threading.Thread(target=produce, name="labels")
    producer.start()
    try:
        timeout = _timeout(n)
        began = time.monotonic()
        started = dict.fromkeys(base, began)  # last moment nothing was counted yet
        ended: dict[str, float] = {}
        while len(ended) < len(base):
            now = time.monotonic()
            samples = scrape(settings.metrics_port)
            counts = {
                "joined": _joined(samples) - base["joined"],
                "learned": _learned(samples) - base["learned"],
            }
            for what, count in counts.items():
                if count <= 0:
                    started[what] = now
                elif count >= n:
                    ended.setdefault(what, now)
            _alive_or_fail(processes)
            if errors:
                raise Failed(f"producing the labels failed: {errors[0]}")
            if now - began > timeout:
                raise Failed(f"timed out after {timeout:.0f} s with {counts} of {n} labels")
            time.sleep(0.05)
    finally:
        producer.join()
    joined, learned = (max(ended[w] - started[w], 1e-3) for w in ("joined", "learned"))
    return {
        "status": "ok",
        "labels": n,
        "seconds_joined": round(joined, 3),
        "seconds_learned": round(learned, 3),
        "labels_joined_per_second": n / joined,
        "labels_learned_per_second": n / learned,
    }


def prefilled(bench: Bench, namespace: str, data: Dataset) -> Settings:
    """The settings of a fresh ``namespace`` whose topics hold ``data``'s events, for a variant to score."""
    settings = bench.settings(namespace)
    bench.create_topics(settings, all_topics())
    traffic.prefill(settings, data.events)
    bench.say(f"{namespace}: {len(data.events):,} events prefilled, starting")
    return settings


def prediction_reader(settings: Settings) -> PredictionReader:
    """A reader of the prediction topics of ``settings``' namespace."""
    topics = [settings.topic(uc.prediction_topic) for uc in USE_CASES]
    return PredictionReader(settings, topics)


def variant(bench: Bench, name: str, data: Dataset, loads: list[Load], result: Result) -> None:
    """Throughput, latency (and labels for the worker) of one variant, into ``result``.

    The worker's events/s sets the rate of the ``half_max`` load, added to ``loads`` here.
    """
    try:
        settings = prefilled(bench, name, data)
        reader = prediction_reader(settings)
        try:
            with bench.processes(name, [settings]) as processes:
                result["throughput"][name] = throughput(bench, processes, reader, data)
                measured = result["throughput"][name]["events_per_second"]
                bench.say(f"{name}: {measured:,.0f} events/s")
                if name == "worker" and bench.opts.half_max:
                    bench.say(f"generating the offered load at {measured / 2:,.0f} events/s")
                    loads.append(offered_load(bench.opts, "half_max", measured / 2))
                    result["latency"]["half_max"] = {"offered_rate": measured / 2}
                if name == "worker":
                    result["labels"][name] = labels(bench, processes, settings, data)
                    rates = result["labels"][name]
                    bench.say(
                        f"{name}: {rates['labels_joined_per_second']:,.0f} labels joined/s, "
                        f"{rates['labels_learned_per_second']:,.0f} learned/s"
                    )
                latencies(bench, name, processes, settings, reader, loads, result)
        finally:
            reader.close()
    except Exception as exc:
        bench.say(f"{name}: failed: {exc}")
        for section in [result["throughput"], *(result["latency"][load.name] for load in loads)]:
            section.setdefault(name, failed(exc))
        if name == "worker":
            result["labels"].setdefault(name, failed(exc))


def skipped(bench: Bench, name: str, reason: str, loads: Sequence[Load], result: Result) -> None:
    bench.say(f"{name}: skipped: {reason}")
    for section in [result["throughput"], *(result["latency"][load.name] for load in loads)]:
        section[name] = {"status": "skipped", "reason": reason}


def failed(exc: BaseException) -> Result:
    reason = str(exc) if isinstance(exc, Failed) else f"{type(exc).__name__}: {exc}"
    return {"status": "failed", "reason": reason}


def guarded(bench: Bench, name: str, phase: Callable[[], Result]) -> Result:
    try:
        return phase()
    except Exception as exc:
        bench.say(f"{name}: failed: {exc}")
        return failed(exc)


def floor(bench: Bench, load: Load) -> Result:
    settings = bench.settings(f"floor-{load.name}")
    bench.create_topics(settings, ["roundtrip"])
    n = round(load.rate * bench.opts.latency_seconds)
    round_trips = traffic.broker_floor(
        settings, settings.topic("roundtrip"), load.rate, bench.opts.latency_seconds
    )
    stats = latency_stats(round_trips, n)
    bench.say(
        f"broker floor at {load.rate:,.0f}/s: p50 {stats['p50_ms']:.1f} ms, p99 {stats['p99_ms']:.1f} ms"
    )
    return stats


def scaling(bench: Bench, data: Dataset) -> Result:
    """The worker in ``processes`` processes (one consumer group) on the same events."""
    first = prefilled(bench, "scaling", data)
    settings = [first, *(bench.settings("scaling") for _ in range(bench.opts.processes - 1))]
    reader = prediction_reader(first)
    try:
        with bench.processes("worker", settings) as processes:
            out = throughput(bench, processes, reader, data)
            out["processes"] = len(processes)
            out["predictions_per_process"] = [_predicted(s.metrics_port) for s in settings]
    finally:
        reader.close()
    bench.say(f"worker x{len(settings)}: {out['events_per_second']:,.0f} events/s")
    return out


def memory(bench: Bench) -> Result:
    """The VmRSS of the worker and its learner processes together when ``min(100k, N/10)`` and
    when all of N prefilled events are predicted (``learner_rss_mb_at_*``: the learner
    processes' part), and Redis's.

    Also every ``min(100k, N/10)`` events in between (``rss_mb_by_events``): a plateau or a slope.
    """
    n = bench.opts.rss_events
    checkpoint = min(100_000, max(1, n // 10))
    settings = bench.settings("memory")
    bench.create_topics(settings, all_topics())
    config = simulator.SimulationConfig(
        transactions=n // 2,
        sales=n - n // 2,
        rate=0,
        malformed_rate=bench.opts.malformed_rate,
        label_delay=(0.0, 0.0),
        seed=bench.opts.seed + 2,
    )
    events = (m for m in simulator.generate(config, start=START) if m.kind != "label")
    bench.say(f"memory: prefilling {n:,} events")
    traffic.prefill(settings, events)
    redis_pid = bench.services.redis_pid
    out: Result = {"status": "ok", "events": n, "checkpoint_events": checkpoint}
    timeout = _timeout(n)
    series: list[list[float]] = []  # [predicted, VmRSS MB of the worker and its learner processes]
    out["rss_mb_by_events"] = series
    with bench.processes("worker", [settings]) as processes:
        pid = processes[0].pid

        def record(at: str) -> None:
            learner = measure.children_mb(pid, "VmRSS")
            out[f"rss_mb_at_{at}"] = measure.status_mb(pid, "VmRSS") + learner
            out[f"learner_rss_mb_at_{at}"] = learner
            out[f"redis_rss_mb_at_{at}"] = measure.status_mb(redis_pid, "VmRSS")

        deadline = time.monotonic() + timeout
        while (predicted := _predicted(settings.metrics_port)) < n:
            _alive_or_fail(processes)
            if time.monotonic() > deadline:
                raise Failed(f"timed out after {timeout:.0f} s with {predicted:.0f} of {n} predictions")
            if predicted >= checkpoint * (len(series) + 1):  # the trend, every checkpoint events
                series.append([predicted, measure.tree_mb(pid, "VmRSS")])
            if predicted >= checkpoint and "rss_mb_at_checkpoint" not in out:
                record("checkpoint")
            time.sleep(0.2)
        record("end")
        out["peak_rss_mb"] = measure.tree_mb(pid, "VmHWM")
    # A worker that predicted all N before the first look: the end is the checkpoint too.
    for name in ("rss_mb", "learner_rss_mb", "redis_rss_mb"):
        out.setdefault(f"{name}_at_checkpoint", out[f"{name}_at_end"])
    out["growth"] = out["rss_mb_at_end"] / out["rss_mb_at_checkpoint"] - 1.0
    bench.say(
        f"memory: worker and its learner processes RSS {out['rss_mb_at_checkpoint']:.0f} MB after "
        f"{checkpoint:,}, {out['rss_mb_at_end']:.0f} MB after {n:,}"
    )
    return out


def add_ratios(result: Result) -> None:
    """Each throughput next to the baselines', several processes next to one, each p99 next to
    the broker floor's at the same rate."""
    for section in result["latency"].values():
        if not isinstance(section, dict) or section.get("broker_floor", {}).get("status") != "ok":
            continue
        floor_p99 = section["broker_floor"]["p99_ms"]
        for name in COMMANDS:
            if section.get(name, {}).get("status") == "ok":
                section[name]["p99_vs_floor"] = section[name]["p99_ms"] / floor_p99
    rates = {
        name: r["events_per_second"] for name, r in result["throughput"].items() if r.get("status") == "ok"
    }
    for r in result["throughput"].values():
        if r.get("status") == "ok":
            for baseline in ("stock_faust", "confluent_loop"):
                if baseline in rates:
                    r[f"vs_{baseline}"] = r["events_per_second"] / rates[baseline]
    scaled = result.get("scaling", {})
    if scaled.get("status") == "ok" and "worker" in rates:
        scaled["ratio_to_one"] = scaled["events_per_second"] / rates["worker"]


Phase = Callable[[Bench, Dataset], Result]
"""A further phase, on the run's stack and events: its result goes in the result under its name."""


def run(
    opts: Options, work: Path, out: TextIO = sys.stderr, phases: Sequence[tuple[str, Phase]] = ()
) -> Result:
    """Every phase, then ``phases``; the result as JSON-ready data."""
    result: Result = {
        "machine": measure.machine(),
        "options": dataclasses.asdict(opts),
        "throughput": {},
        "latency": {
            "seconds": opts.latency_seconds,
            "label_delay_seconds": list(LABEL_DELAY),
            "fixed": {"offered_rate": opts.latency_rate},
        },
        "labels": {},
    }
    began = time.monotonic()
    print(
        f"generating {opts.events:,} events, and {opts.latency_rate * opts.latency_seconds:,.0f} more",
        file=out,
    )
    data = dataset(opts, opts.events, opts.seed)
    loads = [offered_load(opts, "fixed", opts.latency_rate)]
    gc.freeze()  # the data lives until the end: no collector pauses scanning it mid-measurement
    result["options"]["invalid_events"] = len(data.events) - data.valid
    with services.running(opts.broker, work) as running:
        bench = Bench(opts, running, work, out, began)
        result["latency"]["fixed"]["broker_floor"] = guarded(
            bench, "broker floor", lambda: floor(bench, loads[0])
        )
        for name in COMMANDS:
            if (opts.broker, name) in UNSUPPORTED:
                skipped(bench, name, UNSUPPORTED[opts.broker, name], loads, result)
                continue
            variant(bench, name, data, loads, result)
            if name == "worker" and len(loads) > 1:  # the rate of the second load is known now
                gc.freeze()
                result["latency"]["half_max"]["broker_floor"] = guarded(
                    bench, "broker floor", partial(floor, bench, loads[1])
                )
        result["scaling"] = guarded(bench, "scaling", lambda: scaling(bench, data))
        if opts.rss_events > 0:
            result["memory"] = guarded(bench, "memory", lambda: memory(bench))
        else:
            result["memory"] = {"status": "skipped", "reason": "run with --rss-events N"}
        for name, phase in phases:
            result[name] = guarded(bench, name, functools.partial(phase, bench, data))
    add_ratios(result)
    return result
