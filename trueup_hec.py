#!/usr/bin/env python3
"""True-up: compare the provider's usage totals with Splunk's and send positive-only corrections.

    python trueup_hec.py --print-spl --month 2026-01            # the SPL of the Splunk export
    python trueup_hec.py --reference azure-2026-01.csv --splunk splunk-2026-01.csv --dry-run
    python trueup_hec.py --reference azure-2026-01.csv --splunk splunk-2026-01.csv   # asks, then sends
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from oai_to_circuit.cli import NON_NEGATIVE, POSITIVE, ArgumentParser
from oai_to_circuit.errors import ToolkitError

EPILOG = """rule: per model and month, when the current total is below the reference total, one correction
carries reference minus current for total, prompt and completion (never below zero); when it is equal
or higher, nothing is sent. Corrections: requests=0, backfill=true, trueup=true, trueup_month.

exit status: 0 done (corrections delivered, none needed, dry run, or answered no), 1 some corrections
failed (they are in the dead-letter file; backfill_hec.py --replay FILE resends them), 2 usage,
input or configuration error, 130 stopped by SIGTERM or Ctrl-C while sending (the first lets the POST
on the wire finish; run the same command again for the rest). Settings come from flags, then the environment, then credentials.env
(--env-file, ./credentials.env, /etc/oai-to-circuit/credentials.env)."""


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="trueup_hec.py",
        description="Reconcile usage totals per model and month with the provider's report (the source of "
                    "truth) and send correction events for what Splunk is missing, exactly once.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("inputs")
    g.add_argument("--reference", metavar="FILE",
                   help="provider totals, CSV or JSON: Model, Month, Tier (optional), Total Tokens, Prompt Tokens, "
                        "Completion Tokens")
    g.add_argument("--splunk", metavar="FILE", help="current totals: the Splunk export of --print-spl (CSV or JSON)")
    g.add_argument("--from-db", action="store_true",
                   help="current totals from the service's database (monthly_usage, opened read-only)")
    g.add_argument("--db", metavar="PATH", help="quota.db for --from-db (default QUOTA_DB_PATH)")
    g.add_argument("--month", metavar="YYYY-MM", help="only this month (default: every month of --reference)")
    g.add_argument("--print-spl", action="store_true", help="print the SPL of the Splunk export for --month, exit")
    g = p.add_argument_group("the corrections")
    g.add_argument("--date", metavar="DATE",
                   help="time of the corrections, YYYY-MM-DD or ISO (UTC unless an offset is given); "
                        "default the 15th of the month 00:00 UTC")
    g.add_argument("--reason", metavar="TEXT",
                   help="backfill_reason of the events (default 'true-up to provider usage report')")
    g.add_argument("--subkey", metavar="KEY",
                   help="subkey the corrections are charged to, hashed like the service "
                        "(default BACKFILL_SUBKEY, else backfill-trueup)")
    g.add_argument("--dry-run", action="store_true", help="show the corrections; send nothing, need no HEC settings")
    g.add_argument("--yes", "-y", action="store_true", help="send without asking (needed without a terminal)")
    g.add_argument("--force", action="store_true",
                   help="resend corrections the ledger says were already delivered (they will count twice)")
    g = p.add_argument_group("destination and delivery")
    g.add_argument("--env-file", metavar="PATH", help="credentials.env to read")
    g.add_argument("--index", help="Splunk index (default SPLUNK_INDEX, else oai_circuit)")
    g.add_argument("--sourcetype", help="sourcetype (default SPLUNK_SOURCETYPE, else llm:usage)")
    g.add_argument("--ledger", metavar="PATH",
                   help="delivery ledger (default ~/.local/state/oai-to-circuit/backfill-ledger.db)")
    g.add_argument("--dead-letter", metavar="PATH",
                   help="where undeliverable corrections go (default ./backfill-dead-letters-<time>-<run>.ndjson)")
    g.add_argument("--no-gzip", action="store_true", help="send bodies uncompressed")
    g.add_argument("--retry-for", type=NON_NEGATIVE, metavar="SECONDS", help="keep retrying this long (default 300)")
    g.add_argument("--timeout", type=POSITIVE, metavar="SECONDS", help="HTTP timeout per request (default 10)")
    g.add_argument("--ack", action="store_true", help="use indexer acknowledgement (auto when HEC demands it)")
    g.add_argument("--ca-bundle", metavar="PATH", help="CA bundle to verify HEC's certificate")
    g = p.add_argument_group("output")
    g.add_argument("--output", choices=("table", "json"), default="table",
                   help="stdout: table (default) or json (rows, corrections and result, for scripts)")
    g.add_argument("--verbose", "-v", action="store_true", help="every POST on stderr")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from oai_to_circuit.trueup import run_from_args

    try:
        return run_from_args(args)
    except ToolkitError as exc:
        print(f"trueup_hec.py: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("trueup_hec.py: interrupted; corrections handed to HEC but not confirmed are in the dead-letter file",
              file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
