"""What the scripts share: an argument parser whose errors are one line, as every other error is."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from contextlib import contextmanager


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


@contextmanager
def stop_on_signals(prog: str):
    """SIGTERM (systemd, timeout(1), kill) and Ctrl-C while sending: the first sets the event it yields,
    so what is on its way to HEC is finished and nothing more is read (nothing left unconfirmed); a
    second one raises KeyboardInterrupt to stop at once. Outside the main thread: an event no signal sets."""
    stop = threading.Event()

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print(f"{prog}: stopping: what is on its way to HEC is finished first (Ctrl-C or SIGTERM again to stop"
              " at once)", file=sys.stderr)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
