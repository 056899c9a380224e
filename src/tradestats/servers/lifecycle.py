"""What every tradestats worker process does about its own life, whatever serves HTTP."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_master(master_pid: int) -> None:
    """Have the kernel SIGKILL this process when the master dies, however it dies.

    A worker left behind by a killed master would keep its port's connections and go on serving
    a server that no longer exists. SIGKILL, not SIGTERM: a wedged worker ignores SIGTERM, and the
    store is safe against a kill at any instruction. Linux only; elsewhere this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return
    # The master may have died between fork and prctl, before the kernel was told.
    if os.getppid() != master_pid:
        os._exit(0)
