"""Who may call the scoring API, and where it may listen.

With ``SCORING_API_TOKEN`` set, every endpoint but ``/healthz`` and ``/readyz`` asks for it as a
bearer token. Without one, the API answers anyone who can reach it, so it may listen on a
loopback address only: :func:`listen_refusal` says why it will not start elsewhere.

Examples
--------
>>> from stream.settings import Settings
>>> listen_refusal(Settings(api_host="127.0.0.1")) is None
True
>>> listen_refusal(Settings(api_host="0.0.0.0", model_signing_key="a secret"))[:55]
'SCORING_API_HOST=0.0.0.0 is not a loopback address, and'
>>> listen_refusal(Settings(api_host="0.0.0.0", api_token="s3cret", model_signing_key="a secret")) is None
True
>>> token_matches("s3cret", "s3cret"), token_matches("s3cret", "guess"), token_matches("s3cret", None)
(True, False, False)
"""

from __future__ import annotations

import hmac

from stream.settings import Settings, is_loopback


def listen_refusal(settings: Settings) -> str | None:
    """Why the API must not listen where the settings say, if it must not."""
    if settings.api_token or is_loopback(settings.api_host):
        return None
    return (
        f"SCORING_API_HOST={settings.api_host} is not a loopback address, and SCORING_API_TOKEN is not "
        "set: anyone who reaches it could score and read the registry. Set a token, or listen on 127.0.0.1"
    )


def token_matches(expected: str, given: str | None) -> bool:
    """Whether the bearer token ``given`` is ``expected`` (in constant time: no timing leak)."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
