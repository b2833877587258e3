"""What the scripts share: an argument parser whose errors are one line, as every other error is."""
from __future__ import annotations

import argparse
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), pointing at --help."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def number(kind, minimum, inclusive):
    """An argparse type: a number of ``kind`` above (or at) ``minimum``, refused in one line otherwise."""
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number")
        if v < minimum or (v == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"{text} must be {'at least' if inclusive else 'more than'} {minimum}")
        return v
    return parse


POSITIVE_INT = number(int, 1, True)
POSITIVE = number(float, 0, False)
NON_NEGATIVE = number(float, 0, True)
