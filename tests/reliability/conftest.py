"""Fixtures of the fault suite: real `embcache` processes against one shared Prefect server.

A fresh process pays Prefect's ephemeral-server startup (10-20 s here) and the imports
of torch, transformers and datasets (10-20 s on this 2-core machine under load) before
it does anything. So the suite starts one `prefect server start` per session, on a free
loopback port with its own PREFECT_HOME, and a fork server (forkserver.py) that imports
the CLI once and forks one real process per `embcache` command.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


from .forkserver import Child, ForkServer
from .store_watch import run_watched


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrefectServer:
    """`prefect server start` (scheduler, late runs and UI off: nothing here is scheduled), in its own session."""

    def __init__(self, home: Path, log: Path):
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--no-prompt", "--host", "127.0.0.1",
                 "--port", str(self.port), "--no-scheduler", "--no-late-runs", "--no-ui"],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, timeout: float = 240) -> None:
        from embcache.flows.prefect_server import PrefectServerError, wait_healthy
        try:
            wait_healthy(self.api_url, self.proc, timeout)
        except PrefectServerError as e:
            raise RuntimeError(f"{e}:\n{self.log.read_text(errors='replace')[-3000:]}") from None

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)          # the server and the uvicorn process it starts
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


@dataclass
class EmbcacheCLI:
    """Runs `embcache ARGS` as real processes (forked by the fork server) against the shared Prefect server."""
    forks: ForkServer
    api_url: str
    logs: Path
    _n: int = 0

    def _log(self, args: list[str]) -> Path:
        self._n += 1
        words = [a for a in args if not a.startswith("-") and "/" not in a][:3]
        return self.logs / f"{self._n:04d}-{'-'.join(words)}.log"

    def spawn(self, store: Path, *args: str) -> Child:
        cmd = ["--store", str(store), *map(str, args)]
        return self.forks.spawn(cmd, self._log(list(args)))

    def run(self, store: Path, *args: str, code: int | None = 0, timeout: float = 300) -> tuple[int, str]:
        """Run to the end; check the exit code unless code is None. Returns (exit code, output)."""
        child = self.spawn(store, *args)
        rc = child.wait(timeout)
        out = child.output()
        if code is not None:
            assert rc == code, f"embcache {' '.join(child.args)} exited {rc}, expected {code}:\n{out[-4000:]}"
        return rc, out


@pytest.fixture(scope="session")
def embcache_cli(tmp_path_factory, request) -> EmbcacheCLI:
    """Real `embcache` processes with a shared Prefect server (started once per session)."""
    tmp = tmp_path_factory.mktemp("embcache-cli")
    server = PrefectServer(tmp / "prefect-server-home", tmp / "prefect-server.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "EMBCACHE_STORE"}
    env.update(PREFECT_API_URL=server.api_url, PREFECT_HOME=str(tmp / "prefect-client-home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    forks = ForkServer.launch(env)                  # imports while the server migrates its database
    try:
        request.getfixturevalue("tiny_bert")        # and while the tiny model is built here
        forks.ready()
        server.wait_healthy()
        logs = tmp / "logs"
        logs.mkdir()
        yield EmbcacheCLI(forks, server.api_url, logs)
    finally:
        forks.stop()
        server.stop()


# ---------------------------------------------------------------------------- the fault corpus

CORPUS = "faults"
BATCH_ROWS = 2048              # pipeline.ingest.iter_ingest's batch: the corpus spans two
FIRST_TEXTS, LATER_TEXTS = 450, 150
FLOW_STARTED = "Beginning flow run"   # what Prefect prints when a command's flow starts
ENCODE_SHARD_DOCS = 50         # 600 texts: 12 bert_features shards (examples: 256 per shard, 3 shards)


def write_corpus(path: Path) -> Path:
    """One document per line: 2,400 lines, 600 distinct texts, some empty or invalid UTF-8 (rejected).

    The first 2,048 lines (ingest's first batch) repeat 450 texts; the rest bring 150 new
    ones, so both batches commit documents and rejects. Words: a few the tiny BERT knows
    whole, the rest made of syllables (word pieces), Zipf-distributed for word2vec.
    """
    rng = random.Random(7)
    syllables = ["ka", "lo", "mi", "ten", "dra", "vu", "sel", "om", "ri", "pan", "zu", "et"]
    words = ["the", "market", "bank", "film", "music", "team", "game", "tax", "growth", "election"]
    words += ["".join(rng.choice(syllables) for _ in range(rng.randint(2, 3))) for _ in range(150)]
    words = list(dict.fromkeys(words))
    weights = [1 / (rank + 1) for rank in range(len(words))]

    def text() -> str:
        return " ".join(rng.choices(words, weights, k=rng.randint(5, 18)))

    texts = list(dict.fromkeys(text() for _ in range(FIRST_TEXTS + LATER_TEXTS + 50)))
    assert len(texts) >= FIRST_TEXTS + LATER_TEXTS
    lines: list[bytes] = []
    for i in range(2400):
        if i % 97 == 13:
            lines.append(b"")                                   # empty_text
        elif i % 211 == 17:
            lines.append(b"caf\xc3 broken \xff bytes")          # invalid_utf8
        elif i < BATCH_ROWS:
            lines.append(texts[i % FIRST_TEXTS].encode())
        else:
            lines.append(texts[FIRST_TEXTS + i % LATER_TEXTS].encode())
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@dataclass
class FaultRuns:
    """Clean, uninterrupted runs of each writing command on the fault corpus."""
    corpus: Path
    commands: dict[str, list[str]]     # ingest / bert / word2vec -> embcache arguments
    codes: dict[str, int]              # the exit code of a clean run (ingest: 3, rows were rejected)
    ingested: Path                     # clean store after ingest: the start of every bert/word2vec case
    clean: dict[str, Path]             # command -> clean store after it (bert, word2vec: on top of ingested)
    events: dict[str, dict]            # command -> store events of its clean run, counted
    lead: dict[str, float]             # command -> seconds from its flow's start to its first store event

    def fresh_store(self, command: str, path: Path) -> Path:
        """Where a run of `command` starts: an empty store for ingest, a copy of the ingested one otherwise."""
        if command == "ingest":
            path.mkdir(parents=True)
        else:
            shutil.copytree(self.ingested, path)
        return path


@pytest.fixture(scope="session")
def fault_runs(embcache_cli, tiny_bert, tmp_path_factory) -> FaultRuns:
    tmp = tmp_path_factory.mktemp("fault-runs")
    corpus = write_corpus(tmp / "corpus.txt")
    commands = {
        "ingest": ["ingest", CORPUS, str(corpus)],
        "bert": ["featurize", "bert", CORPUS, "--model", tiny_bert, "--max-length", "16",
                 "--shard-docs", str(ENCODE_SHARD_DOCS)],
        "word2vec": ["featurize", "word2vec", CORPUS, "--min-count", "2", "--window", "3", "--negatives", "3",
                     "--subsample", "1e-3", "--shard-docs", "256"],             # 3 examples commits to kill in
    }
    runs = FaultRuns(corpus, commands, {"ingest": 3, "bert": 0, "word2vec": 0}, tmp / "clean-ingest", {}, {}, {})
    for command in commands:
        root = runs.fresh_store(command, tmp / f"clean-{command}")
        w = run_watched(lambda: embcache_cli.spawn(root, *commands[command]), root, marks=(FLOW_STARTED,))
        assert w.code == runs.codes[command], f"clean {command} exited {w.code}; logs in {embcache_cli.logs}"
        runs.clean[command], runs.events[command] = root, dict(w.counts())
        runs.lead[command] = w.events[0][0] - w.marks[FLOW_STARTED]
    return runs
