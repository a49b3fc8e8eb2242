"""The ``scoring`` command line: local stack, worker, API, simulator, demo, topic tails."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from stream.settings import Settings, problems
from stream.tools.simulator import HISTORY_ROWS_PER_DAY, SimulationConfig
from stream.usecases import DEADLETTER_TOPIC, USE_CASES

if TYPE_CHECKING:
    from stream.records import AuditAction, AuditRecord
    from stream.runtime.registry import ModelRegistry


def _simulation_args(parser: argparse.ArgumentParser, *, transactions: int, sales: int, rate: float) -> None:
    parser.add_argument("--transactions", type=int, default=transactions, help="valid transaction events")
    parser.add_argument("--sales", type=int, default=sales, help="valid sale events")
    parser.add_argument("--rate", type=float, default=rate, help="events per second (0: as fast as possible)")
    parser.add_argument(
        "--malformed-rate", type=float, default=0.02, help="extra malformed payloads, as a fraction"
    )
    parser.add_argument(
        "--drift-at", type=float, default=None, help="fraction of the stream where the concepts change"
    )
    parser.add_argument(
        "--label-delay",
        type=float,
        nargs=2,
        default=(2.0, 6.0),
        metavar=("MIN", "MAX"),
        help="seconds between an event and its label (uniform; real chargebacks take days)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--start",
        type=_start,
        default=None,
        help="ISO-8601 time with its UTC offset (e.g. 2026-11-30T08:00:00Z) at which the stream ends: "
        "event times lie in the 3 days before it (default: now)",
    )


def _start(text: str) -> dt.datetime:
    try:
        start = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    if start.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset (add Z or +HH:MM)")
    if start > dt.datetime.now(dt.UTC):
        raise argparse.ArgumentTypeError(
            f"{text!r} is in the future: a worker refuses events from the future"
        )
    return start


def simulation_config(args: argparse.Namespace) -> SimulationConfig:
    """What the ``simulate``, ``demo`` and ``evaluate`` arguments ask to simulate."""
    return SimulationConfig(
        transactions=args.transactions,
        sales=args.sales,
        rate=args.rate,
        malformed_rate=args.malformed_rate,
        drift_at=args.drift_at,
        label_delay=tuple(args.label_delay),
        seed=args.seed,
    )


def _history_args(parser: argparse.ArgumentParser) -> None:
    history = parser.add_argument_group(
        "history files", "write labelled history files instead of sending to Kafka"
    )
    history.add_argument(
        "--history",
        type=Path,
        default=None,
        metavar="FILE",
        help="one file per use case, its name before the suffix (data/h.csv: data/h.fraud.csv, "
        "data/h.demand.csv); Parquet if FILE ends in .parquet, else CSV",
    )
    # None unless given, so that one given without --history is refused rather than ignored
    history.add_argument(
        "--days",
        type=int,
        default=None,
        help="days of history, ending where the live stream of the same --start, --seed and "
        "--sales begins (default 30)",
    )
    history.add_argument(
        "--rows-per-day",
        type=int,
        default=None,
        help=f"rows a day of each use case (default {HISTORY_ROWS_PER_DAY}; at most 2160 sales)",
    )
    history.add_argument(
        "--labels",
        choices=("all", "frauds-only"),
        default=None,
        help="frauds-only leaves is_fraud empty but for frauds, like a chargeback feed (default all)",
    )
    history.add_argument(
        "--sale-ids",
        action="store_true",
        help="write sales with event_id and ts (the raw export has neither)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scoring", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "up", help="start a local broker and Redis where the settings point (unless one answers)"
    )
    commands.add_parser("down", help="stop the local broker and Redis that `up` started")
    commands.add_parser("status", help="show whether the broker and Redis answer")
    commands.add_parser("worker", help="run a scoring worker")
    commands.add_parser(
        "api", help="serve the synchronous scoring API at SCORING_API_HOST:SCORING_API_PORT"
    ).add_argument("--openapi", action="store_true", help="print its OpenAPI document (JSON) and exit")
    simulate = commands.add_parser("simulate", help="produce simulated events and their delayed labels")
    _simulation_args(simulate, transactions=5000, sales=5000, rate=1000.0)
    _history_args(simulate)
    demo = commands.add_parser("demo", help="everything on an embedded broker and Redis, with a summary")
    _simulation_args(demo, transactions=6000, sales=6000, rate=300.0)
    demo.add_argument(
        "--history-days",
        type=int,
        default=None,
        help="days of simulated history both use cases learn first (default 30; 0: start untrained)",
    )
    evaluate = commands.add_parser(
        "evaluate", help="compare the candidate pipelines prequentially on simulated data"
    )
    _simulation_args(evaluate, transactions=20000, sales=20000, rate=0.0)
    calibrate = commands.add_parser(
        "calibrate", help="measure the drift monitor on simulated streams (minutes)"
    )
    calibrate.add_argument("--events", type=int, default=100_000, help="events per use case and stream")
    calibrate.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    calibrate.add_argument(
        "--rate", type=float, default=100.0, help="events per second of the synthetic clock"
    )
    calibrate.add_argument("--cache", type=Path, default=None, help="folder caching the scored rows")
    calibrate.add_argument(
        "--use-cases", nargs="+", default=[uc.name for uc in USE_CASES], choices=[uc.name for uc in USE_CASES]
    )
    use_case_names = [uc.name for uc in USE_CASES]
    bootstrap = commands.add_parser(
        "bootstrap", help="learn a use case from a labelled history file and publish it live (needs Redis)"
    )
    bootstrap.add_argument("use_case", choices=use_case_names)
    bootstrap.add_argument("file", type=Path, help="CSV, or Parquet (.parquet): README: History files")
    bootstrap.add_argument(
        "--force", action="store_true", help="start a new lineage over one that has learned labels"
    )
    backtest = commands.add_parser(
        "backtest", help="replay a labelled history offline and write a report (no broker, no Redis)"
    )
    backtest.add_argument("use_case", choices=use_case_names)
    backtest.add_argument("file", type=Path, help="CSV, or Parquet (.parquet): README: History files")
    backtest.add_argument(
        "--label-delay", type=float, default=0.0, help="seconds between an event and its label (default 0)"
    )
    backtest.add_argument(
        "--compare", type=Path, default=None, metavar="DECLARATION", help="a declaration file to run beside"
    )
    backtest.add_argument(
        "--out", type=Path, default=None, help="report folder (default: <file>.backtest next to the file)"
    )
    backtest.add_argument("--window", type=int, default=500, help="labels per window of the report's metrics")
    models = commands.add_parser("models", help="the model registry: versions, rollback, export")
    actions = models.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="kept versions, newest first (* = live)")
    listing.add_argument("--model", choices=[uc.name for uc in USE_CASES], help="one use case only")
    listing.add_argument("--limit", type=int, default=20)
    actions.add_parser(
        "show", help="the record of a version (of a model's name: its live version)"
    ).add_argument("version")
    card = actions.add_parser("card", help="a version's model card (of a model's name: its live version)")
    card.add_argument("version")
    card.add_argument("--format", choices=("md", "json"), default="md", help="Markdown (default) or JSON")
    rollback = actions.add_parser("rollback", help="make an earlier version live for every worker")
    rollback.add_argument("version")
    rollback.add_argument("--reason", default="", help="why, for the registry's history (and the cards)")
    export = actions.add_parser("export", help="write a version's signed snapshot and record to files")
    export.add_argument("version")
    export.add_argument("--out", type=Path, default=None, help="snapshot file (default: <version>.snapshot)")
    for name, topics in (
        ("predictions", [uc.prediction_topic for uc in USE_CASES]),
        ("deadletters", [DEADLETTER_TOPIC]),
    ):
        tail = commands.add_parser(name, help=f"tail the {name} topics").add_subparsers(
            dest="action", required=True
        )
        tail.add_parser("tail").set_defaults(topics=topics)
    erase = commands.add_parser(
        "erase",
        help="remove an entity's data from Redis: state, cached events, pending records, parked labels "
        "(README: Personal data)",
    )
    for field, named in _entity_fields().items():
        erase.add_argument(
            _entity_flag(field),
            dest=field,
            metavar=field.upper(),
            help=f"the {field} of the entity ({named})",
        )
    alerts = commands.add_parser("alerts", help="watch the drift alerts (alerts.drift)").add_subparsers(
        dest="action", required=True
    )
    alerts.add_parser(
        "tail", help="print every alert change from the topic's beginning, then follow (Ctrl-C stops)"
    ).add_argument(
        "--open", action="store_true", help="print only the alerts open now, once caught up, and exit"
    )
    return parser


def _entity_fields() -> dict[str, str]:
    """Each field naming an entity in a use case's contract -> the use cases it names entities of."""
    fields: dict[str, list[str]] = {}
    for uc in USE_CASES:
        for field in uc.entity_fields:
            fields.setdefault(field, []).append(uc.name)
    return {field: ", ".join(names) for field, names in fields.items()}


def _entity_flag(field: str) -> str:
    """The ``scoring erase`` option of an entity's field: ``account_id`` -> ``--account``."""
    return "--" + field.removesuffix("_id").replace("_", "-")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValidationError as refused:
        for line in problems(refused):
            print(f"scoring: invalid setting {line}", file=sys.stderr)
        return 2
    if args.command in ("up", "down", "status"):
        from stream.tools import localstack

        for status in getattr(localstack, args.command)(settings):
            print(status)
    elif args.command == "worker":
        from stream.runtime.app import run_worker

        run_worker(settings)
    elif args.command == "api":
        from stream.api.app import create_app, run_api

        if not args.openapi:
            return run_api(settings)
        print(json.dumps(create_app(settings).openapi(), indent=2))
    elif args.command == "simulate" and (args.history is not None or _history_options(args)):
        return _write_history(args)
    elif args.command == "simulate":
        from confluent_kafka import Producer

        from stream.kafka import ensure_topics, kafka_config
        from stream.tools import simulator
        from stream.usecases import all_topics

        ensure_topics(settings, all_topics())
        producer = Producer(kafka_config(settings, {"linger.ms": 5}))
        messages = simulator.generate(simulation_config(args), start=args.start)
        print(simulator.send(messages, producer, settings.topic))
    elif args.command == "demo":
        from stream.tools import demo

        days = demo.HISTORY_DAYS if args.history_days is None else args.history_days
        return demo.run(simulation_config(args), start=args.start, history_days=days)
    elif args.command == "bootstrap":
        return _bootstrap(settings, args)
    elif args.command == "backtest":
        return _backtest(settings, args)
    elif args.command == "models":
        return asyncio.run(_models(settings, args))
    elif args.command == "erase":
        return asyncio.run(_erase(settings, args))
    elif args.command == "evaluate":
        from stream.tools import evaluate

        print(evaluate.report(evaluate.evaluate(settings, simulation_config(args), start=args.start)))
    elif args.command == "calibrate":
        from stream.tools.calibrate import calibrate

        calibrate(settings, args.events, args.seeds, args.rate, args.cache, use_cases=args.use_cases)
    elif args.command == "alerts":
        from consumers.alerts import watch

        with contextlib.suppress(KeyboardInterrupt):
            watch(settings, open_only=args.open)
    else:
        from consumers.reader import tail

        with contextlib.suppress(KeyboardInterrupt):
            tail(settings, args.topics)
    return 0


def _bootstrap(settings: Settings, args: argparse.Namespace) -> int:
    from stream.tools.bootstrap import BootstrapRefused, bootstrap
    from stream.tools.history import HistoryError
    from stream.usecases import use_case

    chosen = use_case(args.use_case, settings.use_cases)
    try:
        outcome = asyncio.run(bootstrap(settings, chosen, args.file, force=args.force, actor=_operator()))
    except (OSError, HistoryError, BootstrapRefused) as refused:
        print(f"scoring bootstrap: {refused}", file=sys.stderr)
        return 1
    print("\n".join(outcome.lines))
    if outcome.audit is None:  # unchanged
        return 0
    return asyncio.run(_deliver_kept(settings, outcome.audit))


async def _erase(settings: Settings, args: argparse.Namespace) -> int:
    """Erase the entity the options name from every use case whose entities those fields name."""
    from stream.redis_client import redis_client
    from stream.runtime.erase import erase

    given = {field for field in _entity_fields() if getattr(args, field) is not None}
    chosen = [uc for uc in settings.use_cases if set(uc.entity_fields) == given]
    if not chosen:
        ways = " or ".join(
            " ".join(f"{_entity_flag(f)} {f.upper()}" for f in uc.entity_fields) + f" ({uc.name})"
            for uc in settings.use_cases
        )
        print(f"scoring erase: name one entity: {ways}", file=sys.stderr)
        return 2
    client = redis_client(settings)
    try:
        erased = [
            await erase(client, settings, uc, [getattr(args, f) for f in uc.entity_fields]) for uc in chosen
        ]
    finally:
        await client.aclose()
    status = 0
    for done in erased:
        print(f"{done.use_case}: {done.detail} (entity {done.target})")
        status |= _audit(settings, "erase", model=done.use_case, target=done.target, detail=done.detail)
    return status


def _operator() -> str:
    """Who runs this command: ``user@host``."""
    import getpass
    import socket

    return f"{getpass.getuser()}@{socket.gethostname()}"


async def _deliver_kept(
    settings: Settings, record: AuditRecord, registry: ModelRegistry | None = None
) -> int:
    """Deliver the audit ``record`` the registry kept with the action just done: 0, or 1 if the
    broker did not take it (it stays in Redis, and the model's learner delivers it)."""
    from confluent_kafka import KafkaException

    from stream.kafka import ProducerRecord, deliver
    from stream.redis_client import redis_client
    from stream.runtime.registry import ModelRegistry

    async def publish(records: Sequence[ProducerRecord]) -> None:
        await asyncio.to_thread(deliver, settings, records)

    client = None
    if registry is None:
        client = redis_client(settings)
        registry = ModelRegistry(client, settings)
    try:
        await registry.deliver_audit(record.model, publish, record)
    except KafkaException as exc:
        print(
            f"scoring: done, but its audit record could not be delivered ({exc}): Redis keeps it, "
            f"and the learner of {record.model} delivers it",
            file=sys.stderr,
        )
        return 1
    finally:
        if client is not None:
            await client.aclose()
    return 0


def _audit(settings: Settings, action: AuditAction, **what: Any) -> int:
    """Record an operator's action on ``audit`` (it is done already): 0, or 1 if it could not be."""
    from confluent_kafka import KafkaException

    from stream.kafka import deliver
    from stream.records import AuditRecord
    from stream.runtime.registry import audit_message

    record = AuditRecord.now(action, _operator(), **what)
    try:
        deliver(settings, [audit_message(settings, record)])
    except KafkaException as exc:
        print(f"scoring: done, but its audit record could not be delivered: {exc}", file=sys.stderr)
        print(record.to_json().decode(), file=sys.stderr)  # kept in the command's output instead
        return 1
    return 0


def _backtest(settings: Settings, args: argparse.Namespace) -> int:
    from stream.tools.backtest import backtest
    from stream.tools.history import HistoryError

    try:
        index, lines = backtest(
            settings,
            args.use_case,
            args.file,
            label_delay=args.label_delay,
            compare=args.compare,
            out=args.out or args.file.with_name(f"{args.file.name}.backtest"),
            window=args.window,
        )
    except ValidationError as refused:  # the --compare declaration
        for line in problems(refused):
            print(f"scoring backtest: --compare: {line}", file=sys.stderr)
        return 2
    except (OSError, HistoryError) as refused:
        print(f"scoring backtest: {refused}", file=sys.stderr)
        return 1
    print("\n".join([*lines, f"report: {index}"]))
    return 0


def _history_options(args: argparse.Namespace) -> list[str]:
    """The history options given."""
    given = [args.days is not None, args.rows_per_day is not None, args.labels is not None, args.sale_ids]
    names = ["--days", "--rows-per-day", "--labels", "--sale-ids"]
    return [name for name, on in zip(names, given, strict=True) if on]


def _write_history(args: argparse.Namespace) -> int:
    from stream.tools.simulator import write_history

    if args.history is None:
        print(f"scoring simulate: {', '.join(_history_options(args))} needs --history FILE", file=sys.stderr)
        return 2
    start = args.start or dt.datetime.now(dt.UTC)
    try:
        files = write_history(
            args.history,
            simulation_config(args),
            start=start,
            days=30 if args.days is None else args.days,
            rows_per_day=HISTORY_ROWS_PER_DAY if args.rows_per_day is None else args.rows_per_day,
            labels=args.labels or "all",
            sale_ids=args.sale_ids,
        )
    except ValueError as refused:
        print(f"scoring simulate: {refused}", file=sys.stderr)
        return 2
    print(f"history before the live stream of --start {start.isoformat()} --seed {args.seed}:")
    for written in files:
        problems = ", ".join(f"{kind} {n}" for kind, n in written.problems.items())
        print(f"{written.path}: {written.rows} rows ({problems})")
    return 0


async def _models(settings: Settings, args: argparse.Namespace) -> int:

    from stream.cards import markdown, version_card
    from stream.records import AuditRecord
    from stream.redis_client import redis_client
    from stream.runtime.registry import ModelRegistry, RegistryError, use_case_of

    client = redis_client(settings)
    registry = ModelRegistry(client, settings)
    try:
        if args.action == "list":
            for name in [args.model] if args.model else [uc.name for uc in USE_CASES]:
                live = await registry.live(name)
                print(f"{name}: live {live or '(none published yet)'}")
                canary = await registry.canary_of(name)
                if canary is not None:
                    print(f"  canary {canary}")
                for entry in await registry.history(name, 3):
                    if entry["action"] == "canary":
                        print(f"  canary {entry['version']} {entry['outcome']}: {entry['reason']}")
                    else:
                        print(
                            f"  rolled back to {entry['version']} from {entry['previous']} by {entry['by']}"
                        )
                for record in await registry.versions(name, args.limit):
                    print("  " + _version_line(record, record["version"] == live))
        elif args.action in ("show", "card"):
            version = args.version
            if version in {uc.name for uc in settings.use_cases}:  # a model's name: its live version
                version = await registry.live(version)
                if version is None:
                    raise RegistryError(f"{args.version}: no version published yet")
            record = await registry.record(version)
            if args.action == "show":
                live = await registry.live(record["model"])
                print(json.dumps({**record, "live": record["version"] == live}, indent=2))
            else:
                model_card = await version_card(registry, record, settings.use_cases)
                print(
                    json.dumps(model_card, indent=2) if args.format == "json" else markdown(model_card),
                    end="",
                )
        elif args.action == "rollback":
            model, operator = use_case_of(args.version), _operator()
            audit = AuditRecord.now(
                "rollback", operator, model=model, target=args.version, detail=args.reason
            )
            previous = await registry.rollback(args.version, by=operator, reason=args.reason, audit=audit)
            print(
                f"{args.version} is live (was {previous}); workers score with it within "
                f"{settings.model_poll_seconds:g} s, and the learner goes on learning from it"
            )
            return await _deliver_kept(settings, audit, registry)
        else:
            blob = await registry.snapshot(args.version)
            await registry.load(args.version)  # export only what a worker would accept
            out: Path = args.out or Path(f"{args.version}.snapshot")
            out.write_bytes(blob)
            record_path = out.with_suffix(".json")
            record_path.write_text(json.dumps(await registry.record(args.version), indent=2) + "\n")
            print(f"{out} ({len(blob)} bytes, sha256 {hashlib.sha256(blob).hexdigest()[:16]}), {record_path}")
    except RegistryError as exc:
        print(f"scoring models {args.action}: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.aclose()
    return 0


def _version_line(record: dict[str, Any], live: bool) -> str:
    created = dt.datetime.fromtimestamp(record["created_at"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    scores = " ".join(f"{k}={v:.4g}" for k, v in sorted(record["metrics"].items()))
    return (
        f"{'*' if live else ' '} {record['version']:<14} {created}  {record['reason']:<9} "
        f"{record['pipeline']:<26} labels={record['labels_learned']:<8} {scores}  "
        f"parent={record['parent'] or '-'}"
    )


if __name__ == "__main__":
    sys.exit(main())
