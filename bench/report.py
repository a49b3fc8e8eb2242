"""The short table a benchmark result prints as."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench import scale

NAMES = {
    "worker": "worker",
    "scaling": "worker, {n} processes",
    "stock_faust": "stock Faust agent",
    "confluent_loop": "plain confluent loop",
    "passthrough": "broker pass-through",
    "broker_floor": "broker floor",
}
WIDTH = 24


def _failed(r: dict[str, Any]) -> str:
    return f"{r.get('status', 'missing')}: {r.get('reason', '').splitlines()[0] if r.get('reason') else ''}"


def _row(name: str, r: dict[str, Any], cells: Callable[[dict[str, Any]], list[str]]) -> str:
    if r.get("status") != "ok":
        return f"{name:<{WIDTH}}{_failed(r)}"
    return f"{name:<{WIDTH}}" + "".join(f"{c:>15}" for c in cells(r))


def _ratio(r: dict[str, Any], key: str) -> str:
    return f"{r[key]:.2f}x" if key in r else "-"


def sizes(by_use_case: dict[str, float]) -> str:
    """Bytes per event of each use case, as one text."""
    return ", ".join(f"{name} {size:,.0f}" for name, size in by_use_case.items())


def table(result: dict[str, Any]) -> str:
    m, o = result["machine"], result["options"]
    lines = [
        f"scoring benchmark: {o['events']:,} events (+{o.get('invalid_events', 0):,} invalid), "
        f"{m['nproc']} x {m['cpu_model']}, Python {m['python']}, {m['date']}",
        f"workers' fetch wait {o['fetch_wait_ms']} ms",
        "",
        f"{'throughput':<{WIDTH}}"
        + "".join(
            f"{h:>15}"
            for h in (
                "events/s",
                "vs stock Faust",
                "vs plain loop",
                "CPU us/event",
                "Redis us/ev",
                "peak RSS MB",
            )
        ),
    ]

    def throughput(r: dict[str, Any]) -> list[str]:
        return [
            f"{r['events_per_second']:,.0f}",
            _ratio(r, "vs_stock_faust"),
            _ratio(r, "vs_confluent_loop"),
            f"{r['cpu_us_per_event']:,.0f}",
            f"{r['redis_cpu_us_per_event']:,.0f}",
            f"{r['peak_rss_mb']:,.0f}",
        ]

    scaling = dict(result.get("scaling", {}))
    for name in ("worker", "scaling", "stock_faust", "confluent_loop", "passthrough"):
        r = scaling if name == "scaling" else result["throughput"].get(name, {})
        if name == "scaling" and "events_per_second" in r and "worker" in result["throughput"]:
            one = result["throughput"]["worker"]
            for key in ("vs_stock_faust", "vs_confluent_loop"):  # the same baselines as one process
                if key in one:
                    r[key] = one[key] * r["ratio_to_one"]
        label = NAMES[name].format(n=o["processes"])
        lines.append(_row(label, r, throughput))

    latency = result["latency"]
    lines += [
        "",
        f"{'latency':<{WIDTH}}"
        + "".join(f"{h:>15}" for h in ("p50 ms", "p99 ms", "p99 / floor", "samples", "sender late ms")),
    ]
    for rate in ("fixed", "half_max"):
        if rate not in latency:
            continue
        section = latency[rate]
        what = "half the worker's events/s" if rate == "half_max" else "asked for"
        lines.append(f"at {section['offered_rate']:,.0f} events/s ({what})")
        for name in ("worker", "stock_faust", "confluent_loop", "passthrough", "broker_floor"):
            lines.append(
                _row(
                    f"  {NAMES[name]}",
                    section.get(name, {}),
                    lambda r: [
                        *(f"{'>' if r['missing'] else ''}{r[p]:,.1f}" for p in ("p50_ms", "p99_ms")),
                        f"{r['p99_vs_floor']:.1f}x" if "p99_vs_floor" in r else "-",
                        f"{r['samples']:,}",
                        f"{r['sender_behind_ms']:,.0f}" if "sender_behind_ms" in r else "-",
                    ],
                )
            )
    lines.append(
        f"(offered load for {latency['seconds']:g} s, each event's label "
        f"{latency['label_delay_seconds'][0]:g}-{latency['label_delay_seconds'][1]:g} s after it; "
        "broker floor: plain produce -> consume round trip of small messages at the rate; "
        "broker pass-through: the same load, forwarded with no work; "
        "'>': some events had no prediction 30 s after the load, counted as that late; "
        "sender late: how far the bench's producer fell behind its schedule, the broker's queue full)"
    )

    labels = result["labels"].get("worker", {})
    lines += [
        "",
        f"{'labels':<{WIDTH}}" + "".join(f"{h:>15}" for h in ("joined/s", "learned/s")),
        _row(
            "worker",
            labels,
            lambda r: [f"{r['labels_joined_per_second']:,.0f}", f"{r['labels_learned_per_second']:,.0f}"],
        ),
    ]
    lines.append(
        _row(
            f"scaling, {o['processes']} processes",
            scaling,
            lambda r: [f"{r['events_per_second']:,.0f}", f"{r.get('ratio_to_one', 0):.2f}x one"],
        )
    )
    memory = result.get("memory", {})
    if memory.get("status") == "skipped":
        lines.append(f"{'memory':<{WIDTH}}skipped (--rss-events N)")
    else:
        lines.append(
            _row(
                "memory (worker RSS)",
                memory,
                lambda r: [
                    f"{r['rss_mb_at_checkpoint']:,.0f} MB after {r['checkpoint_events']:,}, "
                    f"{r['rss_mb_at_end']:,.0f} MB after {r['events']:,} ({r['growth']:+.1%}), "
                    f"its learner processes' {r['learner_rss_mb_at_end']:,.0f} MB included; "
                    f"Redis {r['redis_rss_mb_at_checkpoint']:,.0f} -> {r['redis_rss_mb_at_end']:,.0f} MB"
                ],
            )
        )
    lines.append(
        _row(
            "Redis, no broker",
            result.get("redis_state", {"status": "failed", "reason": "not run"}),
            lambda r: [
                f"{r['redis_cpu_us_per_event']:.1f} µs CPU per scored event, "
                f"{r['redis_cpu_us_per_label']:.1f} per joined label; bytes per event waiting for "
                f"its label: {sizes(r['bytes_per_waiting_event'])}, once learned: "
                f"{sizes(r['bytes_per_learned_event'])} ({r['events']:,} events, bench.state_cost)"
            ],
        )
    )
    if "cluster" in result:
        lines += scale.table(result["cluster"])
    return "\n".join(lines)
