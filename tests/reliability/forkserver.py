"""Real `embcache` CLI processes without paying the imports per process: a fork server.

Importing the CLI's flows (Prefect, torch, transformers, datasets, numba) takes 10-20 s
on this 2-core machine, far more than the small runs the fault tests kill. So one
server process imports them once and forks one child per command; each child is a
separate OS process in its own session that runs `embcache.cli.main.app` with the command's
arguments, exactly what the `embcache` console script (`embcache.cli.main:run`) runs, and
exits with its exit code. Tests SIGKILL the children for real.

    server = ForkServer.start(env)                          # env: PREFECT_API_URL, ...
    child = server.spawn(["--store", "s", "ingest", "c", "corpus.txt"], log_path)
    child.kill()                                            # SIGKILL through a pidfd: never a reused pid
    assert child.wait(60) == -9

Protocol (run as a script): one JSON request per stdin line {"args", "log", "cwd"};
the reply is a line {"pid": N}. When a child ends, the server reaps it and writes its
status to `<log>.rc`: the exit code, or minus the signal number that killed it.
EOF on stdin: the server SIGKILLs the children still running and exits.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PR_SET_PDEATHSIG = 1


class ForkServerError(Exception):
    """The fork server did not start, or did not answer a request."""


class Child:
    """One forked `embcache` process (not our child: it is the server's), by pidfd."""

    def __init__(self, pid: int, log: Path, args: list[str]):
        self.pid, self.log, self.args = pid, log, args
        self.started = time.monotonic()
        self.ended: float | None = None
        self.pidfd = os.pidfd_open(pid)

    def alive(self) -> bool:
        return self.ended is None and not select.select([self.pidfd], [], [], 0)[0]

    def kill(self) -> bool:
        """SIGKILL; False if it had already exited."""
        if self.pidfd < 0:
            return False
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            return True
        except ProcessLookupError:
            return False

    def wait(self, timeout: float) -> int:
        """Its exit status: the exit code, or -signal if a signal ended it."""
        if self.pidfd >= 0 and not select.select([self.pidfd], [], [], timeout)[0]:
            raise TimeoutError(f"embcache {' '.join(self.args)} still running after {timeout:.0f} s\n"
                               f"{self.output()[-3000:]}")
        if self.ended is None:
            self.ended = time.monotonic()
        rc = Path(f"{self.log}.rc")
        deadline = time.monotonic() + 30
        while not rc.exists():                       # the server writes it once it has reaped the child
            if time.monotonic() > deadline:
                raise ForkServerError(f"no exit status for pid {self.pid} in {rc}")
            time.sleep(0.005)
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        return int(rc.read_text())

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class ForkServer:
    """Client side: start the server process, send it commands."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    @classmethod
    def launch(cls, env: dict[str, str]) -> "ForkServer":
        """Start the server's imports and return at once (ready() waits for them)."""
        proc = subprocess.Popen([sys.executable, __file__], cwd=REPO, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, start_new_session=True,
                                preexec_fn=lambda: ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL))
        return cls(proc)

    @classmethod
    def start(cls, env: dict[str, str], timeout: float = 300) -> "ForkServer":
        return cls.launch(env).ready(timeout)

    def ready(self, timeout: float = 300) -> "ForkServer":
        if not select.select([self.proc.stdout], [], [], timeout)[0] or self.proc.stdout.readline().strip() != "ready":
            self.proc.kill()
            raise ForkServerError(f"the fork server did not get ready within {timeout:.0f} s")
        return self

    def spawn(self, args: list[str], log: Path, cwd: Path | None = None) -> Child:
        req = {"args": [str(a) for a in args], "log": str(log), "cwd": str(cwd or REPO)}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        if not select.select([self.proc.stdout], [], [], 60)[0]:
            raise ForkServerError(f"the fork server did not answer {req}")
        return Child(json.loads(self.proc.stdout.readline())["pid"], Path(log), req["args"])

    def run(self, args: list[str], log: Path, timeout: float = 300) -> tuple[int, str]:
        """Run one command to its end: (exit status, output)."""
        child = self.spawn(args, log)
        code = child.wait(timeout)
        return code, child.output()

    def stop(self) -> None:
        self.proc.stdin.close()               # EOF: the server kills what still runs and exits
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------------- the server

def _serve() -> None:
    sys.path.insert(0, str(REPO))
    # Everything the pipeline commands import, once (the children inherit it).
    import embcache.cli.main  # noqa: F401  (registers every command)
    import embcache.flows.featurize_flows  # noqa: F401
    import embcache.flows.word2vec_flows  # noqa: F401
    import embcache.pipeline.model  # noqa: F401
    import embcache.storage.maintenance  # noqa: F401
    from transformers import AutoConfig, AutoModel, AutoTokenizer, BertModel, BertTokenizerFast  # noqa: F401
    logs: dict[int, str] = {}

    def reap(*_):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            log = logs.pop(pid, None)
            if log is not None:
                tmp = f"{log}.rc.tmp"
                Path(tmp).write_text(str(code))
                os.replace(tmp, f"{log}.rc")

    signal.signal(signal.SIGCHLD, reap)
    print("ready", flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        Path(f"{req['log']}.rc").unlink(missing_ok=True)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})   # record the pid before reaping it
        pid = os.fork()
        if pid == 0:
            _child(req)                        # never returns
        logs[pid] = req["log"]
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        print(json.dumps({"pid": pid}), flush=True)
    for pid in list(logs):                     # EOF: nothing we started outlives us
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _child(req: dict) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    os.setsid()
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)     # the server gone: so are we
    out = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.chdir(req["cwd"])
    sys.argv = ["embcache", *req["args"]]
    from embcache.cli.main import app
    try:
        app(args=req["args"], prog_name="embcache")   # what `embcache ARGS` runs; it exits itself
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:                      # noqa: BLE001 - an uncaught error: traceback, exit 1, like the script
        import traceback
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _serve()
