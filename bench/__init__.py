"""The throughput, latency and memory benchmark of the scoring worker (``python -m bench``).

It starts its own broker and Redis, prefills simulated events, and measures the real worker
next to two baselines run on the same data in the same run: a stock per-event Faust agent
(:mod:`bench.stock_faust`) and a plain confluent-kafka consume -> score -> produce loop
(:mod:`bench.confluent_loop`); both do the same Redis-free work (:mod:`bench.baseline`).
:mod:`bench.run` runs the phases, :mod:`bench.report` prints the table. It never asserts
on speed: the machine decides the numbers, the ratios between them are the result.
"""
