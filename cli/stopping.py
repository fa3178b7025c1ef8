"""SIGTERM and Ctrl-C stop a flow-running command within a couple of seconds, whatever it is doing.

Python runs a signal's handler in the main thread, between bytecodes. While a flow runs,
Prefect's handler raises TerminationSignal there, marks the runs Crashed and ends the
process; but first it shuts the flow's task runner down, which waits for the shard
tasks running in its threads to finish (featurize-word2vec keeps one per core in
flight: seconds each at scale, so `embcache run` took more than 5 s to stop), and a long
C call in the main thread (a torch forward pass, an Arrow read) delays the handler itself.

`prompt_stop` sets a wakeup fd, which the interpreter writes the signal's number to the
moment it arrives, and a watchdog thread reads it: if the process has not ended `grace`
seconds later, the watchdog ends it, as SIGTERM's default action would have. Nothing
committed is lost (commits are atomic: the manifest lists a shard or it does not); the
shards in flight are abandoned as orphan files that `embcache gc` removes, and the next
run computes them again.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = {signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGINT: 130, signal.SIGHUP: 128 + signal.SIGHUP}
GRACE = 2.0        # seconds the command's own handlers get to stop cleanly (Prefect's takes ~0.3 s)


@contextmanager
def prompt_stop(grace: float = GRACE, before_exit=None) -> Iterator[None]:
    """For the block: a stop signal ends the process within `grace` seconds (exit 128 + signal, 130 for Ctrl-C).

    before_exit(): what must still happen when the watchdog ends the process (e.g. pause a
    schedule), called from the watchdog's thread; its errors are reported, not raised.
    """
    if threading.current_thread() is not threading.main_thread():
        yield                                   # wakeup fds belong to the main thread
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    watchdog = threading.Thread(target=_watch, args=(reader, grace, before_exit), name="embcache-prompt-stop",
                                daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        writer.close()                          # the watchdog's recv returns b"": it ends
        watchdog.join(timeout=1)
        reader.close()


def _watch(reader: socket.socket, grace: float, before_exit) -> None:
    try:
        while data := reader.recv(64):
            stops = [s for s in data if s in STOP_SIGNALS]
            if stops:
                break
        else:
            return                               # the block ended
    except OSError:
        return
    signum = stops[0]
    # Still running `grace` s later (a signal to stop a stopping process changes nothing)?
    if _closed_within(reader, grace):
        return
    name = signal.Signals(signum).name
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.write(2, f"\nstopped by {name} ({grace:g} s after it, without waiting for the shard tasks still "
                f"running: nothing committed is lost)\n".encode())
    if before_exit is not None:
        try:
            before_exit()
        except Exception as e:      # noqa: BLE001 - the process ends either way; say what did not happen
            os.write(2, f"while stopping: {type(e).__name__}: {e}\n".encode())
    os._exit(STOP_SIGNALS[signum])


def _closed_within(reader: socket.socket, seconds: float) -> bool:
    """True if the block ends (the writer closes) within `seconds`; other signals meanwhile are read and dropped."""
    import time
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        reader.settimeout(left)
        try:
            if not reader.recv(64):
                return True
        except TimeoutError:
            return False
        except OSError:
            return True
    return False
