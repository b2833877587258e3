"""Exceptions the library raises; only a script's ``main()`` turns them into exit codes."""


class ToolkitError(Exception):
    """Base class: the message is one line a user can act on."""

    exit_code = 2


class ConfigError(ToolkitError):
    """A setting is missing or wrong (exit 2)."""


class InputError(ToolkitError):
    """An input file cannot be read (exit 2)."""
