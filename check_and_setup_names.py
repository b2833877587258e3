#!/usr/bin/env python3
"""Check the service's quota.db: schema state, active subkeys and whether each has a name.

Exit 0: schema current and every active subkey named; 1: something missing (or not the service's
database: no usage tables); 2: database unreadable.
Thin: parses arguments and calls ``oai_to_circuit.names.check``. See README.md, section Names.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from oai_to_circuit.cli import NON_NEGATIVE, ArgumentParser
from oai_to_circuit import names
from oai_to_circuit.config import load_settings
from oai_to_circuit.errors import ToolkitError


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="check_and_setup_names.py",
        description="Report which active subkeys have friendly names; optionally migrate and name them.",
    )
    p.add_argument("--db", metavar="PATH",
                   help="database (default: QUOTA_DB_PATH from the environment or credentials.env, "
                        "else /var/lib/oai-to-circuit/quota.db)")
    p.add_argument("--env-file", metavar="PATH", help="credentials.env to read QUOTA_DB_PATH from")
    p.add_argument("--fix", action="store_true", help="apply pending migrations first (backup first)")
    p.add_argument("--interactive", action="store_true", help="ask for the missing names and emails, and save them")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--show-subkeys", action="store_true", help="show full subkeys in the report (secrets!)")
    p.add_argument("--no-backup", action="store_true", help="--fix/--interactive: no backup before a migration")
    p.add_argument("--timeout", type=NON_NEGATIVE, default=names.DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="how long to wait for a lock held by the service (default %(default)g)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    ns = p.parse_args(argv)
    try:
        # verify_ssl is pinned: an unrelated SPLUNK_VERIFY_SSL problem must not stop the names tools.
        db = load_settings(ns.env_file, overrides={"db_path": ns.db, "verify_ssl": True}).db_path
        return names.check(
            db, fix=ns.fix, interactive=ns.interactive, as_json=ns.json, show_subkeys=ns.show_subkeys,
            backup=not ns.no_backup, timeout=ns.timeout, out=sys.stdout, err=sys.stderr,
        )
    except ToolkitError as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
