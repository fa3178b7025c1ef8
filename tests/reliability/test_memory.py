"""Peak memory of each featurize stage does not grow with the corpus (issue 25).

The same stages run on 10⁴ and on 10⁵ documents, each in a fresh process
(tests/reliability/memory_child.py); a stage's figure is its peak RSS above what the
process held before it (imports, the model). What may grow with the corpus is the keys of
a run (tens of bytes per document: Arrow arrays and the key index); what must not is
anything per text or per word: texts, token lists, decoded shards of a whole table. The
margin is generous (64 MB plus a quarter): holding the 10⁵ texts' words as Python lists,
as the vocabulary once did, costs ~250 MB here.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline.conftest import WORDS

pytestmark = pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK),
                                reason="needs Linux's /proc/self/clear_refs to reset the peak RSS")
ROOT = Path(__file__).resolve().parents[2]


def write_corpus(folder: Path, n: int, per_file: int = 10_000) -> str:
    """n distinct documents of 12 words drawn from the tiny vocabulary's words, in JSONL files."""
    rng = random.Random(n)
    folder.mkdir(parents=True)
    for start in range(0, n, per_file):
        lines = (json.dumps({"text": " ".join(rng.choices(WORDS, k=12))}) for _ in range(min(per_file, n - start)))
        (folder / f"part-{start // per_file:04d}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(folder / "*.jsonl")


def stage_peaks(tmp_path: Path, n: int, model: str) -> dict[str, float]:
    corpus = write_corpus(tmp_path / f"corpus-{n}", n)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "tests.reliability.memory_child", str(tmp_path / f"store-{n}"),
                           corpus, model], capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_stage_peak_memory_does_not_grow_with_the_corpus(tmp_path, tiny_bert):
    small = stage_peaks(tmp_path, 10_000, tiny_bert)
    large = stage_peaks(tmp_path, 100_000, tiny_bert)
    print({stage: (small[stage], large[stage]) for stage in small})        # MB above each stage's start
    grew = {stage: (small[stage], large[stage]) for stage in small if large[stage] > 64 + 1.25 * small[stage]}
    assert not grew, f"peak MB at 10^4 and 10^5 documents: {grew}"
