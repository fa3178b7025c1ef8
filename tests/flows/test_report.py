"""The HTML report over a store built by the real flows (tiny BERT, real Prefect engine),
checked as text and rendered in headless Chromium (Debian's chromium + chromium-driver)."""

import json
import re
from html import escape
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embcache.cli.main import app
from embcache.stages.report import write_report
from embcache.storage import FeatureStore
from tests.flows.test_train import TOPICS, labelled_folder

pytestmark = pytest.mark.usefixtures("prefect_engine")
runner = CliRunner()
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
RUN_ID = "20261121T130501Z-1a2b3c"


def cli(store, *args, code=0):
    r = runner.invoke(app, ["--store", str(store), *args])
    assert r.exit_code == code, r.output
    return r


def run_record(run_id: str, documents: int, rejected: int, head_accuracy: float) -> dict:
    """A record of the shape flows/run.py writes (the numbers are the test's own)."""
    stage = dict(skipped=False, note="")
    return {"format": "embcache.run", "format_version": 1, "run_id": run_id, "flow_run_id": None,
            "started": "2026-11-21T13:05:01+00:00", "finished": "2026-11-21T13:06:13+00:00", "wall_seconds": 72.25,
            "status": "completed", "config": {"store": "test", "corpora": ["topics", "notes"]},
            "stages": [
                {**stage, "stage": "ingest", "corpus": "topics", "seconds": 1.5, "computed": 57, "cached": 3,
                 "unit": "texts", "note": "snapshot 000001, 1 rejected"},
                {**stage, "stage": "featurize-bert", "corpus": "topics", "seconds": 12.25, "computed": 41,
                 "cached": 19, "unit": "texts"},
                {**stage, "stage": "train-head", "corpus": "topics", "seconds": 0.75, "computed": 0, "cached": 1,
                 "unit": "models", "skipped": True, "note": "head topics unchanged"},
                {**stage, "stage": "featurize-bert", "corpus": "notes", "seconds": 2.0, "computed": 4,
                 "cached": 0, "unit": "texts"},
                {**stage, "stage": "report", "corpus": "*", "seconds": 3.0, "computed": 1, "cached": 0,
                 "unit": "reports"}],
            "summary": {"topics": {"documents": documents, "rejected": rejected, "head_accuracy": head_accuracy,
                                   "static_accuracy": None, "wordsim353": 0.3125, "analogy_accuracy": None}}}


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_bert):
    """A labelled corpus with every stage (one rejected row) and an unlabelled one with features only."""
    from gensim.models import KeyedVectors
    tmp = tmp_path_factory.mktemp("report")
    store = tmp / "store"
    src = labelled_folder(tmp / "topics")
    (src / "sport" / "empty.txt").write_text("")                                      # rejected: empty_text
    cli(store, "ingest", "topics", str(src), "--format", "folder", code=3)
    cli(store, "featurize", "bert", "topics", "--model", tiny_bert, "--max-length", "16")
    cli(store, "featurize", "word2vec", "topics", "--min-count", "1", "--subsample", "0")
    cli(store, "train", "word2vec", "topics", "--dim", "16", "--epochs", "5")
    cli(store, "train", "head", "topics", "--name", "topics", "--lr", "0.01")
    words = sorted({w for texts in TOPICS.values() for t in texts for w in t.split()})
    kv = KeyedVectors(16)
    kv.add_vectors(words, np.random.default_rng(0).normal(size=(len(words), 16)).astype(np.float32))
    kv.save_word2vec_format(str(tmp / "v.txt"))
    cli(store, "train", "static", "topics", "--vectors", str(tmp / "v.txt"), "--epochs", "5", "--name", "toy")
    cli(store, "compare", "topics", "--vectors", str(tmp / "v.txt"), "--trainable", "none", "--model", tiny_bert,
        "--max-length", "16", "--unfreeze-layers", "1")
    notes = tmp / "notes.txt"
    notes.write_text("a note on the market\nthe game tonight\nminister in town\nnew bank rate\n")
    cli(store, "ingest", "notes", str(notes))
    cli(store, "featurize", "bert", "notes", "--model", tiny_bert, "--max-length", "16")
    return store


def test_without_a_run_record_the_report_goes_to_latest(built):
    where = Path(write_report(str(built), corpora=["notes"]))
    assert where == built / "reports" / "latest" / "index.html"
    page = where.read_text()
    assert "No run record in runs/" in page and "Corpus notes" in page and "Corpus topics" not in page


def test_report_shows_what_the_store_holds(built):
    s = FeatureStore(built)
    snap = s.corpus("topics").snapshot()
    assert snap.stats["rejected"] == {"empty_text": 1}
    head = json.loads(s.models.get("head", "topics")[0]["head.json"])["metrics"]["test"]
    runs = built / "runs"
    runs.mkdir(exist_ok=True)
    (runs / "20261120T000000Z-000000.json").write_text(json.dumps(run_record("20261120T000000Z-000000", 1, 0, 0.0)))
    (runs / f"{RUN_ID}.json").write_text(json.dumps(run_record(RUN_ID, snap.rows, 1, head["accuracy"])))

    where = Path(write_report(str(built)))                                            # the newest run
    folder = built / "reports" / RUN_ID
    assert where == folder / "index.html"
    page = where.read_text()
    assert "<script" not in page and "<link" not in page and "http" not in page      # nothing from outside
    assert page.index("Corpus topics") < page.index("Corpus notes")                   # the run's corpora
    # documents and rejected rows
    assert "<h3>Tokenization</h3>" in page and "texts was cut: all fit in 16 tokens" in page
    assert f"<b>{snap.rows}</b> documents" in page and "<td>empty_text</td><td class=n>1</td>" in page
    # the run's stages, cache hits and timings
    assert "wall time <b>72.2 s</b>" in page or "wall time <b>72.3 s</b>" in page
    assert "<td>featurize-bert</td><td class=n>41</td><td class=n>19</td>" in page and "32%" in page
    assert "skipped: head topics unchanged" in page and "<td class=n>14.50</td>" in page   # topics' total seconds
    assert "Stages of the whole run" in page and "<td>report</td>" in page
    # word2vec: loss curve and neighbours from the stored vectors
    result = s.open("word_vectors", s.resolve_linked("topics", "word_vectors")).saved_spec()["meta"]["result"]
    assert "WordSim353 Spearman <b>0.3125</b>, analogy accuracy <b>—</b>" in page              # the run's scores
    assert f"Loss {result['loss_curve'][0]:.3f} → {result['loss_curve'][-1]:.3f}" in page
    from embcache.stages.report import sample_words
    from embcache.stages.word2vec_eval import keyed_vectors, neighbours
    kv = keyed_vectors(s, result["fingerprint"])
    first = sample_words(kv)[0]
    assert first not in ("the", "and", "a") and len(sample_words(kv)) == 5
    w, score = neighbours(kv, first, 8)[0]
    assert f"<td>{first}</td><td>{w} ({score:.2f})" in page
    # the head the user trained (not compare's helper head), its metrics and confusion matrix
    assert "Head <b>topics</b>" in page and f"accuracy <b>{head['accuracy']:.4f}</b>" in page
    assert f"macro-F1 <b>{head['macro_f1']:.4f}</b>" in page and "compare_head" in page
    for label, m in head["per_class"].items():
        assert (f"<td>{label}</td><td class=n>{m['precision']:.4f}</td><td class=n>{m['recall']:.4f}</td>"
                in page)
    # projections: by label, and one colour for the unlabelled corpus
    assert "60 of 60 documents" in page and "coloured by label" in page and "unlabelled: one colour" in page
    # comparison table and static classifiers
    compare = json.loads((built / "reports" / "compare-topics.json").read_text())
    for row in compare["rows"]:
        assert f"<td>{escape(row['approach'])}</td><td class=n>{row['accuracy']:.4f}</td>" in page
    assert "<td>toy</td>" in page and "<td>compare_static_none</td>" in page
    # what the unlabelled corpus lacks is said plainly
    notes = page[page.index("Corpus notes"):]
    for text in ("No word vectors trained", "No linear head", "No comparison table"):
        assert text in notes
    # every image is a PNG next to index.html, by a relative path
    images = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(images) == ["notes-projection.png", "topics-confusion.png", "topics-head-curve.png",
                              "topics-loss.png", "topics-projection.png"]
    for name in images:
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_says_how_many_texts_were_cut_and_what_to_do(tmp_path, tiny_bert):
    from embcache.flows.featurize_flows import featurize_bert_flow, ingest_flow
    from embcache.pipeline.ingest import Source
    from embcache.pipeline.tokenize import TokenizeConfig
    docs, store = tmp_path / "docs", str(tmp_path / "store")
    docs.mkdir()
    texts = ["the cat sat on the mat", "the cat sat", "the team won the game in the new year",
             " ".join(["the bank rate"] * 30)]                            # 90 words: over the model's 64
    for i, text in enumerate(texts):
        (docs / f"{i}.txt").write_text(text)
    ingest_flow("cut", [Source(str(docs), format="files")], store=store)
    r = featurize_bert_flow("cut", tiny_bert, TokenizeConfig(max_length=6), store=store)
    assert (r.truncated, r.texts, r.max_length) == (3, 4, 6)     # 8, 5, 11 and 92 tokens
    page = Path(write_report(store, corpora=["cut"])).read_text()
    assert "<b>3 of 4 texts (75 %) were cut at 6 tokens</b>" in page
    assert "raise <code>--max-length</code> up to the model's limit of 64 tokens" in page
    assert "<code>--long-documents windows</code>" in page
    featurize_bert_flow("cut", tiny_bert, TokenizeConfig(max_length=64), store=store)
    page = Path(write_report(store, corpora=["cut"])).read_text()
    assert "<b>1 of 4 texts (25 %) were cut at 64 tokens</b>" in page and "already the model's limit" in page


def test_cli_and_flow(built):
    r = cli(built, "report", "--run", RUN_ID, "--corpus", "notes")
    assert r.stdout.strip() == f"report: {built / 'reports' / RUN_ID / 'index.html'}"
    assert "Corpus topics" not in (built / "reports" / RUN_ID / "index.html").read_text()
    assert "no run record" in cli(built, "report", "--run", "20990101T000000Z-ffffff", code=4).output
    assert "no corpus nope" in cli(built, "report", "--corpus", "nope", code=4).output
    from embcache.flows.report_flows import report_flow
    assert report_flow(RUN_ID, store=str(built)) == str(built / "reports" / RUN_ID / "index.html")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent: `make browser` (as root) "
                                                   "installs Debian's chromium and chromium-driver")
def test_report_renders_in_headless_chromium(built, tmp_path):
    index = Path(write_report(str(built), RUN_ID))
    driver = chromium()
    try:
        driver.get(index.as_uri())
        assert driver.title == f"embcache report: {RUN_ID}"
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        assert len(images) == 5
        assert all(complete and width > 0 for _, complete, width in images), images
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1200, height + 100)
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent: `make browser` (as root) "
                                                   "installs Debian's chromium and chromium-driver")
def test_the_report_says_what_changed_since_the_last_run_and_shows_the_learning_curve(tmp_path, tiny_bert):
    """Two real runs (issue 31 item 6): between them 2 documents are added, 1 edited, 1 removed;
    the second run's report says so, says which stages recomputed and why the head kept its
    model (retrain policy), and draws the head's learning curve; read in headless Chromium."""
    from embcache.flows.run import pipeline_flow
    src = labelled_folder(tmp_path / "topics")
    config = {"model": tiny_bert, "corpora": [{"name": "topics", "sources": [{"path": str(src), "format": "folder"}]}],
              "bert": {"max_length": 16}, "word2vec": {"enabled": False}, "static": {"enabled": False},
              "head": {"retrain_threshold": 0.5}}
    store = str(tmp_path / "store")
    first = pipeline_flow(config=config, store=store)
    (src / "sport" / "new_1.txt").write_text("the new team won the cup")
    (src / "business" / "new_2.txt").write_text("bank earnings beat the market")
    (src / "politics" / "0_0.txt").write_text("the minister said the election was near")        # edited
    (src / "sport" / "1_1.txt").unlink()                                                         # removed
    second = pipeline_flow(config=config, store=store)
    assert second["summary"]["topics"]["snapshot"] != first["summary"]["topics"]["snapshot"]
    index = Path(second["report"])
    page = index.read_text()
    assert (f"Since run {first['run_id']} (snapshot {first['summary']['topics']['snapshot']} → "
            f"{second['summary']['topics']['snapshot']}): <b>2</b> documents added, <b>1</b> edited, <b>1</b> removed; "
            "61 documents now." in page)
    assert "<td>featurize-bert</td><td>recomputed 3 texts</td>" in page                 # 2 added + 1 edited
    kept = next(s for s in second["stages"] if s["stage"] == "train-head")
    assert kept["reason"].startswith('retrain policy "changed": 3 documents changed since training')  # max(3 in, 2 out)
    assert f"<td>train-head</td><td>kept its model</td><td>{escape(kept['reason'])}</td>" in page
    assert "First run of this corpus" in Path(first["report"]).read_text()
    assert "<h4>Learning curve</h4>" in page and '<img src="topics-head-curve.png"' in page
    driver = chromium()
    try:
        driver.get(index.as_uri())
        text = driver.find_element("tag name", "body").text
        assert "2 documents added, 1 edited, 1 removed" in text and "What changed since the last run" in text
        curve = driver.execute_script("const i = document.querySelector('img[src=\"topics-head-curve.png\"]');"
                                      "return [i.complete, i.naturalWidth, i.naturalHeight]")
        assert curve[0] and curve[1] > 300 and curve[2] > 200, curve
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
