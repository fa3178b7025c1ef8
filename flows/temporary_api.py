"""The temporary Prefect API of one `embcache` command (or one `embcache.run` call).

    with TemporaryAPI() as api:          # starts the server now, in a subprocess
        import_the_flows()               # ~8 s of torch, transformers and Prefect meanwhile
        with api.ready():                # waits for it; the block's PREFECT_API_URL
            some_flow()

Every command that runs flows enters it (cli/app.py `prefect_api`, embcache/running.py).
With PREFECT_API_URL set (the user's server, from the environment or the Prefect
profile) it starts nothing, or stops what it started, and checks that server answers.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .network import base_url, free_port
from .prefect_server import (UNSET_ADVICE, PrefectServer, PrefectServerConfig, PrefectServerError, answers,
                             die_with_parent)


class TemporaryAPI(PrefectServer):
    """The temporary Prefect API of one `embcache` command, started before the stages import.

    Without PREFECT_API_URL, Prefect starts a temporary server at a process's first flow
    call: it imports the server app in-process, then starts uvicorn in a subprocess and
    waits for it (~12 s on 2 cores, after the ~8 s the stages take to import torch,
    transformers and Prefect). This starts the same server (Prefect's app factory under
    uvicorn, UI off, in ephemeral mode) as the command's first act, so the two overlap,
    and `ready()` points the flows at it.
    """

    def __init__(self):
        super().__init__(PrefectServerConfig(port=0, startup_timeout=180.0, stop_timeout=10.0))
        self._warm: threading.Thread | None = None
        self._warm_error: Exception | None = None

    def start(self) -> None:
        settings = sys.modules.get("prefect.settings")     # already imported: e.g. a test harness's server
        if os.environ.get("PREFECT_API_URL") or (settings is not None and settings.PREFECT_API_URL.value()):
            return
        self.config = PrefectServerConfig(port=free_port(), startup_timeout=self.config.startup_timeout,
                                          stop_timeout=self.config.stop_timeout)
        self.url = base_url(self.config.host, self.config.port)
        self.api_url = f"{self.url}/api"
        prefect_dir = Path(importlib.util.find_spec("prefect").origin).parent.parent
        cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect_dir), "--factory",
               "prefect.server.api.server:create_app", "--host", self.config.host, "--port",
               str(self.config.port), "--log-level", "error", "--lifespan", "on"]
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1"}                  # what Prefect sets for its own temporary server
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=die_with_parent)
        self._warm = threading.Thread(target=self._warm_up, name="embcache-temporary-api", daemon=True)
        self._warm.start()

    def _warm_up(self) -> None:
        """In the background: wait until it answers, then make the first API call (~0.5 s on a cold server)."""
        try:
            self.wait_healthy()
            with urllib.request.urlopen(f"{self.api_url}/admin/version", timeout=30) as r:
                r.read()
        except (PrefectServerError, urllib.error.URLError, OSError) as e:
            self._warm_error = e

    @contextmanager
    def ready(self) -> Iterator[None]:
        """Wait until the server answers and make it this block's PREFECT_API_URL.

        Flow runs send it no heartbeats: they serve zombie detection, and a server that
        ends with the process can never see one (each flow run's heartbeat thread also
        costs up to 1 s when the run ends, as Prefect 3.8 joins it).

        With PREFECT_API_URL set, that server must answer: PrefectServerError (exit 5)
        otherwise, in one line, instead of Prefect's "Failed to reach API" traceback.
        """
        from prefect.settings import (PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_UI_URL,
                                      temporary_settings)
        if PREFECT_API_URL.value() or self.proc is None:     # e.g. a Prefect profile names a server
            self.stop()
            check_answers(PREFECT_API_URL.value())
            yield
            return
        self._warm.join()
        if isinstance(self._warm_error, PrefectServerError):
            raise self._warm_error
        # no UI URL: Prefect prints no "View at <url>" links to a server that ends with the command
        with temporary_settings({PREFECT_API_URL: self.api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
                                 PREFECT_UI_URL: ""}):
            try:
                yield
            finally:
                deliver_pending()

    def __enter__(self) -> "TemporaryAPI":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def check_answers(api_url: str | None) -> None:
    """PrefectServerError unless the server at `api_url` (the user's PREFECT_API_URL) answers /health."""
    if api_url and not answers(api_url, timeout=5.0):
        where = "the environment" if os.environ.get("PREFECT_API_URL") else "the Prefect profile"
        raise PrefectServerError(f"no Prefect server answers at PREFECT_API_URL={api_url} (set in {where}): "
                                 f"start it (`embcache prefect-server`), or `{UNSET_ADVICE}` to let each "
                                 f"command start a temporary one")


def deliver_pending(timeout: float = 10.0) -> None:
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
