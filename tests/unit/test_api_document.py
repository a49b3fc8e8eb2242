"""The committed OpenAPI document is the one the API serves, and the server refuses to be exposed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from stream.api.app import create_app
from stream.settings import Settings

ROOT = Path(__file__).parents[2]
DOCUMENT = ROOT / "docs/openapi.json"


def test_the_committed_openapi_document_is_the_apps() -> None:
    served = create_app(Settings.defaults()).openapi()
    assert json.loads(DOCUMENT.read_text()) == served, (
        "docs/openapi.json is stale: .venv/bin/scoring api --openapi > docs/openapi.json"
    )


def test_every_scoring_route_documents_its_event_and_its_refusals() -> None:
    paths = json.loads(DOCUMENT.read_text())["paths"]
    for use_case, event in (("fraud", "Transaction"), ("demand", "Sale")):
        operation = paths[f"/v1/score/{use_case}"]["post"]
        assert operation["requestBody"]["content"]["application/json"]["schema"]["title"] == event
        assert set(operation["responses"]) == {"200", "401", "409", "422", "503"}
        assert operation["security"] == [{"HTTPBearer": []}]
    assert "security" not in paths["/healthz"]["get"] and "security" not in paths["/readyz"]["get"]


def test_without_a_token_the_api_refuses_to_listen_beyond_loopback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stream.tools.cli", "api"],
        env={"SCORING_API_HOST": "0.0.0.0", "SCORING_MODEL_SIGNING_KEY": "a secret", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert "SCORING_API_HOST=0.0.0.0 is not a loopback address" in done.stderr
