"""The journal reader: every journalctl view, markers, years, zones, ANSI, byte arrays, junk."""
from __future__ import annotations

import gzip
import io
import json
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from journal_views import journalctl_view
from oai_to_circuit.journal import JournalReader, ReadStats, read_entries

SERVICE_LINE = ("INFO:     2026-12-03 18:23:29,801 - SpawnProcess-1[ 7249] - oai_to_circuit - "
                "Starting OpenAI to Circuit Bridge server")
T = datetime(2026, 12, 3, 18, 23, 29, tzinfo=timezone.utc).timestamp()


def parse(text, zone=timezone.utc, year=None):
    r = JournalReader(zone, year=year)
    return r.parse_line(text, 1, "t"), r


@pytest.mark.parametrize("line,t,precise", [
    (f"Dec 03 18:23:29 proxy-01 oai-to-circuit[7245]: {SERVICE_LINE}", T, False),
    (f"Dec 03 18:23:29.801919 proxy-01 oai-to-circuit[7245]: {SERVICE_LINE}", T + 0.801919, True),
    (f"2026-12-03T18:23:29+0000 proxy-01 oai-to-circuit[7245]: {SERVICE_LINE}", T, False),
    (f"2026-12-03T18:23:29.801919+0000 proxy-01 oai-to-circuit[7245]: {SERVICE_LINE}", T + 0.801919, True),
    (f"2026-12-03T13:23:29.801919-05:00 proxy-01 oai-to-circuit[7245]: {SERVICE_LINE}", T + 0.801919, True),
    (f"Thu 2026-12-03 18:23:29 UTC proxy-01 oai-to-circuit[7245]: {SERVICE_LINE}", T, False),
    (f"Thu 2026-12-03 13:23:29 EST proxy-01 oai-to-circuit[7245]: {SERVICE_LINE}", T, False),
    (f"1796322209.801919 proxy-01 oai-to-circuit[7245]: {SERVICE_LINE}", T + 0.801919, True),
])
def test_every_short_view(line, t, precise):
    e, _ = parse(line)
    assert e.time == pytest.approx(t, abs=1e-6)
    assert e.precise is precise
    assert (e.host, e.ident, e.pid) == ("proxy-01", "oai-to-circuit", 7245)
    assert e.message == SERVICE_LINE


def test_cat_and_bare_lines_and_ansi():
    e, _ = parse("\x1b[32mINFO\x1b[0m:     2026-12-03 18:23:29,801 - SpawnProcess-1[ 7249] - oai_to_circuit - x")
    assert e.time is None and e.host is None
    assert e.message == "INFO:     2026-12-03 18:23:29,801 - SpawnProcess-1[ 7249] - oai_to_circuit - x"


def test_json_message_as_byte_array_and_string():
    msg = "\x1b[32mINFO\x1b[0m:     2026-12-03 18:23:29,801 - x"
    line = json.dumps({"MESSAGE": list(msg.encode()), "__REALTIME_TIMESTAMP": "1796322209801919",
                       "_HOSTNAME": "proxy-01", "SYSLOG_IDENTIFIER": "oai-to-circuit", "_PID": "7245"})
    e, _ = parse(line)
    assert e.message == "INFO:     2026-12-03 18:23:29,801 - x"
    assert e.time == pytest.approx(T + 0.801919, abs=1e-6) and e.pid == 7245
    e, _ = parse(json.dumps({"MESSAGE": '  "time": 1.5,', "__REALTIME_TIMESTAMP": "1796322209000000"}))
    assert e.message == '  "time": 1.5,'


def test_markers_are_counted_not_parsed_and_logs_begin_gives_the_year():
    data = ("-- Logs begin at Wed 2025-12-31 00:00:01 UTC, end at Thu 2026-01-01 00:10:00 UTC. --\n"
            "Dec 31 23:59:59 h app[1]: a\n"
            "-- Boot 5ee796699a987bb182257930696047b1 --\n"
            "-- Reboot --\n"
            "Jan 01 00:00:01 h app[1]: b\n"
            "-- No entries --\n").encode()
    stats = ReadStats()
    r = JournalReader(timezone.utc, stats=stats)
    out = list(r.read("x", io.BytesIO(data)))
    assert [e.message for e in out] == ["a", "b"]
    assert out[0].time == datetime(2025, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()
    assert out[1].time == datetime(2026, 1, 1, 0, 0, 1, tzinfo=timezone.utc).timestamp()  # no going back in time
    assert sum(stats.skipped.values()) == 4


def test_year_comes_from_the_service_asctime_when_nothing_else_says():
    e, r = parse(f"Dec 03 18:23:29 proxy-01 oai-to-circuit[7245]: {SERVICE_LINE}".replace("2026-12-03", "2024-12-03"))
    assert datetime.fromtimestamp(e.time, timezone.utc).year == 2024
    e, r = parse(f"Dec 03 18:23:29 proxy-01 app[1]: {SERVICE_LINE}", year=2021)
    assert datetime.fromtimestamp(e.time, timezone.utc).year == 2021


def test_zone_for_short_views():
    e, _ = parse("Dec 03 13:23:29 proxy-01 oai-to-circuit[7245]: x", zone=ZoneInfo("America/New_York"), year=2026)
    assert e.time == T


def test_blob_lines_gz_stdin_and_junk(tmp_path):
    raw = (b"Dec 03 18:23:29 h app[1]: [123B blob data]\n\xff\xfe\x00junk\n" +
           b"Dec 03 18:23:29 h app[1]: " + b"y" * 2_000_000 + b"\n")
    p = tmp_path / "x.txt.gz"
    p.write_bytes(gzip.compress(raw))
    stats = ReadStats()

    class Stdin:
        buffer = io.BytesIO(gzip.compress(raw))

    out = list(read_entries([str(p), "-"], zone=timezone.utc, year=2026, stats=stats, stdin=Stdin))
    assert stats.lines == 6 and stats.inputs == 2 and stats.blob_lines == 2
    assert len(out) == 4 and len(out[1].message) == 2_000_000


def test_real_journalctl_views_agree(tmp_path):
    """The same journal file printed as short, json, short-iso-precise and -a: same messages."""
    views = {}
    for view, extra in (("short", ()), ("json", ()), ("short-iso-precise", ()), ("short", ("-a",))):
        path = journalctl_view("service-9c7664e", view, tmp_path, extra=extra)
        views[view + "".join(extra)] = [e.message for e in read_entries([str(path)], zone=timezone.utc)]
    assert len(views["short"]) == 8387  # every entry of the journal, no marker in this one
    assert views["short"] == views["json"] == views["short-iso-precise"] == views["short-a"]


def test_truncated_or_corrupt_gzip_is_an_input_error(tmp_path):
    from oai_to_circuit.errors import InputError

    whole = gzip.compress(b"Dec 03 18:23:29 h app[1]: x\n" * 20000)
    for name, data in (("cut.gz", whole[: len(whole) // 2]), ("bad.gz", b"\x1f\x8b" + b"junk" * 10)):
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(InputError, match="gzip data is truncated or corrupt"):
            list(read_entries([str(p)], zone=timezone.utc, year=2026))


def test_the_services_own_date_beats_a_logs_begin_header_and_today():
    """`--since` on an old journal: the header tells when the journal began, not the extract's year."""
    data = ("-- Logs begin at Wed 2024-05-01 00:00:01 UTC, end at Thu 2026-12-03 18:30:00 UTC. --\n"
            "Dec 03 18:23:28 proxy-01 systemd[1]: Started oai-to-circuit.service.\n"
            f"Dec 03 18:23:29 proxy-01 oai-to-circuit[7245]: {SERVICE_LINE}\n").encode()
    out = list(JournalReader(timezone.utc).read("x", io.BytesIO(data)))
    assert datetime.fromtimestamp(out[1].time, timezone.utc).year == 2026
