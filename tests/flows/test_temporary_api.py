"""flows.serve.TemporaryAPI: the Prefect server one `embcache` command starts for itself.

The real thing runs in a subprocess with its own PREFECT_HOME and no PREFECT_API_URL
(this test session's `prefect_engine` sets one, which TemporaryAPI rightly defers to):
a real uvicorn server starts, a real flow runs against it and completes there, and the
server is gone when the block ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from flows.serve import TemporaryAPI

ROOT = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent("""
    import json, sys
    from prefect import flow
    from flows.serve import TemporaryAPI

    @flow
    def probe() -> dict:
        from prefect.context import get_run_context
        from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY
        return {"api": PREFECT_API_URL.value(), "heartbeat": PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value(),
                "flow_run": str(get_run_context().flow_run.id)}

    with TemporaryAPI() as api:
        with api.ready():
            out = probe()
            from prefect.client.orchestration import get_client
            with get_client(sync_client=True) as client:
                out["state"] = client.read_flow_run(out["flow_run"]).state.type.value
        out.update(url=api.api_url, pid=api.proc.pid)
    out["returncode"] = api.proc.returncode
    out["client_started_its_own"] = "prefect.server.api.server" in sys.modules
    print(json.dumps(out))
""")


def test_a_command_runs_its_flows_on_the_server_it_started_and_stops_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_LOGGING_LEVEL="WARNING")
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["api"] == out["url"] and out["url"].startswith("http://127.0.0.1:")
    assert out["state"] == "COMPLETED"                # the run is recorded on that server
    assert out["heartbeat"] is None                   # no heartbeats to a server that ends with us
    assert not out["client_started_its_own"]          # Prefect's own temporary server never started
    assert out["returncode"] is not None              # stopped when the block ended...
    assert not Path(f"/proc/{out['pid']}").exists()   # ...and reaped


def test_it_starts_nothing_when_prefect_api_url_names_a_server(monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    with TemporaryAPI() as api:
        assert api.proc is None
