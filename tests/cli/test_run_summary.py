"""Issue 31 item 3: `embcache run` printed "completed in 3.4 s" for a process that took 12.6 s
(the figure was the flow's alone). The summary now times the whole command from its
process's start and names the flow's share; through the real console script, a run that
starts Prefect and one that finds nothing changed (no Prefect)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

EMBCACHE = str(Path(sys.executable).with_name("embcache"))      # the console script
LINE = re.compile(r"embcache run (\S+): completed in ([0-9.]+) s \(this command, from process start; "
                  r"the run's flow ([0-9.]+) s\)")


def run_cli(cwd: Path, *args: str) -> tuple[str, float]:
    start = time.monotonic()
    r = subprocess.run([EMBCACHE, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    took = time.monotonic() - start
    assert r.returncode == 0, r.stderr
    return r.stdout, took


def test_the_summary_times_the_whole_command(tmp_path, tiny_bert):
    (tmp_path / "notes.txt").write_text("the market rose\nthe team won\nrates fell again\n")
    (tmp_path / "run.toml").write_text(
        f'store = "s"\nmodel = "{tiny_bert}"\n[[corpora]]\nname = "notes"\nsources = ["notes.txt"]\n'
        "[bert]\nmax_length = 16\n[word2vec]\nenabled = false\n[report]\nenabled = false\n")
    for attempt in ("runs the flow", "nothing changed"):
        stdout, took = run_cli(tmp_path, "run", "run.toml")
        found = LINE.search(stdout)
        assert found, stdout
        command, flow = float(found[2]), float(found[3])
        assert flow <= command <= took + 0.1, (attempt, command, flow, took)   # the process, not the flow alone
        assert command >= 0.5 * took, (attempt, command, took)                  # most of what the caller waited
    assert "computed now: 0" in stdout                                        # the second: nothing to do
