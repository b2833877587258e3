#!/usr/bin/env python3
"""Create/migrate the subkey_names table and manage friendly names in the service's quota.db.

Thin: parses arguments and calls ``oai_to_circuit.names.manage``. See README.md, section Names.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from oai_to_circuit.cli import NON_NEGATIVE, ArgumentParser
from oai_to_circuit import names
from oai_to_circuit.config import load_settings
from oai_to_circuit.errors import ToolkitError

ACTIONS = ("init", "migrate", "add", "list", "remove", "import", "export")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="add_subkey_names_table.py",
        description="Create/migrate the subkey_names table and manage friendly names and emails.",
    )
    act = p.add_argument_group("actions (exactly one)").add_mutually_exclusive_group(required=True)
    act.add_argument("--init", action="store_true", help="create subkey_names (and the database file if its directory exists)")
    act.add_argument("--migrate", action="store_true", help="apply pending schema steps to an existing database (backup first); safe to re-run")
    act.add_argument("--add", action="store_true", help="insert a subkey's name, or update only the fields given")
    act.add_argument("--list", action="store_true", help="list names sorted by friendly name")
    act.add_argument("--remove", action="store_true", help="delete a subkey's name (exit 1 if it has none)")
    act.add_argument("--import", dest="import_path", metavar="FILE.csv",
                     help="upsert names from CSV (header subkey,friendly_name[,email][,description]); all or nothing")
    act.add_argument("--export", action="store_true", help="write every name with the full subkey (CSV by default)")
    p.add_argument("--db", metavar="PATH",
                   help="database (default: QUOTA_DB_PATH from the environment or credentials.env, "
                        "else /var/lib/oai-to-circuit/quota.db)")
    p.add_argument("--env-file", metavar="PATH", help="credentials.env to read QUOTA_DB_PATH from")
    p.add_argument("--subkey", help="the raw subkey (--add, --remove)")
    p.add_argument("--name", help="friendly name (--add; required for a new subkey)")
    p.add_argument("--email", help='email (--add); "" clears it')
    p.add_argument("--description", help='description (--add); "" clears it')
    p.add_argument("--format", choices=("table", "csv", "json"),
                   help="--list: table (default), csv or json; --export: csv (default) or json")
    p.add_argument("--show-subkeys", action="store_true", help="--list: show full subkeys (secrets!)")
    p.add_argument("--output", metavar="FILE", help="--export: write to FILE (mode 0600) instead of stdout")
    p.add_argument("--dry-run", action="store_true", help="--migrate/--init/--import: show what would change, write nothing")
    p.add_argument("--no-backup", action="store_true", help="do not back up the database before a migration")
    p.add_argument("--timeout", type=NON_NEGATIVE, default=names.DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="how long to wait for a lock held by the service (default %(default)g)")
    return p


def _check_combinations(p: argparse.ArgumentParser, ns: argparse.Namespace, action: str) -> None:
    if action in ("add", "remove") and not ns.subkey:
        p.error(f"--{action} needs --subkey")
    if action != "add":
        for flag in ("name", "email", "description"):
            if getattr(ns, flag) is not None:
                p.error(f"--{flag} only goes with --add")
        if ns.subkey is not None and action != "remove":
            p.error("--subkey only goes with --add or --remove")
    if ns.output is not None and action != "export":
        p.error("--output only goes with --export")
    if ns.format is not None and action not in ("list", "export"):
        p.error("--format only goes with --list or --export")
    if action == "export" and ns.format == "table":
        p.error("--export writes csv or json")
    if ns.show_subkeys and action != "list":
        p.error("--show-subkeys only goes with --list (--export always has full subkeys)")
    if ns.dry_run and action not in ("init", "migrate", "import"):
        p.error("--dry-run only goes with --migrate, --init or --import")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    ns = p.parse_args(argv)
    action = "import" if ns.import_path is not None else next(a for a in ACTIONS if a != "import" and getattr(ns, a))
    _check_combinations(p, ns, action)
    try:
        # verify_ssl is pinned: an unrelated SPLUNK_VERIFY_SSL problem must not stop the names tools.
        db = load_settings(ns.env_file, overrides={"db_path": ns.db, "verify_ssl": True}).db_path
        return names.manage(
            action, db_path=db, subkey=ns.subkey, name=ns.name, email=ns.email, description=ns.description,
            fmt=ns.format, show_subkeys=ns.show_subkeys, output=ns.output, import_path=ns.import_path,
            dry_run=ns.dry_run, backup=not ns.no_backup, timeout=ns.timeout, out=sys.stdout, err=sys.stderr,
        )
    except ToolkitError as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
