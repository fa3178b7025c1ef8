"""flows.temporary_api.TemporaryAPI: the Prefect server one `embcache` command starts for itself.

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

from embcache.flows.temporary_api import TemporaryAPI

ROOT = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent("""
    import json, sys
    from prefect import flow, get_run_logger, task
    from embcache.flows.temporary_api import TemporaryAPI

    @task
    def step(x: int) -> int:
        return x + 1

    @flow
    def probe() -> dict:
        from prefect.context import get_run_context
        from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY
        get_run_logger().info("probe logged this last")
        return {"api": PREFECT_API_URL.value(), "heartbeat": PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value(),
                "flow_run": str(get_run_context().flow_run.id), "step": step(1)}

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

# A later command's server reads the same database (PREFECT_HOME): what the probe's run
# left there, its logs and task runs included, was delivered before its server stopped.
RECORDED = textwrap.dedent("""
    import json, sys
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import TaskRunSort
    from embcache.flows.temporary_api import TemporaryAPI

    with TemporaryAPI() as api, api.ready():
        with get_client(sync_client=True) as client:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[sys.argv[1]])), limit=200, offset=0)
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[sys.argv[1]])),
                                          sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=200)
    print(json.dumps({"logs": [l.message for l in logs], "tasks": [t.state.type.value for t in tasks]}))
""")


def test_a_command_runs_its_flows_on_the_server_it_started_and_stops_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_LOGGING_LEVEL="INFO")      # the run logs what it sends
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
    assert "Error logging to API" not in done.stderr  # nothing was left to send to a stopped server

    later = subprocess.run([sys.executable, "-c", RECORDED, out["flow_run"]], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=240)
    assert later.returncode == 0, later.stderr[-3000:]
    recorded = json.loads(later.stdout.strip().splitlines()[-1])
    assert "probe logged this last" in recorded["logs"]
    assert any(m.startswith("Finished in state Completed") for m in recorded["logs"])   # the run's last log
    assert recorded["tasks"] == ["COMPLETED"]


def test_it_starts_nothing_when_prefect_api_url_names_a_server(monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    with TemporaryAPI() as api:
        assert api.proc is None


def test_stage_commands_start_it_too(tmp_path):
    """`embcache ingest` (like every command that runs flows) runs on a TemporaryAPI, not Prefect's own.

    Its terminal shows no Prefect log unless -v asks for it, and never a "View at" link to
    the temporary server, which is gone when the command ends.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"))
    (tmp_path / "a.txt").write_text("one line\nanother line\n")
    ingest = [str(Path(sys.executable).parent / "embcache"), "--store", str(tmp_path / "store"),
              "ingest", "notes", str(tmp_path / "a.txt"), "--format", "lines"]
    done = subprocess.run([*ingest, "-v"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 documents" in done.stdout
    assert "Beginning flow run" in done.stderr and "View at" not in done.stderr
    assert "Starting temporary server" not in done.stderr          # Prefect's own never started
    assert "Error logging to API" not in done.stderr
    quiet = subprocess.run(ingest, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert "Flow run" not in quiet.stderr and "INFO" not in quiet.stderr, quiet.stderr


def test_a_server_named_by_prefect_api_url_that_does_not_answer_is_one_line(tmp_path):
    """PREFECT_API_URL naming a stopped server (`prefect config set` outlives it) used to end in
    Prefect's "Failed to reach API" traceback, reported as an internal error (exit 70)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL="http://127.0.0.1:9/api")
    (tmp_path / "a.txt").write_text("one line\n")
    done = subprocess.run([str(Path(sys.executable).parent / "embcache"), "--store", str(tmp_path / "store"),
                           "ingest", "notes", str(tmp_path / "a.txt"), "--format", "lines"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 5, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [(
        "error: no Prefect server answers at PREFECT_API_URL=http://127.0.0.1:9/api (set in the environment): "
        "start it (`embcache prefect-server`), or `prefect config unset PREFECT_API_URL` to let each command "
        "start a temporary one")], done.stderr
