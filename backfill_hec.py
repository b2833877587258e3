#!/usr/bin/env python3
"""Backfill oai-to-circuit usage events from journalctl text into Splunk HEC.

    sudo journalctl -u oai-to-circuit --since "2 days ago" > recent_logs.txt
    python backfill_hec.py --dry-run < recent_logs.txt      # preview, sends nothing
    python backfill_hec.py < recent_logs.txt                # send, exactly once
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from oai_to_circuit.cli import NON_NEGATIVE, POSITIVE, POSITIVE_INT, ArgumentParser, number, stop_on_signals
from oai_to_circuit.errors import ToolkitError

EPILOG = """exit status: 0 every selected event delivered (or dry run done), 1 some events failed
(they are in the dead-letter file; --replay FILE resends them), 2 usage or configuration error,
130 interrupted (Ctrl-C, SIGTERM: unconfirmed events go to the dead-letter file).
Settings come from flags, then the environment, then credentials.env (--env-file, ./credentials.env,
/etc/oai-to-circuit/credentials.env)."""


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="backfill_hec.py",
        description="Find every usage event oai-to-circuit logged in journalctl output and send it to "
                    "Splunk HEC with its original time, marked backfill=true.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="FILE",
                   help="journalctl output (any -o view; .gz is fine); '-' or none = standard input")
    g = p.add_argument_group("what to send")
    g.add_argument("--dry-run", action="store_true", help="preview on stdout; send nothing, need no HEC settings")
    g.add_argument("--only-failed", action="store_true",
                   help="only events whose live send failed or is uncertain (timed out)")
    g.add_argument("--include-errors", action="store_true",
                   help="also send error events (quota_exceeded, unauthorized_subkey) as <sourcetype>:error")
    g.add_argument("--since", metavar="TIME", help="only events at or after TIME ('2026-01-01', '2 days ago')")
    g.add_argument("--until", metavar="TIME", help="only events before TIME")
    g.add_argument("--reason", metavar="TEXT", help="stored in every event as backfill_reason")
    g.add_argument("--replay", metavar="FILE", help="send the events of a dead-letter file (or an ndjson preview)")
    g.add_argument("--force", action="store_true", help="resend events the ledger says were already delivered")
    g = p.add_argument_group("reading the journal")
    g.add_argument("--date", metavar="YYYY-MM-DD",
                   help="date of the logs: gives the year to short views, which print none")
    g.add_argument("--year", type=number(int, 1970, True), help="year of short-view timestamps (default: from the log itself)")
    g.add_argument("--tz", metavar="ZONE", help="zone the journal text was printed in (default: this machine's)")
    g.add_argument("--utc", action="store_true", help="the journal text was printed with --utc")
    g = p.add_argument_group("names and destination")
    g.add_argument("--db", metavar="PATH", help="quota.db with subkey_names (default QUOTA_DB_PATH)")
    g.add_argument("--no-names", action="store_true",
                   help="read no database: events keep only the names the service itself logged")
    g.add_argument("--env-file", metavar="PATH", help="credentials.env to read")
    g.add_argument("--index", help="Splunk index (default SPLUNK_INDEX, else oai_circuit)")
    g.add_argument("--sourcetype", help="sourcetype (default SPLUNK_SOURCETYPE, else llm:usage)")
    g = p.add_argument_group("delivery")
    g.add_argument("--ledger", metavar="PATH",
                   help="delivery ledger (default ~/.local/state/oai-to-circuit/backfill-ledger.db)")
    g.add_argument("--dead-letter", metavar="PATH",
                   help="where undeliverable events go (default ./backfill-dead-letters-<time>-<run>.ndjson)")
    g.add_argument("--batch-size", type=POSITIVE_INT, metavar="N", help="events per POST at most (default 500)")
    g.add_argument("--batch-bytes", type=POSITIVE_INT, metavar="N", help="bytes per POST at most (default 900000)")
    g.add_argument("--no-gzip", action="store_true", help="send bodies uncompressed")
    g.add_argument("--max-eps", type=POSITIVE, metavar="N", help="send at most N events per second")
    g.add_argument("--retry-for", type=NON_NEGATIVE, metavar="SECONDS", help="keep retrying a batch this long (default 300)")
    g.add_argument("--timeout", type=POSITIVE, metavar="SECONDS", help="HTTP timeout per request (default 10)")
    g.add_argument("--ack", action="store_true", help="use indexer acknowledgement (auto when HEC demands it)")
    g.add_argument("--ack-timeout", type=POSITIVE, metavar="SECONDS",
                   help="wait this long for an ack before resending the batch (default 120)")
    g.add_argument("--ca-bundle", metavar="PATH", help="CA bundle to verify HEC's certificate")
    g.add_argument("--check", action="store_true", help="test HEC health and the token, then exit")
    g = p.add_argument_group("output")
    g.add_argument("--output", choices=("table", "ndjson", "none"),
                   help="stdout: table (dry-run default), ndjson (the exact HEC bodies), none (default when sending)")
    g.add_argument("--verbose", "-v", action="store_true", help="explain every event and every POST on stderr")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress meter on stderr (default: when stderr is a terminal)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.replay and args.inputs:
        parser.error("--replay FILE sends a dead-letter file: give no journal FILE with it")
    if not args.inputs and not args.replay and not args.check and sys.stdin is not None and sys.stdin.isatty():
        parser.error("no input: pipe journalctl output in (< recent_logs.txt) or name the files")
    from oai_to_circuit.backfill import run_from_args

    try:
        with stop_on_signals("backfill_hec.py") as stop:
            return run_from_args(args, stop=stop)
    except ToolkitError as exc:
        print(f"backfill_hec.py: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("backfill_hec.py: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. the preview piped into head: what was sent is in the ledger
        return 1


if __name__ == "__main__":
    sys.exit(main())
