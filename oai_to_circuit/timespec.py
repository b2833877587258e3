"""--since / --until / --date values, read the way journalctl reads them."""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Optional

from .errors import ConfigError

_AGO_RE = re.compile(r"^(\d+)\s*(s|sec|second|m|min|minute|h|hour|d|day|w|week)s?\s+ago$")
_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
          "d": 86400, "day": 86400, "w": 604800, "week": 604800}


def parse_when(text: str, zone: tzinfo, now: Optional[datetime] = None) -> float:
    """Epoch seconds for '2026-01-31', '2026-01-31 12:00[:00]', ISO with offset, '@EPOCH',
    'today', 'yesterday', 'now', '2 days ago'. Times without a zone are in ``zone``."""
    t = text.strip()
    low = t.lower()
    now = now or datetime.now(zone)
    if low == "now":
        return now.timestamp()
    if low in ("today", "yesterday", "tomorrow"):
        d = now.date() + timedelta(days={"today": 0, "yesterday": -1, "tomorrow": 1}[low])
        return datetime(d.year, d.month, d.day, tzinfo=zone).timestamp()
    if t.startswith("@"):
        try:
            return float(t[1:])
        except ValueError:
            pass
    m = _AGO_RE.match(low)
    if m:
        return now.timestamp() - int(m.group(1)) * _UNITS[m.group(2)]
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"cannot read the time {text!r}: use YYYY-MM-DD, 'YYYY-MM-DD HH:MM:SS', '2 days ago', today or yesterday")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=zone)
    return dt.timestamp()


def iso_to_epoch(text: str) -> float:
    """ISO 8601 text (``Z``, an offset, or none = UTC) as epoch seconds; ValueError if it is not one."""
    t = str(text).strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    dt = datetime.fromisoformat(t)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def iso_utc(epoch: float) -> str:
    """ISO 8601 in UTC with a Z, as the service logs it; microseconds only when present."""
    dt = datetime.fromtimestamp(epoch, tz=timezone.utc)
    return dt.isoformat(timespec="microseconds" if dt.microsecond else "seconds").replace("+00:00", "Z")


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"--date {text!r}: expected YYYY-MM-DD")


def display_utc(t: float) -> str:
    """For people (the preview table, the report): '2026-12-03 18:23:31.278Z'."""
    # isoformat truncates to the millisecond as strftime("%f")[:-3] did, at a third of the cost
    return datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None).isoformat(" ", "milliseconds") + "Z"


def utc_month(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m")
