"""`embcache server` and `embcache schedule`: a real Prefect server on a free loopback port,
the end-to-end flow served every 5 s over a watched folder, new files dropped in, scheduled
runs observed through the Prefect client, store rows that grow by exactly the new documents,
and a clean shutdown (both commands exit, no process left behind, the port free again).

The end-to-end test is marked slow (about a minute: a server start, then a few runs with
the tiny BERT) and runs in CI; `pytest -m "not slow"` skips it locally. It does not use the
session's `prefect_engine`: its subprocesses get their own PREFECT_HOME and PREFECT_API_URL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from embcache.cli.main import app
from embcache.flows.network import is_loopback
from embcache.flows.serve import (PrefectServer, ScheduleConfig, ServerConfig, deployment_parameters,
                                  server_env)
from embcache.storage import FeatureStore

EMBCACHE = str(Path(sys.executable).parent / "embcache")
runner = CliRunner()

FIRST = ["the cat sat on the mat", "market shares rise", "the team won the game"]
LATER = {"b.jsonl": ["new tax rate for the company", "the dog sits on the rug"],
         "c.jsonl": ["quarterly earnings beat analyst expectations", "people said the film was new",
                     "the minister won the election"]}


# ---------------------------------------------------------------------------- quick checks

def test_loopback_hosts():
    assert all(is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.0.2.1", "2001:db8::1"))


def test_server_refuses_a_non_loopback_host():
    r = runner.invoke(app, ["server", "--host", "0.0.0.0"])
    assert r.exit_code == 2, r.output
    assert "--allow-remote" in r.output and "no authentication" in r.output


def test_the_server_env_points_the_ui_at_its_own_api():
    env = server_env("http://127.0.0.1:4321/api", {"PREFECT_API_URL": "http://127.0.0.1:4200/api"})
    assert env["PREFECT_SERVER_UI_API_URL"] == "http://127.0.0.1:4321/api"
    behind_a_proxy = {"PREFECT_UI_API_URL": "https://prefect.example/api"}
    assert server_env("http://127.0.0.1:4321/api", behind_a_proxy) == behind_a_proxy     # the user's own is kept


@pytest.mark.slow
def test_the_ui_of_a_server_on_another_port_calls_that_port(tmp_path, monkeypatch):
    """The UI reads its API URL from /ui-settings; before the fix it said :4200 on every port."""
    for name in [k for k in os.environ if k.startswith("PREFECT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    port = free_port()
    server = PrefectServer(ServerConfig(port=port, startup_timeout=240, stop_timeout=15))
    try:
        server.start()
        server.wait_healthy()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui-settings", timeout=30) as r:
            settings = json.loads(r.read())
        assert settings["api_url"] == f"http://127.0.0.1:{port}/api", settings
    finally:
        server.stop()


def test_schedule_needs_a_server(tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings
    config = write_config(tmp_path / "cfg.toml", tmp_path / "store", tmp_path / "inbox", "unused")
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        r = runner.invoke(app, ["schedule", str(config), "--interval", "5"])
    assert r.exit_code == 2, r.output
    assert "PREFECT_API_URL is not set" in r.output and "embcache server" in r.output


@pytest.mark.parametrize("args, message", [([], "exactly one of"), (["--interval", "5", "--cron", "* * * * *"],
                                                                     "exactly one of"),
                                            (["--interval", "0"], "positive"), (["--cron", "every day"], "cron")])
def test_schedule_checks_its_schedule(tmp_path, args, message):
    config = write_config(tmp_path / "cfg.toml", tmp_path / "store", tmp_path / "inbox", "unused")
    r = runner.invoke(app, ["schedule", str(config), *args])
    assert r.exit_code == 2, r.output
    assert message in r.output


def test_deployment_parameters(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert deployment_parameters(ScheduleConfig("x", "cfg.toml", None, interval=5)) == \
        {"config_path": str(tmp_path / "cfg.toml")}                          # absolute: runs re-read it
    assert deployment_parameters(ScheduleConfig("x", None, "s3://b/p", interval=5)) == {"store": "s3://b/p"}
    assert deployment_parameters(ScheduleConfig("x", None, "st", interval=5)) == {"store": str(tmp_path / "st")}


# ---------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_schedule_picks_up_new_files(tmp_path, tiny_bert):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    inbox, store = tmp_path / "inbox", tmp_path / "store"
    inbox.mkdir()
    drop(inbox / "a.jsonl", FIRST)
    config = write_config(tmp_path / "cfg.toml", tmp_path / "config-store", inbox, tiny_bert)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    token = uuid.uuid4().hex                 # in the environment of every process we start, and theirs
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "EMBCACHE_STORE"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_RUNNER_POLL_FREQUENCY="2", PYTHONUNBUFFERED="1", EMBCACHE_TEST_TOKEN=token)
    server = Proc(["server", "--port", str(port)], env, tmp_path / "server.log")
    schedule = None
    try:
        wait_for(lambda: f"export PREFECT_API_URL={api}" in server.output(), 300,
                 "`embcache server` to print the export line", [server])
        schedule = Proc(["--store", str(store), "schedule", str(config), "--interval", "5", "--name", "inbox"],
                        {**env, "PREFECT_API_URL": api}, tmp_path / "schedule.log")
        procs = [server, schedule]
        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            deployment = wait_for(lambda: deployment_or_none(client, "embcache-run/inbox"), 180,
                                  "the deployment embcache-run/inbox", procs)
            assert deployment.parameters == {"config_path": str(config.resolve()), "store": str(store.resolve())}

            wait_for(lambda: completed_runs(client, deployment.id), 240, "a first completed scheduled run", procs)
            assert rows(store) == (len(FIRST), len(FIRST)), procs_tails(procs)

            dropped_at = datetime.now(timezone.utc)
            for name, texts in LATER.items():
                drop(inbox / name, texts)
            new = sum(len(t) for t in LATER.values())
            wait_for(lambda: [r for r in completed_runs(client, deployment.id) if r.start_time > dropped_at],
                     240, "a completed scheduled run that started after the new files arrived", procs)
            assert rows(store) == (len(FIRST) + new, len(FIRST) + new), procs_tails(procs)
            assert not (tmp_path / "config-store").exists()           # --store overrides the config's store

            runs = completed_runs(client, deployment.id)
            assert all(r.auto_scheduled for r in runs)
            spans = sorted((r.start_time, r.end_time) for r in runs)
            assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:])), f"overlapping runs: {spans}"
            computed = computed_per_stage(store)                       # every text computed exactly once
            assert computed == {"ingest": len(FIRST) + new, "featurize-bert": len(FIRST) + new}, computed

            schedule.stop(signal.SIGINT)                                # Ctrl-C: serving stops, schedule paused
            assert client.read_deployment(deployment.id).paused
        server.stop(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while (left := processes_with(token)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, f"processes left behind: {left}"
        assert free(port), f"port {port} still taken after the server stopped"
        assert "Prefect server stopped" in server.output(), server.tail()
    finally:
        for pid, _ in processes_with(token):                           # only if something above failed
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------- helpers

def write_config(path: Path, store: Path, inbox: Path, model: str) -> Path:
    path.write_text(f'''
store = "{store}"
model = "{model}"

[[corpora]]
name = "inbox"
sources = [{{path = "{inbox}/*.jsonl", format = "jsonl"}}]

[bert]
max_length = 16

[word2vec]
enabled = false

[head]
enabled = false

[static]
enabled = false

[report]
enabled = false
''')
    return path


def drop(path: Path, texts: list[str]) -> None:
    """Write a JSONL file under a name the glob does not match, then rename it in: never half-read."""
    part = path.with_name(path.name + ".part")
    part.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    os.replace(part, path)


def rows(store: Path) -> tuple[int, int]:
    """(documents in the corpus's current snapshot, rows of its bert_features table)."""
    fs = FeatureStore(str(store))
    features = fs.open("bert_features", fs.resolve_linked("inbox", "bert_features")).read()
    return fs.corpus("inbox").snapshot().rows, features.num_rows


def computed_per_stage(store: Path) -> dict[str, int]:
    """Texts computed, summed over every run record (runs/<run_id>.json) the schedule left."""
    total: dict[str, int] = {}
    for record in (store / "runs").glob("*.json"):
        for stage in json.loads(record.read_text())["stages"]:
            total[stage["stage"]] = total.get(stage["stage"], 0) + stage["computed"]
    return total


def deployment_or_none(client, name: str):
    from prefect.exceptions import ObjectNotFound
    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None


def completed_runs(client, deployment_id) -> list:
    from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterId, FlowRunFilter,
                                                FlowRunFilterState, FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    return client.read_flow_runs(                     # the sync client sends limit/sort even when None
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))),
        sort=FlowRunSort.START_TIME_ASC, limit=200)


class Proc:
    """An `embcache` subprocess in its own session, its output in a file (a pipe could fill up)."""

    def __init__(self, args: list[str], env: dict, log: Path):
        self.args, self.log = args, log
        with open(log, "wb") as out:
            self.popen = subprocess.Popen([EMBCACHE, *args], env=env, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, chars: int = 4000) -> str:
        return f"--- embcache {' '.join(self.args)} (exit {self.popen.poll()}), last output:\n{self.output()[-chars:]}"

    def stop(self, sig: int, timeout: float = 60) -> None:
        self.popen.send_signal(sig)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {timeout:.0f} s after {signal.Signals(sig).name}\n{self.tail()}")
        assert code == 0, self.tail()


def procs_tails(procs: list[Proc]) -> str:
    return "\n".join(p.tail() for p in procs)


def wait_for(check, timeout: float, what: str, procs: list[Proc]):
    """Poll check() until it returns something truthy; fail with the processes' output if they die."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if any(p.popen.poll() is not None for p in procs):
            pytest.fail(f"waiting for {what}: a process exited\n{procs_tails(procs)}")
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f} s for {what}\n{procs_tails(procs)}")
        time.sleep(1)


def processes_with(token: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose environment carries the token."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if f"EMBCACHE_TEST_TOKEN={token}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":                                       # a zombie is already dead
                    found.append((int(proc.name), (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except OSError:                                                # gone meanwhile, or not ours
            continue
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
