"""UsageRecord -> HEC event: the wire format Splunk receives, and the subkey hash the service uses."""
from __future__ import annotations

import hashlib
import json

HASH_PREFIX = "sha256:"


def hash_subkey(subkey: str) -> str:
    """``sha256:`` + first 16 hex of SHA-256, as the live service sends it; never hashes twice."""
    if subkey.startswith(HASH_PREFIX):
        return subkey
    return HASH_PREFIX + hashlib.sha256(subkey.encode("utf-8")).hexdigest()[:16]


def is_hashed(subkey: str) -> bool:
    return subkey.startswith(HASH_PREFIX)


def backfill_id(kind: str, worker_pid, anchor: str, subkey: str, model, discriminator) -> str:
    """A stable id of one event's identity, the same whichever journalctl view it was read from.

    Built from what every view shows identically: the service's own asctime of the attempt's
    first line, its worker pid, the hashed subkey, model and token total (or error type).
    """
    return stable_id(kind, worker_pid, anchor, subkey, model, discriminator)


def stable_id(*parts) -> str:
    """32 hex digits of SHA-256 over the parts: the same parts give the same id on every run."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).hexdigest()[:32]


def to_hec(record, *, index: str, sourcetype: str, source: str, names=None, reason=None) -> dict:
    """The HEC envelope for one UsageRecord: original ``time``, ``backfill: true``, names joined.

    ``names`` maps raw and hashed subkeys to ``Name`` (see names.name_lookup). Like the live
    service, ``friendly_name`` is set only when a name is known and ``email`` only when non-empty.
    """
    ev = dict(record.event)
    raw = ev.get("subkey")
    hashed = hash_subkey(raw) if isinstance(raw, str) and raw else raw
    if hashed is not None:
        ev["subkey"] = hashed
    if names and isinstance(raw, str):
        name = names.get(raw) or names.get(hashed)
        if name is not None:
            ev["friendly_name"] = name.friendly_name
            if name.email:
                ev["email"] = name.email
            else:
                ev.pop("email", None)
    disc = ev.get("error_type") if record.kind == "error" else ev.get("total_tokens")
    ev["backfill"] = True
    ev["backfill_id"] = backfill_id(record.kind, record.worker_pid, record.anchor, hashed, ev.get("model"), disc)
    # what the live send did: searches can leave out copies of what Splunk already had
    # (NOT (backfill=true backfill_live_send=delivered))
    ev["backfill_live_send"] = record.outcome
    if reason:
        ev["backfill_reason"] = reason
    body = {"time": record.time}
    if record.host:
        body["host"] = record.host
    body["source"] = source
    body["sourcetype"] = f"{sourcetype}:error" if record.kind == "error" else sourcetype
    body["index"] = index
    body["event"] = ev
    return body


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # one, not one per event


def encode(body: dict) -> bytes:
    """Compact UTF-8 JSON, as the service's HTTP client sent it; one HEC event object."""
    return _ENCODER.encode(body).encode("utf-8")
