"""A real Prefect server on loopback, and the end-to-end flow served on a schedule against it.

    embcache server                                   # UI on http://127.0.0.1:4200; Ctrl-C stops it
    export PREFECT_API_URL=http://127.0.0.1:4200/api  # in other shells: runs, tasks, logs show up there
    embcache schedule pipeline.toml --interval 600    # deployment embcache-run/pipeline, one run at a time

The server is `prefect server start` from this interpreter's environment, in its own
session (a Ctrl-C reaches only us; we stop it with one SIGTERM, then SIGKILL if it hangs).
A schedule is `pipeline_flow.serve(...)`: each run re-reads the config, ingests its sources
(globs pick up new files) and computes only what the store lacks.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, FlowError
from .network import base_url, free_port, is_loopback, port_in_use


class ServeError(FlowError):
    """The server cannot start or stop as asked, or a schedule has no server to serve against."""

    def __init__(self, reason: str, where: str = "prefect server"):
        super().__init__(where, reason)

    def __str__(self) -> str:       # the reason alone: it names the server, URL or flag itself
        return self.reason


class ServeOptionError(ServeError, ConfigError):
    """A server or schedule option that cannot be used as given (a usage error, exit 2)."""


class StopRequested(Exception):
    """SIGTERM or SIGHUP arrived (Ctrl-C arrives as KeyboardInterrupt)."""


def _raise_stop(signum, frame):
    raise StopRequested(signal.Signals(signum).name)


# ---------------------------------------------------------------------------- the server

@dataclass(frozen=True)
class ServerConfig:
    """Where `embcache server` listens and how long it waits for Prefect."""
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


def wait_healthy(api_url: str, proc: subprocess.Popen, timeout: float, output_hint: str = "") -> None:
    """Poll {api_url}/health until it answers 200; ServeError if `proc` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise ServeError(f"the Prefect server exited with code {code} before answering {output_hint}".rstrip())
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise ServeError(f"the Prefect server did not answer at {api_url}/health within {timeout:.0f} s")








def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if we die without stopping it (Linux), so no orphan server."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # 1 = PR_SET_PDEATHSIG


class PrefectServer:
    """`prefect server start` as a child process: start, wait until healthy, stop without orphans."""

    def __init__(self, config: ServerConfig = ServerConfig()):
        self.config = config
        self.url = base_url(config.host, config.port)      # the UI
        self.api_url = f"{self.url}/api"                    # what PREFECT_API_URL must say
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        c = self.config
        if not c.allow_remote and not is_loopback(c.host):
            raise ServeOptionError(f"{c.host} is not a loopback address: the Prefect server has no authentication, "
                             f"so anyone who can reach it could read logs and trigger runs. Pass --allow-remote "
                             f"to listen there anyway (on a trusted network only)")
        if port_in_use(c.host, c.port):
            raise ServeError(f"port {c.port} on {c.host} is in use (another Prefect server?): "
                             f"choose another with --port")
        # --no-prompt: never offer to rewrite the user's Prefect profile. Own session: a Ctrl-C in
        # the terminal reaches only us, and we stop the server with exactly one SIGTERM.
        cmd = [sys.executable, "-m", "prefect", "server", "start", "--no-prompt",
               "--host", c.host, "--port", str(c.port)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True,
                                     env=server_env(self.api_url), preexec_fn=_die_with_parent)

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


class TemporaryAPI(PrefectServer):
    """The temporary Prefect API of one `embcache` command, started before the stages import.

    Without PREFECT_API_URL, Prefect starts a temporary server at a process's first flow
    call: it imports the server app in-process, then starts uvicorn in a subprocess and
    waits for it (~12 s on 2 cores, after the ~8 s the stages take to import torch,
    transformers and Prefect). This starts the same server (Prefect's app factory under
    uvicorn, UI off, in ephemeral mode) as the command's first act, so the two overlap,
    and `ready()` points the flows at it. With PREFECT_API_URL set (the user's server, from
    the environment or the Prefect profile), it starts nothing, or stops what it started.
    """

    def __init__(self):
        super().__init__(ServerConfig(port=0, startup_timeout=180.0, stop_timeout=10.0))
        self._warm: threading.Thread | None = None
        self._warm_error: Exception | None = None

    def start(self) -> None:
        settings = sys.modules.get("prefect.settings")     # already imported: e.g. a test harness's server
        if os.environ.get("PREFECT_API_URL") or (settings is not None and settings.PREFECT_API_URL.value()):
            return
        self.config = ServerConfig(port=free_port(), startup_timeout=self.config.startup_timeout,
                                   stop_timeout=self.config.stop_timeout)
        self.url = base_url(self.config.host, self.config.port)
        self.api_url = f"{self.url}/api"
        import importlib.util
        prefect_dir = Path(importlib.util.find_spec("prefect").origin).parent.parent
        cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect_dir), "--factory",
               "prefect.server.api.server:create_app", "--host", self.config.host, "--port",
               str(self.config.port), "--log-level", "error", "--lifespan", "on"]
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1"}                  # what Prefect sets for its own temporary server
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        self._warm = threading.Thread(target=self._warm_up, name="embcache-temporary-api", daemon=True)
        self._warm.start()

    def _warm_up(self) -> None:
        """In the background: wait until it answers, then make the first API call (~0.5 s on a cold server)."""
        try:
            self.wait_healthy()
            with urllib.request.urlopen(f"{self.api_url}/admin/version", timeout=30) as r:
                r.read()
        except (ServeError, urllib.error.URLError, OSError) as e:
            self._warm_error = e

    @contextmanager
    def ready(self) -> Iterator[None]:
        """Wait until the server answers and make it this block's PREFECT_API_URL.

        Flow runs send it no heartbeats: they serve zombie detection, and a server that
        ends with the process can never see one (each flow run's heartbeat thread also
        costs up to 1 s when the run ends, as Prefect 3.8 joins it).
        """
        from prefect.settings import (PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_UI_URL,
                                      temporary_settings)
        if PREFECT_API_URL.value() or self.proc is None:     # e.g. a Prefect profile names a server
            self.stop()
            yield
            return
        self._warm.join()
        if isinstance(self._warm_error, ServeError):
            raise self._warm_error
        # no UI URL: Prefect prints no "View at <url>" links to a server that ends with the command
        with temporary_settings({PREFECT_API_URL: self.api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
                                 PREFECT_UI_URL: ""}):
            try:
                yield
            finally:
                _deliver_pending()

    def __enter__(self) -> "TemporaryAPI":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _deliver_pending(timeout: float = 10.0) -> None:
    """Send the logs and events Prefect still queues to the server, which stops next.

    Its workers send in batches from their own threads, and would otherwise drain at
    interpreter exit, after the server is gone: the last logs of a run ("Finished in
    state Completed()") lost, "--- Error logging to API ---" on stderr, and task runs the
    server learns of through events missing from its database.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=timeout)




def run_server(config: ServerConfig, announce) -> None:
    """Start the server, call announce(server) once it answers, stay until a signal; always stop it.

    Raises ServeError if it cannot start or exits on its own.
    """
    server = PrefectServer(config)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        server.start()
        server.wait_healthy()
        announce(server)
        code = server.proc.wait()
        raise ServeError(f"the Prefect server exited on its own with code {code} (its output is above)")
    except (KeyboardInterrupt, StopRequested):
        pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------------- the schedule

@dataclass(frozen=True)
class ScheduleConfig:
    """One served deployment of the end-to-end flow, `embcache-run/<name>`."""
    name: str                         # the deployment's name (runs of other names do not block these)
    config_path: str | None = None    # absolute TOML/YAML path, re-read by every run; None: embedded default
    store: str | None = None          # overrides the config's store (--store / $EMBCACHE_STORE given)
    cron: str | None = None           # a cron line, in UTC ("0 * * * *"); exactly one of cron / interval
    interval: float | None = None     # seconds between runs


def check_schedule(s: ScheduleConfig) -> None:
    """Fail before anything is served: exactly one valid schedule."""
    if (s.cron is None) == (s.interval is None):
        raise ServeOptionError("give exactly one of --cron \"...\" or --interval SECONDS")
    if s.interval is not None and not s.interval > 0:
        raise ServeOptionError(f"--interval must be a positive number of seconds, got {s.interval:g}")
    if s.cron is not None:
        from prefect.client.schemas.schedules import CronSchedule
        try:
            CronSchedule(cron=s.cron)
        except ValueError:
            raise ServeOptionError(f"not a valid cron line: {s.cron!r} (five fields: minute hour day month weekday)") from None


def api_url_of_server() -> str:
    """PREFECT_API_URL (environment or Prefect profile), checked to answer; else why to start one."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL
    url = PREFECT_API_URL.value()
    if not url:
        raise ServeOptionError("PREFECT_API_URL is not set, so there is no server to serve the schedule against "
                         "(an ephemeral one would vanish with this process). Start one with `embcache server` "
                         "in another shell, then `export PREFECT_API_URL=http://127.0.0.1:4200/api` "
                         "(the line it prints) here")
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise ServeError(f"no Prefect server answers at PREFECT_API_URL={url} ({problem}): "
                         f"is `embcache server` running?")
    return url


def deployment_parameters(s: ScheduleConfig) -> dict:
    """What every scheduled run of pipeline_flow is called with."""
    params = {}
    if s.config_path is not None:
        params["config_path"] = str(Path(s.config_path).resolve())
    if s.store is not None:        # a local path made absolute, as the UI shows it; a URL as given
        params["store"] = s.store if "://" in s.store else str(Path(s.store).resolve())
    return params


def serve_pipeline(s: ScheduleConfig) -> None:
    """Serve pipeline_flow as `embcache-run/<name>` until SIGINT / SIGTERM, then pause its schedule.

    One run at a time: the deployment's concurrency limit is 1 with CANCEL_NEW, so a run
    that comes due while the previous one still works is cancelled rather than queued (the
    next one picks up whatever arrived meanwhile: each run ingests every source afresh).
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.types.entrypoint import EntrypointType

    from .run import pipeline_flow
    pipeline_flow.serve(
        name=s.name, cron=s.cron, interval=s.interval, parameters=deployment_parameters(s),
        global_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        description="embcache end-to-end run: ingest the config's sources, compute only what is new.",
        tags=["embcache"], pause_on_shutdown=True,
        entrypoint_type=EntrypointType.MODULE_PATH)          # flows.run.pipeline_flow, importable anywhere
