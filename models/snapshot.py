"""Signed snapshots: a model (or any learner state) as bytes that cannot be forged.

A snapshot is a pickle, and unpickling runs code: one that was not written by the service
must never be unpickled. Each snapshot therefore carries an HMAC-SHA256 of its payload,
keyed by a secret every worker and learner shares, and :func:`loads` checks it *before*
unpickling. Layout: ``MAGIC | 32-byte HMAC | zlib(pickle)``.

The format's version is in ``MAGIC``: it goes up whenever pickled classes move or change
shape, and a snapshot of another version is refused with a clear error rather than
unpickled into classes that are no longer there (format 2: the runtime moved to
``stream.runtime``).

Examples
--------
>>> blob = dumps({"weights": [1.0, 2.0]}, key=b"secret")
>>> loads(blob, key=b"secret")
{'weights': [1.0, 2.0]}
>>> loads(blob[:-1] + b"x", key=b"secret")
Traceback (most recent call last):
...
models.snapshot.SnapshotError: snapshot signature does not match: tampered with, or signed with another key
>>> loads(b"plain pickle", key=b"secret")
Traceback (most recent call last):
...
models.snapshot.SnapshotError: not a signed snapshot (no SCORING-SNAPSHOT-2 header): refusing to unpickle it
>>> loads(b"SCORING-SNAPSHOT-1" + blob[len(MAGIC) - 1 :], key=b"secret")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
models.snapshot.SnapshotError: snapshot format 1 is not this release's (2): written before ...

"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import zlib
from typing import Any

__all__ = ["FORMAT", "MAGIC", "SnapshotError", "dumps", "loads"]

FORMAT = 2
_HEADER = b"SCORING-SNAPSHOT-"
MAGIC = _HEADER + str(FORMAT).encode() + b"\n"
_DIGEST = hashlib.sha256
_DIGEST_SIZE = _DIGEST().digest_size


class SnapshotError(ValueError):
    """A snapshot that is unsigned, truncated, tampered with or signed with another key."""


def _signature(payload: bytes, key: bytes) -> bytes:
    return hmac.new(key, payload, _DIGEST).digest()


def dumps(obj: Any, key: bytes) -> bytes:
    """Pickle, compress and sign ``obj`` with ``key``."""
    if not key:
        raise ValueError("a snapshot signing key must not be empty")
    payload = zlib.compress(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), level=1)
    return MAGIC + _signature(payload, key) + payload


def loads(blob: bytes, key: bytes) -> Any:
    """The object of a snapshot signed with ``key``; :class:`SnapshotError` for any other bytes."""
    if not blob.startswith(MAGIC):
        if blob.startswith(_HEADER):
            version = blob[len(_HEADER) :].split(b"\n", 1)[0].decode(errors="replace")
            raise SnapshotError(
                f"snapshot format {version} is not this release's ({FORMAT}): written before an "
                "upgrade, it cannot be loaded; publish a new version"
            )
        raise SnapshotError(
            f"not a signed snapshot (no {MAGIC.decode().strip()} header): refusing to unpickle it"
        )
    signature = blob[len(MAGIC) : len(MAGIC) + _DIGEST_SIZE]
    payload = blob[len(MAGIC) + _DIGEST_SIZE :]
    if not hmac.compare_digest(signature, _signature(payload, key)):
        raise SnapshotError("snapshot signature does not match: tampered with, or signed with another key")
    return pickle.loads(zlib.decompress(payload))  # the signature is checked above
