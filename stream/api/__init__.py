"""``scoring api``: the synchronous scoring API, over HTTP.

It scores one event per request with the worker's own steps (:class:`stream.runtime.scoring.Scorer`:
validation, the entity state's Lua call, the live model version followed through the
registry), so a prediction is the one the stream would have made; and it shares the
stream's idempotency: one prediction per event id, whichever path scored it first.

- :mod:`stream.api.service`: what the API does (:class:`~stream.api.service.ScoringApi`),
  answers as status and body, no HTTP framework;
- :mod:`stream.api.access`: who may call it, and where it may listen;
- :mod:`stream.api.metrics`: its Prometheus metrics;
- :mod:`stream.api.app`: the FastAPI routes wired to the service, and the server (wiring only).

Nothing here imports :mod:`stream.tools`, and :mod:`stream.runtime` never imports this.
"""
