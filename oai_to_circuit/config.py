"""Settings: CLI flag > environment > credentials.env (python-dotenv).

The file is read with ``dotenv_values`` so loading it never changes ``os.environ``,
and the token is kept out of ``repr()`` so it cannot leak through a traceback or log.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping, Optional

from dotenv import dotenv_values

from .errors import ConfigError

DEFAULT_DB_PATH = "/var/lib/oai-to-circuit/quota.db"
ENV_FILE_NAME = "credentials.env"
SYSTEM_ENV_DIR = Path("/etc/oai-to-circuit")

DEFAULTS = {
    "SPLUNK_HEC_URL": "",
    "SPLUNK_HEC_TOKEN": "",
    "SPLUNK_INDEX": "oai_circuit",
    "SPLUNK_SOURCETYPE": "llm:usage",
    "SPLUNK_SOURCE": "oai-to-circuit",
    "SPLUNK_VERIFY_SSL": "true",
    "QUOTA_DB_PATH": DEFAULT_DB_PATH,
    "BACKFILL_SUBKEY": "backfill-trueup",
}


def env_file_candidates(explicit: Optional[str] = None) -> list[Path]:
    """Where credentials.env is looked for, in order."""
    if explicit:
        return [Path(explicit)]
    return [Path.cwd() / ENV_FILE_NAME, SYSTEM_ENV_DIR / ENV_FILE_NAME]


def where_env_is_looked_for(explicit: Optional[str] = None) -> str:
    return ", ".join(str(p) for p in env_file_candidates(explicit))


def parse_bool_or_path(value: str):
    """SPLUNK_VERIFY_SSL: true/false, or a CA bundle path (what requests' ``verify`` takes)."""
    v = (value or "").strip()
    low = v.lower()
    if low in ("", "1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    if not Path(v).exists():
        raise ConfigError(f"SPLUNK_VERIFY_SSL or --ca-bundle {v!r}: neither true/false nor an existing CA bundle file")
    return v


@dataclass
class Settings:
    hec_url: str = ""
    hec_token: str = field(default="", repr=False)
    index: str = DEFAULTS["SPLUNK_INDEX"]
    sourcetype: str = DEFAULTS["SPLUNK_SOURCETYPE"]
    source: str = DEFAULTS["SPLUNK_SOURCE"]
    verify_ssl: object = True
    db_path: str = DEFAULT_DB_PATH
    backfill_subkey: str = DEFAULTS["BACKFILL_SUBKEY"]
    env_file: Optional[str] = None  # the file actually read, if any
    given: frozenset = frozenset()  # the settings a flag, the environment or the file set (the rest: defaults)
    warnings: list = field(default_factory=list)  # for the CLI to print (the library never prints)

    def require_hec(self) -> None:
        """Raise a one-line ConfigError naming what is missing and where it was looked for."""
        where = self.env_file or where_env_is_looked_for()
        if not self.hec_url:
            raise ConfigError(
                f"SPLUNK_HEC_URL is not set: set it in the environment or in credentials.env (looked in: {where})"
            )
        if not self.hec_token:
            raise ConfigError(
                f"SPLUNK_HEC_TOKEN is not set: set it in the environment or in credentials.env (looked in: {where})"
            )


_KEYS = {
    "hec_url": "SPLUNK_HEC_URL",
    "hec_token": "SPLUNK_HEC_TOKEN",
    "index": "SPLUNK_INDEX",
    "sourcetype": "SPLUNK_SOURCETYPE",
    "source": "SPLUNK_SOURCE",
    "verify_ssl": "SPLUNK_VERIFY_SSL",
    "db_path": "QUOTA_DB_PATH",
    "backfill_subkey": "BACKFILL_SUBKEY",
}


def _read_env(path: Path) -> dict:
    try:
        return dotenv_values(path)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file of NAME=value lines (credentials.env)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def load_settings(
    env_file: Optional[str] = None,
    overrides: Optional[Mapping[str, object]] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> Settings:
    """Resolve every setting: ``overrides`` (CLI flags, None = not given) > environment > file > default."""
    environ = os.environ if environ is None else environ
    file_values: dict = {}
    used_file = None
    if env_file:
        p = Path(env_file)
        if not p.is_file():
            raise ConfigError(f"--env-file {env_file}: no such file")
        file_values = _read_env(p)
        used_file = str(p)
    else:
        for p in env_file_candidates():
            try:
                if p.is_file():
                    file_values = _read_env(p)
                    used_file = str(p)
                    break
            except PermissionError:
                continue
    values = {}
    given = set()
    for attr, key in _KEYS.items():
        v = environ.get(key)
        if v is None or v == "":
            v = file_values.get(key)
        if v is None or v == "":
            v = DEFAULTS[key]
        else:
            given.add(attr)
        values[attr] = v
    for attr, v in (overrides or {}).items():
        if v is not None:
            values[attr] = v
            given.add(attr)
    if isinstance(values["verify_ssl"], str):
        values["verify_ssl"] = parse_bool_or_path(values["verify_ssl"])
    names = {f.name for f in fields(Settings)}
    s = Settings(**{k: v for k, v in values.items() if k in names})
    s.env_file = used_file
    s.given = frozenset(given)
    if used_file and file_values.get("SPLUNK_HEC_TOKEN"):
        try:
            mode = Path(used_file).stat().st_mode & 0o777
        except OSError:
            mode = 0
        if mode & 0o044:
            s.warnings.append(f"{used_file} holds the HEC token and is readable by other users "
                              f"(mode {mode:o}): chmod 600 {used_file}")
    return s
