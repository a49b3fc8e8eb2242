"""The API bench's floor: a do-nothing endpoint on the API's own stack (FastAPI on uvicorn).

``POST /v1/floor`` reads the body and answers a fixed prediction-sized JSON; it is served by
:func:`stream.api.app.serve`, as ``scoring api`` is, on ``SCORING_API_HOST:SCORING_API_PORT``.
Whatever the API costs beyond it is the scoring's. Run by :mod:`bench.api`.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response

from stream.api.app import JSON, serve
from stream.settings import Settings

ANSWER = (
    b'{"event_id":"e","model":"fraud","model_version":"fraud.1","scored_at":"2026-03-04T12:00:00Z",'
    b'"latency_ms":0.1,"entity":"acc-00001","score":0.01,"forecast":null}'
)


def floor_app() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/v1/floor")
    async def nothing(request: Request) -> Response:
        await request.body()
        return Response(ANSWER, media_type=JSON)

    @app.get("/readyz")
    async def ready() -> Response:
        return Response(b"{}", media_type=JSON)

    return app


if __name__ == "__main__":
    settings = Settings.from_env()
    serve(floor_app(), settings.api_host, settings.api_port, settings.log_level)
