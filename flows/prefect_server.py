"""A real Prefect server with its UI on loopback: `embcache prefect-server`.

    embcache prefect-server                                     # UI on http://127.0.0.1:4200; Ctrl-C stops it
    prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api   # then runs, tasks, logs show up there

The server is `prefect server start` from this interpreter's environment, in its own
session (a Ctrl-C reaches only us; we stop it with one SIGTERM, then SIGKILL if it hangs).
The advice for pointing commands at it is Prefect's own (`prefect config set
PREFECT_API_URL=...`, which `prefect server start` prints too): `api_url_advice`, the
one place every message takes it from.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from .errors import ConfigError, FlowError
from .network import base_url, is_loopback, port_in_use


class PrefectServerError(FlowError):
    """A Prefect server cannot start or stop as asked, or a command has no server to talk to."""

    def __init__(self, reason: str, where: str = "prefect server"):
        super().__init__(where, reason)

    def __str__(self) -> str:       # the reason alone: it names the server, URL or flag itself
        return self.reason


class PrefectServerOptionError(PrefectServerError, ConfigError):
    """A server option (or a missing PREFECT_API_URL) that cannot be used as given: a usage error, exit 2."""


class StopRequested(Exception):
    """SIGTERM or SIGHUP arrived (Ctrl-C arrives as KeyboardInterrupt)."""


def raise_stop(signum, frame):
    """A signal handler: SIGTERM / SIGHUP become StopRequested in the main thread."""
    raise StopRequested(signal.Signals(signum).name)


def api_url_advice(api_url: str) -> str:
    """How to point embcache (and Prefect) at a server: Prefect's own line, given one way everywhere.

    >>> api_url_advice("http://127.0.0.1:4200/api")
    'prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api'
    """
    return f"prefect config set PREFECT_API_URL={api_url}"


UNSET_ADVICE = "prefect config unset PREFECT_API_URL"   # back to a temporary server per command


@dataclass(frozen=True)
class PrefectServerConfig:
    """Where `embcache prefect-server` listens and how long it waits for Prefect."""
    host: str = "127.0.0.1"          # loopback only unless allow_remote: the server has no authentication
    port: int = 4200
    allow_remote: bool = False       # listen on a non-loopback address (anyone who reaches it can run flows)
    startup_timeout: float = 180.0   # seconds for /api/health to answer (a first start migrates the database)
    stop_timeout: float = 30.0       # seconds from SIGTERM to SIGKILL when stopping


# Prefect 3.8 reads the UI's API URL from either name; without one it takes PREFECT_API_URL
# or PREFECT_SERVER_API_HOST/PORT, never `prefect server start --port`.
UI_API_URL_VARS = ("PREFECT_SERVER_UI_API_URL", "PREFECT_UI_API_URL")


def server_env(api_url: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment, with the UI pointed at this server's own API.

    Otherwise the UI of a server on any port but 4200 calls http://127.0.0.1:4200/api (or
    whatever PREFECT_API_URL says). A UI API URL the user set (a proxy in front) is kept.

    >>> server_env("http://127.0.0.1:4321/api", {})
    {'PREFECT_SERVER_UI_API_URL': 'http://127.0.0.1:4321/api'}
    """
    env = dict(os.environ if environ is None else environ)
    if not any(env.get(name) for name in UI_API_URL_VARS):
        env[UI_API_URL_VARS[0]] = api_url
    return env


def answers(api_url: str, timeout: float = 2.0) -> bool:
    """True when {api_url}/health answers 200."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_healthy(api_url: str, proc: subprocess.Popen, timeout: float, output_hint: str = "") -> None:
    """Poll {api_url}/health until it answers 200; PrefectServerError if `proc` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise PrefectServerError(f"the Prefect server exited with code {code} before answering "
                                     f"{output_hint}".rstrip())
        if answers(api_url):
            return
        time.sleep(0.3)
    raise PrefectServerError(f"the Prefect server did not answer at {api_url}/health within {timeout:.0f} s")


def die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if we die without stopping it (Linux), so no orphan server."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # 1 = PR_SET_PDEATHSIG


class PrefectServer:
    """`prefect server start` as a child process: start, wait until healthy, stop without orphans."""

    def __init__(self, config: PrefectServerConfig = PrefectServerConfig()):
        self.config = config
        self.url = base_url(config.host, config.port)      # the UI
        self.api_url = f"{self.url}/api"                    # what PREFECT_API_URL must say
        self.proc: subprocess.Popen | None = None

    def start(self, output=None) -> None:
        """Start it; `output`: a file for its stdout and stderr (default: this process's own)."""
        c = self.config
        if not c.allow_remote and not is_loopback(c.host):
            raise PrefectServerOptionError(
                f"{c.host} is not a loopback address: the Prefect server has no authentication, so anyone "
                f"who can reach it could read logs and trigger runs. Pass --allow-remote to listen there "
                f"anyway (on a trusted network only)")
        if port_in_use(c.host, c.port):
            raise PrefectServerError(f"port {c.port} on {c.host} is in use (another Prefect server?): "
                                     f"choose another with --port")
        # --no-prompt: never offer to rewrite the user's Prefect profile. Own session: a Ctrl-C in
        # the terminal reaches only us, and we stop the server with exactly one SIGTERM.
        cmd = [sys.executable, "-m", "prefect", "server", "start", "--no-prompt",
               "--host", c.host, "--port", str(c.port)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True,
                                     env=server_env(self.api_url), preexec_fn=die_with_parent, stdout=output,
                                     stderr=None if output is None else subprocess.STDOUT)

    def wait_healthy(self) -> None:
        """Poll /api/health until it answers; fail early if the server exits first."""
        wait_healthy(self.api_url, self.proc, self.config.startup_timeout, "(its output is above)")

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL if it hangs (or if asked twice); then clear its process group."""
        if self.proc is None:
            return None
        try:
            if self.proc.poll() is None:
                self._signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=self.config.stop_timeout)
                except (subprocess.TimeoutExpired, KeyboardInterrupt, StopRequested):
                    self._signal(signal.SIGKILL)
                    self.proc.wait()
        finally:
            self._signal(signal.SIGKILL, group=True)          # anything it started and left behind
        return self.proc.returncode

    def _signal(self, sig: int, group: bool = False) -> None:
        try:
            if group:
                os.killpg(self.proc.pid, sig)                  # its session leader's pid is the group id
            else:
                self.proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass


def run_server(config: PrefectServerConfig, announce) -> None:
    """Start the server, call announce(server) once it answers, stay until a signal; always stop it.

    Raises PrefectServerError if it cannot start or exits on its own.
    """
    server = PrefectServer(config)
    previous = {sig: signal.signal(sig, raise_stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        server.start()
        server.wait_healthy()
        announce(server)
        code = server.proc.wait()
        raise PrefectServerError(f"the Prefect server exited on its own with code {code} (its output is above)")
    except (KeyboardInterrupt, StopRequested):
        pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def configured_api_url() -> str | None:
    """PREFECT_API_URL as Prefect reads it: the environment, else the active profile (imports Prefect)."""
    from prefect.settings import PREFECT_API_URL
    return PREFECT_API_URL.value() or None
