"""The FastAPI app of ``scoring api`` and its server: routes wired to the service. Logic lives elsewhere.

    POST /v1/score/<use case>                  the event record -> its Prediction record
    DELETE /v1/entities/<use case>/<ids>       erase an entity's data: one path segment per id
                                               (fraud: {account_id}; demand: {store_id}/{product_id})
    GET  /v1/models                            live and served version of each use case
    GET  /v1/models/{model}/versions/{version} a version's registry record and model card
    GET  /healthz                              the process is up
    GET  /readyz                               Redis, the broker and a model version per use case
    GET  /metrics                              Prometheus
    GET  /openapi.json                         this API's OpenAPI document (docs/openapi.json)

A scoring route reads the body's bytes and lets :func:`stream.records.parse` decide, as the
worker does, so FastAPI never validates a body (nor answers its own 422): every invalid
event gets the dead-letter reason code a worker would give it. With ``SCORING_API_TOKEN`` set,
every route but ``/healthz`` and ``/readyz`` asks for it as a bearer token.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stream import logs
from stream.api.access import listen_refusal, token_matches
from stream.api.service import Answer, ScoringApi, refusal
from stream.records import Prediction, Rejection
from stream.runtime import collector
from stream.runtime.retry import reason
from stream.settings import Settings

log = logging.getLogger(__name__)

JSON = "application/json"
_BEARER = HTTPBearer(auto_error=False, description="SCORING_API_TOKEN, when it is set.")
_REFUSAL = {"model": Rejection}
_SCORE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": Prediction, "description": "The event's prediction: the same for the same event id."},
    401: {**_REFUSAL, "description": "No or another bearer token (SCORING_API_TOKEN is set)."},
    409: {
        **_REFUSAL,
        "description": "The event id is being scored from a topic (`in_flight`: repeat the request), or "
        "was scored for another entity (`duplicate_event`).",
    },
    422: {**_REFUSAL, "description": "Not a valid event: `reason` is the dead-letter reason code."},
    503: {
        **_REFUSAL,
        "description": "Not ready (`not_ready`: no model version loaded), or Redis does not answer "
        "(`unavailable`).",
    },
}

_ERASE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Erased (again: nothing more removed): `keys_removed`, `events`, `journal_entries`, "
        "`parked_labels`, `entity` (its keyed hash with SCORING_PII_KEY), `audit_record` (its id)."
    },
    401: _SCORE_RESPONSES[401],
    503: {
        **_REFUSAL,
        "description": "Redis does not answer (`unavailable`), or the erase is done but its audit record "
        "was not delivered (`audit_unavailable`, with the `record`).",
    },
}


class Refused(Exception):
    """Raised where a route cannot return: answered with its :class:`Answer`."""

    def __init__(self, answer: Answer, headers: dict[str, str] | None = None) -> None:
        super().__init__(answer.status)
        self.answer, self.headers = answer, headers


def create_app(settings: Settings) -> FastAPI:
    """The API of ``settings``: its routes, its lifespan (following the live model versions)."""
    api = ScoringApi(settings)
    app = FastAPI(
        title="scoring",
        summary="Synchronous scoring with the stream's validation, entity state and live model version.",
        version=importlib.metadata.version("scoring"),
        lifespan=lambda _: api.running(),
        openapi_url=None,  # served below, behind the token
        docs_url=None,
        redoc_url=None,
    )

    async def authorized(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> None:
        given = credentials.credentials if credentials else None
        if settings.api_token and not token_matches(settings.api_token, given):
            raise Refused(
                refusal(401, "unauthorized", "this API needs its bearer token"),
                {"WWW-Authenticate": "Bearer"},
            )

    guarded = [Depends(authorized)]

    for use_case in settings.use_cases:
        app.add_api_route(
            f"/v1/score/{use_case.name}",
            _scoring(api, use_case.name),
            methods=["POST"],
            name=f"score_{use_case.name}",
            summary=f"Score a {use_case.event_type.__name__} event with the live {use_case.name} model",
            dependencies=guarded,
            responses=_SCORE_RESPONSES,
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": use_case.event_type.model_json_schema()}},
                }
            },
        )

    for use_case in settings.use_cases:
        fields = use_case.entity_fields
        app.add_api_route(
            f"/v1/entities/{use_case.name}/" + "/".join(f"{{{field}}}" for field in fields),
            _erasing(api, use_case.name, fields),
            methods=["DELETE"],
            name=f"erase_{use_case.name}",
            summary=f"Erase a {use_case.name} entity's data: its state, cached events, pending records and "
            "parked labels; recorded on the audit topic",
            dependencies=guarded,
            responses=_ERASE_RESPONSES,
            openapi_extra={
                "parameters": [
                    {
                        "name": field,
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": f"The entity's {field}, percent-encoded (an id holding `/` cannot "
                        "be named in a path: use `scoring erase`)",
                    }
                    for field in fields
                ]
            },
        )

    @app.get("/v1/models", dependencies=guarded, summary="Live and served version of each model")
    async def models() -> Response:
        return _response(await api.live_versions())

    @app.get(
        "/v1/models/{model}/versions/{version}",
        dependencies=guarded,
        summary="A version's registry record and model card (version: `fraud.3` or `3`)",
        responses={404: _REFUSAL},
    )
    async def version(model: str, version: str) -> Response:
        return _response(await api.version(model, version))

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    @app.get("/readyz", summary="200 when Redis and the broker answer and every model has a version loaded")
    async def readyz() -> Response:
        return _response(await api.readiness())

    @app.get("/metrics", dependencies=guarded, summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json", dependencies=guarded, include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    app.add_exception_handler(Refused, _refused)
    app.add_exception_handler(Exception, _internal_error)
    return app


def _scoring(api: ScoringApi, use_case: str) -> Callable[[Request], Awaitable[Response]]:
    async def score(request: Request) -> Response:
        payload = await request.body()
        return _response(await api.score(use_case, payload, time.time()))

    return score


def _erasing(
    api: ScoringApi, use_case: str, fields: tuple[str, ...]
) -> Callable[[Request], Awaitable[Response]]:
    async def erase(request: Request) -> Response:
        return _response(await api.erase(use_case, [request.path_params[field] for field in fields]))

    return erase


def _response(answer: Answer) -> Response:
    return Response(answer.body, answer.status, media_type=JSON)


async def _refused(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return Response(exc.answer.body, exc.answer.status, headers=exc.headers, media_type=JSON)


async def _internal_error(_: Request, exc: Exception) -> Response:
    # A bug; Starlette logs its traceback after this answer.
    return _response(refusal(500, "internal_error", reason(exc)))


def serve(app: Any, host: str, port: int, log_level: str) -> None:
    """Serve an ASGI app as ``scoring api`` does (the bench's floor too): uvicorn on uvloop with
    httptools' parser, and no access log (a log line a request: CPU the answers do not need;
    ``scoring_api_requests_total`` counts them)."""
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=log_level.lower(),
        lifespan="on",
    )


def run_api(settings: Settings) -> int:
    """Run ``scoring api`` until it is stopped (SIGINT/SIGTERM); 2 when it must not listen there."""
    refused = listen_refusal(settings)
    if refused is not None:
        print(f"scoring api: {refused}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level)
    if not settings.api_token:
        log.warning(
            "SCORING_API_TOKEN is not set: the API asks no token and listens on loopback only (%s:%d)",
            settings.api_host,
            settings.api_port,
        )
    app = create_app(settings)
    collector.settle()
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn stops cleanly, then raises Ctrl-C again
        serve(app, settings.api_host, settings.api_port, settings.log_level)
    return 0
