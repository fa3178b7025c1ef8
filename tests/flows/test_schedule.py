"""`embcache prefect-server` and `embcache schedule`: a real Prefect server on a free loopback
port (one for the module), the end-to-end flow served every 5 s over a watched folder by a
warm process, new files dropped in, scheduled runs observed through the Prefect client,
store rows that grow by exactly the new documents, a line per run in the schedule's
terminal, schedules listed, paused, resumed and deleted through the console script, and a
clean shutdown (every command exits, no process left behind, the port free again).

The server tests are marked slow (about a minute and a half: a server start, two schedule
processes, a few runs with the tiny BERT) and run in CI; `pytest -m "not slow"` skips them
locally. They do not use the session's `prefect_engine`: their subprocesses get their own
PREFECT_HOME and PREFECT_API_URL.
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

from tests.run_configs import write_run_config
from typer.testing import CliRunner

from embcache.cli.main import app
from embcache.flows.network import is_loopback
from embcache.flows.prefect_server import api_url_advice, server_env
from embcache.flows.schedule import ScheduleConfig, deployment_parameters
from embcache.storage import FeatureStore

ROOT = Path(__file__).resolve().parents[2]
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


def test_prefect_server_refuses_a_non_loopback_host():
    r = runner.invoke(app, ["prefect-server", "--host", "0.0.0.0"])
    assert r.exit_code == 2, r.output
    assert "--allow-remote" in r.output and "no authentication" in r.output


def test_the_old_server_name_still_works_and_says_so():
    r = runner.invoke(app, ["server", "--host", "0.0.0.0"])
    assert r.exit_code == 2, r.output                       # the same command behind the old name
    assert "`embcache server` is now `embcache prefect-server`" in r.stderr
    import typer
    assert typer.main.get_command(app).commands["server"].hidden      # listed under its new name only


def test_the_server_env_points_the_ui_at_its_own_api():
    env = server_env("http://127.0.0.1:4321/api", {"PREFECT_API_URL": "http://127.0.0.1:4200/api"})
    assert env["PREFECT_SERVER_UI_API_URL"] == "http://127.0.0.1:4321/api"
    behind_a_proxy = {"PREFECT_UI_API_URL": "https://prefect.example/api"}
    assert server_env("http://127.0.0.1:4321/api", behind_a_proxy) == behind_a_proxy     # the user's own is kept


def test_schedule_needs_a_server(tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings
    config = write_config(tmp_path / "cfg.toml", tmp_path / "store", tmp_path / "inbox", "unused")
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        r = runner.invoke(app, ["schedule", str(config), "--interval", "5"])
        listed = runner.invoke(app, ["schedule", "list"])
    assert r.exit_code == 2, r.output
    assert "PREFECT_API_URL is not set" in r.output and "embcache prefect-server" in r.output
    assert api_url_advice("http://127.0.0.1:4200/api") in r.output      # Prefect's own line
    assert listed.exit_code == 2 and "PREFECT_API_URL is not set" in listed.output


def test_the_prefect_api_url_advice_is_given_one_way():
    """Prefect says `prefect config set PREFECT_API_URL=...`; we used to say `export ...` as well."""
    texts = [(ROOT / "README.md").read_text()]
    for command in (["prefect-server"], ["schedule", "start"], ["schedule"]):
        texts.append(runner.invoke(app, [*command, "--help"], terminal_width=400).stdout)
    for text in texts:
        assert "export PREFECT_API_URL" not in text
    assert "prefect config set PREFECT_API_URL=" in texts[0] and "prefect config set PREFECT_API_URL=" in texts[1]


@pytest.mark.parametrize("args, message", [([], "exactly one of"), (["--interval", "5", "--cron", "* * * * *"],
                                                                     "exactly one of"),
                                            (["--interval", "0"], "positive"), (["--cron", "every day"], "cron")])
def test_schedule_checks_its_schedule(tmp_path, args, message):
    """`embcache schedule CONFIG ...` (short for `schedule start CONFIG ...`) as the README writes it."""
    config = write_config(tmp_path / "cfg.toml", tmp_path / "store", tmp_path / "inbox", "unused")
    for command in (["schedule"], ["schedule", "start"]):
        r = runner.invoke(app, [*command, str(config), *args])
        assert r.exit_code == 2, r.output
        assert message in r.output


def test_an_unknown_schedule_command_is_not_taken_for_a_config():
    r = runner.invoke(app, ["schedule", "lsit"])
    assert r.exit_code == 2 and "No such command 'lsit'" in r.output, r.output


def test_deployment_parameters(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert deployment_parameters(ScheduleConfig("x", "cfg.toml", None, interval=5)) == \
        {"config_path": str(tmp_path / "cfg.toml")}                          # absolute: runs re-read it
    assert deployment_parameters(ScheduleConfig("x", None, "s3://b/p", interval=5)) == {"store": "s3://b/p"}
    assert deployment_parameters(ScheduleConfig("x", None, "st", interval=5)) == {"store": str(tmp_path / "st")}


# ---------------------------------------------------------------------------- a real server

class Server:
    """`embcache prefect-server` on a free port, with its own PREFECT_HOME; every process we start carries a token."""

    def __init__(self, tmp: Path):
        self.tmp, self.port = tmp, free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.token = uuid.uuid4().hex
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "EMBCACHE_STORE"}
        self.env.update(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                        PREFECT_RUNNER_POLL_FREQUENCY="2", PYTHONUNBUFFERED="1", EMBCACHE_TEST_TOKEN=self.token)
        self.proc = Proc(["prefect-server", "--port", str(self.port)], self.env, tmp / "server.log")

    def client_env(self) -> dict:
        return {**self.env, "PREFECT_API_URL": self.api}

    def embcache(self, *args: str) -> subprocess.CompletedProcess:
        """`embcache ARGS` against this server, through the console script."""
        return subprocess.run([EMBCACHE, *args], env=self.client_env(), capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prefect-server")
    s = Server(tmp)
    try:
        # Prefect's own banner gives the same line before the server answers: ours follows /health
        wait_for(lambda: "Prefect server ready" in s.proc.output(), 300, "`embcache prefect-server` to answer",
                 [s.proc])
        assert f"    {api_url_advice(s.api)}" in s.proc.output().split("Prefect server ready", 1)[1]
        yield s
    finally:
        for pid, _ in processes_with(s.token):                      # only if a test failed before stopping them
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_the_ui_of_a_server_on_another_port_calls_that_port(server):
    """The UI reads its API URL from /ui-settings; before the fix it said :4200 on every port."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/ui-settings", timeout=30) as r:
        settings = json.loads(r.read())
    assert settings["api_url"] == server.api, settings


@pytest.mark.slow
def test_schedules_run_warm_and_can_be_managed(server, tmp_path, tiny_bert):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    inbox, store = tmp_path / "inbox", tmp_path / "store"
    inbox.mkdir()
    drop(inbox / "a.jsonl", FIRST)
    config = write_config(tmp_path / "cfg.toml", tmp_path / "config-store", inbox, tiny_bert)
    # a second schedule, served at the same time, whose cron never comes due here: deleted below
    other = write_config(tmp_path / "other.toml", tmp_path / "other-store", tmp_path / "nothing", tiny_bert)
    schedule = Proc(["--store", str(store), "schedule", str(config), "--interval", "5", "--name", "inbox"],
                    server.client_env(), tmp_path / "schedule.log")
    later = Proc(["schedule", "start", str(other), "--cron", "0 0 1 1 *", "--name", "later"],
                 server.client_env(), tmp_path / "later.log")
    procs = [server.proc, schedule, later]
    children: set[str] = set()          # processes the schedule started: Prefect's Runner made one per run

    def watching(check):
        def watched():
            children.update(children_of(schedule.popen.pid))
            return check()
        return watched

    with temporary_settings({PREFECT_API_URL: server.api}), get_client(sync_client=True) as client:
        deployment = wait_for(lambda: deployment_or_none(client, "embcache-run/inbox"), 180,
                              "the deployment embcache-run/inbox", procs)
        assert deployment.parameters == {"config_path": str(config.resolve()), "store": str(store.resolve())}

        wait_for(watching(lambda: completed_runs(client, deployment.id)), 240, "a first completed run", procs)
        assert rows(store) == (len(FIRST), len(FIRST)), procs_tails(procs)

        for name, texts in LATER.items():
            drop(inbox / name, texts)
        dropped_at = datetime.now(timezone.utc)                    # a run that starts later sees both files
        new = sum(len(t) for t in LATER.values())
        wait_for(watching(lambda: [r for r in completed_runs(client, deployment.id) if r.start_time > dropped_at]),
                 240, "a completed scheduled run that started after the new files arrived", procs)
        assert rows(store) == (len(FIRST) + new, len(FIRST) + new), procs_tails(procs)
        assert not (tmp_path / "config-store").exists()           # --store overrides the config's store
        assert not children, f"the schedule started processes for its runs: {children}"

        # a line per run in the schedule's terminal: when, what it computed, how long
        line = wait_for(lambda: next((l for l in schedule.output().splitlines() if f"ingest {new} texts" in l), None),
                        30, "the line of the run that computed the new files", procs)
        names = {r.name for r in completed_runs(client, deployment.id)}
        assert line.split()[1] in names and " completed in " in line, line
        assert f"featurize-bert {new} texts" in line, line

        runs = completed_runs(client, deployment.id)
        assert all(r.auto_scheduled for r in runs)
        spans = sorted((r.start_time, r.end_time) for r in runs)
        assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:])), f"overlapping runs: {spans}"
        computed = computed_per_stage(store)                       # every text computed exactly once
        assert computed == {"ingest": len(FIRST) + new, "featurize-bert": len(FIRST) + new}, computed

        # manage them through the console script
        listed = [json.loads(l) for l in server.embcache("schedule", "list", "--json").stdout.splitlines()]
        by_name = {s["name"]: s for s in listed}
        assert set(by_name) == {"inbox", "later"}, listed
        assert by_name["inbox"]["when"] == "every 5 s" and not by_name["inbox"]["paused"] and by_name["inbox"]["served"]
        assert by_name["inbox"]["config_path"] == str(config.resolve())
        assert by_name["later"]["when"] == "cron '0 0 1 1 *' (UTC)"

        paused = server.embcache("schedule", "pause", "inbox")
        assert paused.returncode == 0 and "embcache-run/inbox paused" in paused.stdout, paused.stderr
        assert client.read_deployment(deployment.id).paused
        wait_for(lambda: "schedule paused" in schedule.output(), 30, "the schedule to say it is paused", procs)
        resumed = server.embcache("schedule", "resume", "embcache-run/inbox")
        assert resumed.returncode == 0 and not client.read_deployment(deployment.id).paused, resumed.stderr
        wait_for(lambda: "schedule resumed" in schedule.output(), 30, "the schedule to say it is resumed", procs)
        unknown = server.embcache("schedule", "pause", "nope")
        assert unknown.returncode == 2 and "no schedule named 'nope'" in unknown.stderr, unknown.stderr

        deleted = server.embcache("schedule", "delete", "later")
        assert deleted.returncode == 0, deleted.stderr
        later.wait_exit(30)                                        # the process serving it stops by itself
        assert "was deleted: stopped serving" in later.output(), later.tail()
        assert deployment_or_none(client, "embcache-run/later") is None

        schedule.stop(signal.SIGTERM, timeout=10)                  # stops promptly, pauses, and says nothing odd
        assert client.read_deployment(deployment.id).paused
        assert "RuntimeWarning" not in schedule.output() and "never awaited" not in schedule.output(), schedule.tail()
        assert "Traceback" not in schedule.output(), schedule.tail()


@pytest.mark.slow
def test_the_server_stops_cleanly(server):
    """Last in the module: SIGTERM stops the server; nothing of ours is left, the port is free again."""
    server.proc.stop(signal.SIGTERM)
    deadline = time.monotonic() + 30
    while (left := processes_with(server.token)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes left behind: {left}"
    assert free(server.port), f"port {server.port} still taken after the server stopped"
    assert "Prefect server stopped" in server.proc.output(), server.proc.tail()


# ---------------------------------------------------------------------------- helpers

def write_config(path: Path, store: Path, inbox: Path, model: str) -> Path:
    return write_run_config(path, store=store, model=model, corpus="inbox",
                            sources=[{"path": f"{inbox}/*.jsonl", "format": "jsonl"}])


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
        self.wait_exit(timeout, f"after {signal.Signals(sig).name}")

    def wait_exit(self, timeout: float, why: str = "") -> None:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {timeout:.0f} s {why}\n{self.tail()}")
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


def children_of(pid: int) -> set[str]:
    """Command lines of the live processes whose parent is `pid`."""
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) == pid and stat[0] != "Z":
                found.add((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
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
