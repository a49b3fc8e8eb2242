"""The ``scoring`` command line: local stack, worker, simulator, demo, topic tails."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence

from stream.settings import Settings
from stream.simulator import SimulationConfig


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


def _simulation_config(args: argparse.Namespace) -> SimulationConfig:
    return SimulationConfig(
        transactions=args.transactions,
        sales=args.sales,
        rate=args.rate,
        malformed_rate=args.malformed_rate,
        drift_at=args.drift_at,
        label_delay=tuple(args.label_delay),
        seed=args.seed,
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
    simulate = commands.add_parser("simulate", help="produce simulated events and their delayed labels")
    _simulation_args(simulate, transactions=5000, sales=5000, rate=1000.0)
    demo = commands.add_parser("demo", help="everything on an embedded broker and Redis, with a summary")
    _simulation_args(demo, transactions=6000, sales=6000, rate=2000.0)
    evaluate = commands.add_parser(
        "evaluate", help="compare the candidate pipelines prequentially on simulated data"
    )
    _simulation_args(evaluate, transactions=20000, sales=20000, rate=0.0)
    for name, topics in (
        ("predictions", ["predictions.fraud", "predictions.demand"]),
        ("deadletters", ["deadletter"]),
    ):
        tail = commands.add_parser(name, help=f"tail the {name} topics").add_subparsers(
            dest="action", required=True
        )
        tail.add_parser("tail").set_defaults(topics=topics)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    if args.command in ("up", "down", "status"):
        from stream import localstack

        for status in getattr(localstack, args.command)(settings):
            print(status)
    elif args.command == "worker":
        from stream.app import run_worker

        run_worker(settings)
    elif args.command == "simulate":
        from confluent_kafka import Producer

        from stream import simulator
        from stream.topics import ensure_topics
        from stream.usecases import all_topics

        ensure_topics(settings, all_topics())
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
        stats = simulator.send(simulator.generate(_simulation_config(args)), producer, settings.topic)
        print(stats)
    elif args.command == "demo":
        from stream import demo

        return demo.run(_simulation_config(args))
    elif args.command == "evaluate":
        from stream import evaluate

        print(evaluate.report(evaluate.evaluate(settings, _simulation_config(args))))
    else:
        from consumers.reader import tail

        with contextlib.suppress(KeyboardInterrupt):
            tail(settings, args.topics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
