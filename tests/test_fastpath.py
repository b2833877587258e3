"""The reader's block scan (what the CLI uses on files) finds exactly what the plain line loop finds.

Block sizes small enough to cut lines and multi-line payload blocks anywhere; both real journals;
CRLF line ends and gzip too.
"""
from __future__ import annotations

import gzip
import io
from dataclasses import asdict
from datetime import timezone

import pytest

from journal_views import FIXTURES
from oai_to_circuit import journal
from oai_to_circuit.journal import JournalReader, ReadStats
from oai_to_circuit.usage_log import UsageExtractor, extract


def records(data: bytes, fast: bool, block_size: int, monkeypatch, gz: bool = False):
    ex = UsageExtractor(timezone.utc)
    stats = ReadStats()
    if fast:  # keep is the extractor's own method: the reader scans blocks for its needles
        reader = JournalReader(timezone.utc, stats=stats, keep=ex.keep)
        lines = journal._maybe_gzip(io.BufferedReader(io.BytesIO(gzip.compress(data) if gz else data)))
    else:  # a plain function: every line offered to keep() one by one
        reader = JournalReader(timezone.utc, stats=stats, keep=lambda raw: ex.keep(raw))
        lines = iter(data.splitlines(keepends=True))
    monkeypatch.setattr(journal, "BLOCK_SIZE", block_size)
    recs = [asdict(r) for r in extract(reader.read("x", lines), ex)]
    return recs, stats.lines, stats.blob_lines, asdict(ex.stats)


@pytest.mark.parametrize("service", ["service-e749b02", "service-9c7664e"])
@pytest.mark.parametrize("block_size, crlf, gz", [(333, False, False), (4096, True, False), (1 << 20, False, True)])
def test_block_scan_equals_line_loop(service, block_size, crlf, gz, monkeypatch):
    data = gzip.decompress((FIXTURES / service / "journal.short.txt.gz").read_bytes())
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    plain = records(data, False, block_size, monkeypatch)
    fast = records(data, True, block_size, monkeypatch, gz)
    assert len(plain[0]) in (369, 186)
    assert fast == plain
