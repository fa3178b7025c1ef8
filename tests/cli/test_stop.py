"""SIGTERM stops `embcache run` promptly, even while shard tasks run in the flow's threads.

The console script in a subprocess, against the session's real Prefect server (a fresh
PREFECT_HOME would cost a database migration), the tiny BERT: one
long document whose word2vec examples (40 independently sampled copies) take several
seconds in one shard task, on a thread of featurize-word2vec's pool. SIGTERM lands while
that task runs. Prefect's handler used to wait for the task before the process could
end (more than 5 s at scale); now the process is gone within the grace period, and the
store it leaves verifies.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.run_configs import write_run_config

EMBCACHE = str(Path(sys.executable).parent / "embcache")


@pytest.mark.slow
def test_sigterm_stops_a_run_mid_stage_within_seconds(tmp_path, tiny_bert, prefect_engine):
    from prefect.settings import PREFECT_API_URL
    rng = random.Random(0)
    words = [f"w{i}" for i in range(400)]
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "a.jsonl").write_text(json.dumps({"text": " ".join(rng.choices(words, k=20_000))}) + "\n")
    config = tmp_path / "run.toml"
    write_run_config(config, store=tmp_path / "store", model=tiny_bert, corpus="long",
                     sources=[{"path": f"{tmp_path / 'inbox'}/*.jsonl", "format": "jsonl"}],
                     word2vec={"enabled": True, "evaluate": False, "epochs_of_examples": 40, "draws": "stored", "min_count": 1})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "EMBCACHE_STORE"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=PREFECT_API_URL.value())
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([EMBCACHE, "run", str(config), "-v"], env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "examples: 0 of 1 documents cached" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "featurize-word2vec never started its examples"
            time.sleep(0.2)
        time.sleep(1.0)                                  # the shard task is running on a pool thread
        assert proc.poll() is None, "the examples finished before SIGTERM: make the document longer"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    output = log.read_text(errors="replace")
    assert took < 5, f"took {took:.1f} s to stop after SIGTERM\n{output[-3000:]}"
    assert code in (-signal.SIGTERM, 128 + signal.SIGTERM), (code, output[-3000:])
    assert "never awaited" not in output and "Traceback" not in output, output[-3000:]
    verify = subprocess.run([EMBCACHE, "--store", str(tmp_path / "store"), "verify"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr         # what was committed is intact
