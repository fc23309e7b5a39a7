"""The first run's notice: numba compiles the kernels on first use (cached after, once per
install), which can take a minute or more; say so, with a spinner, instead of sitting silent."""
from __future__ import annotations

import itertools
import sys
import threading
import time
from contextlib import contextmanager

MESSAGE = "compiling kernels (once per install)"


@contextmanager
def compiling_notice(delay: float = 1.0, stream=None):
    """Around code that may compile kernels: if it is still running after `delay` seconds (a
    warm numba cache loads in well under that), write MESSAGE to stderr, with a spinner when
    stderr is a terminal, and how long it took at the end."""
    out = sys.stderr if stream is None else stream
    done = threading.Event()
    t0 = time.perf_counter()

    def run() -> None:
        if done.wait(delay):
            return
        tty = getattr(out, "isatty", lambda: False)()
        if not tty:
            out.write(f"{MESSAGE} ...\n")
            out.flush()
            done.wait()
            return
        for ch in itertools.cycle("|/-\\"):
            out.write(f"\r{MESSAGE} {ch} {time.perf_counter() - t0:4.0f} s")
            out.flush()
            if done.wait(0.2):
                break
        out.write(f"\r{MESSAGE}: done in {time.perf_counter() - t0:.0f} s\n")
        out.flush()

    th = threading.Thread(target=run, name="hpte-compiling-notice", daemon=True)
    th.start()
    try:
        yield
    finally:
        done.set()
        th.join()
