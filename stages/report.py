"""The run report: one offline HTML page with PNGs, written into the store.

    reports/<run_id>/index.html          (reports/latest/ when the store has no run record)
    reports/<run_id>/<corpus>-loss.png, -confusion.png, -head-curve.png, -projection.png

Per corpus: documents and rejected rows (snapshot stats), what changed since the last run
(documents added, edited, removed; what each stage recomputed or kept, and why:
stages/report_changes.py), cache hits vs computed and timings per stage (runs/<run_id>.json),
the word2vec loss curve and nearest neighbours, the linear head's metrics, confusion matrix
and learning curve, a PCA projection of the document vectors coloured by label, and the
comparison table. Every section is optional: what the store lacks is said in one line.
No JavaScript, no external CSS: it opens offline. Figures: stages/report_figures.py; HTML
pieces: stages/report_html.py.

    >>> write_report("./embcache-store")              # doctest: +SKIP
    './embcache-store/reports/20261121T130501Z-1a2b3c/index.html'
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from ..storage import FeatureStore, NotFound
from ..storage.errors import CorruptShard, did_you_mean
from ..storage.manifest import utcnow
from ..storage.query import as_matrix

from . import run_record
from .heads import HEAD_KIND
from .report_changes import changes_section
from .report_figures import confusion_png, learning_curve_png, loss_curve_png, projection_png
from .report_html import CSS, Raw, esc, img, missing, num, table

SAMPLE_WORDS = 5          # frequent non-stopwords whose neighbours are shown
NEIGHBOURS = 8
PROJECTION_POINTS = 5000  # documents drawn (seeded) for the PCA plot; all of them when fewer
STATIC_KIND = "static"



# -- reading the store ----------------------------------------------------------
def model_json(store: FeatureStore, info, file: str) -> dict:
    """One JSON file of a saved model (checked against its listing), without loading its weights."""
    path = f"{store.models.dir(info.kind, info.name, info.version)}/{file}"
    data = store.fs.read_bytes(path)
    if hashlib.sha256(data).hexdigest() != info.files.get(file, {}).get("sha256"):
        raise CorruptShard(path, "model file does not match its listing")
    return json.loads(data)


def models_of(store: FeatureStore, kind: str, corpus: str) -> list:
    """Current versions of `kind` models trained on `corpus`, newest first."""
    found = [m for m in store.models.list(kind) if m.meta.get("corpus") == corpus]
    return sorted(found, key=lambda m: (m.created, m.name), reverse=True)


def sample_words(kv, n: int = SAMPLE_WORDS) -> list[str]:
    """The n most frequent vocabulary words that are alphabetic, 3+ letters and not stopwords."""
    from gensim.parsing.preprocessing import STOPWORDS
    return [w for w in kv.index_to_key if w.isalpha() and len(w) >= 3 and w not in STOPWORDS][:n]


# -- sections (each returns HTML; PNGs go into `pngs`) ---------------------------------
def documents_section(store: FeatureStore, corpus: str) -> str:
    try:
        snap = store.corpus(corpus).snapshot()
    except NotFound:
        return missing("No snapshot yet (embcache ingest).")
    stats = snap.stats or {}
    out = [f"<p>Snapshot {esc(snap.id)} ({esc(snap.created)}): <b>{snap.rows:,}</b> documents.</p>"]
    if "rejected" not in stats:
        return "".join(out) + missing("This snapshot records no ingest counts (no rejected-row tally).")
    rejected = stats["rejected"]
    if not rejected:
        out.append("<p>Rejected rows: none.</p>")
    else:
        rows = [[reason, n] for reason, n in sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))]
        out.append(f"<p>Rejected rows: <b>{sum(rejected.values()):,}</b>.</p>"
                   + table(["reason", "rows"], rows + [["total", sum(rejected.values())]], {1}))
    return "".join(out)


def percent(part: int, whole: int) -> str:
    """88 % (whole percents; under 1 % and not zero reads "<1 %")."""
    p = 100 * part / whole if whole else 0.0
    return "<1 %" if 0 < p < 1 else f"{p:.0f} %"


def truncation_section(store: FeatureStore, corpus: str) -> str:
    """How many texts tokenization cut (bert_tokens' `truncated` column), and what to do about it."""
    from .bert import truncation          # imports torch: only when a report is written
    try:
        cut = truncation(store, corpus)
    except NotFound:
        return missing("No BERT tokens for this corpus (embcache featurize bert).")
    n, m, at, limit = cut["truncated"], cut["texts"], cut["max_length"], cut["model_limit"]
    if "split" in cut:                    # long_documents="windows"
        s, w = cut["split"], cut["windows"] - m + cut["split"]
        out = (f"<p>{s:,} of {m:,} texts ({esc(percent(s, m))}) were split into {w:,} windows of {at:,} tokens; "
               f"each text's vector is the mean of its windows'.</p>")
        return out + (f"<p><b>{n:,} texts were cut after their first windows</b> (<code>--max-windows</code>)."
                      f"</p>" if n else "")
    if not n:
        return f"<p>None of the {m:,} texts was cut: all fit in {at:,} tokens.</p>"
    out = f"<p><b>{n:,} of {m:,} texts ({esc(percent(n, m))}) were cut at {at:,} tokens</b>: their vectors see only the start.</p>"
    chunk = ("encode every window and average their vectors (<code>--long-documents windows</code>, "
             "optionally <code>--max-windows K</code>)")
    if limit is not None and at < limit:
        return out + (f"<p>To keep more of each text, raise <code>--max-length</code> up to the model's limit of "
                      f"{limit:,} tokens (encoding gets slower with length), or {chunk}.</p>")
    return out + f"<p>{at:,} tokens is already the model's limit: to keep more of each text, {chunk}.</p>"


def stages_section(run: dict | None, corpus: str) -> str:
    if run is None:
        return missing("No run record (runs/*.json): cache hits and timings are not known for this store.")
    stages = [s for s in run.get("stages", []) if s.get("corpus") == corpus]
    if not stages:
        return missing(f"Run {run['run_id']} has no stage for this corpus.")
    return stage_table(stages)


def stage_table(stages: list[dict]) -> str:
    rows = []
    for s in stages:
        computed, cached = int(s.get("computed") or 0), int(s.get("cached") or 0)
        total = computed + cached
        bar = Raw("") if not total else Raw(
            f'<span class="bar" style="width:{80 * cached / total:.0f}px"></span>'
            f'<span class="bar c" style="width:{80 * computed / total:.0f}px"></span> {100 * cached / total:.0f}%')
        note = ("skipped" + (": " if s.get("note") else "") if s.get("skipped") else "") + (s.get("note") or "")
        if s.get("stale"):                 # a model its retrain policy kept: how far behind it is
            st = s["stale"]
            note += (f" · stale: {st['added']:,} documents added, {st['removed']:,} removed since snapshot "
                     f"{st['trained_snapshot']} ({st['documents']:,} now)")
        rows.append([s.get("stage", "?"), computed, cached, s.get("unit", ""), bar,
                     num(float(s.get("seconds") or 0.0), 2), note])
    rows.append(["total", "", "", "", "", num(sum(float(s.get("seconds") or 0.0) for s in stages), 2), ""])
    return table(["stage", "computed", "cached", "unit", "cache hits", "seconds", "note"], rows, {1, 2, 5})


def word2vec_section(store: FeatureStore, corpus: str, run: dict | None, pngs: dict) -> str:
    from .word2vec_eval import keyed_vectors, neighbours
    try:
        fp = store.resolve_linked(corpus, "word_vectors")
        result = store.open("word_vectors", fp).saved_spec()["meta"].get("result")
    except NotFound:
        return missing("No word vectors trained for this corpus (embcache train word2vec).")
    if not result:
        return missing(f"word_vectors@{fp[:12]} records no training result.")
    loss = result.get("loss_curve") or []
    out = [f"<p class=meta>word_vectors@{esc(fp[:12])}: {result['words']:,} words, {result['examples']:,} examples, "
           f"{num(result['seconds'], 1)} s, {result['pairs_per_s']:,.0f} pairs/s.</p>"]
    scores = ((run or {}).get("summary") or {}).get(corpus, {})
    if scores.get("wordsim353") is not None or scores.get("analogy_accuracy") is not None:
        out.append(f"<p>WordSim353 Spearman <b>{esc(num(scores.get('wordsim353')))}</b>, analogy accuracy "
                   f"<b>{esc(num(scores.get('analogy_accuracy')))}</b> (run {esc(run['run_id'])}).</p>")
    if loss:
        pngs[f"{corpus}-loss.png"] = loss_curve_png(loss, f"{corpus}: skip-gram loss")
        out.append(f"<p>Loss {num(loss[0], 3)} → {num(loss[-1], 3)} over {len(loss):,} batches.</p>"
                   + img(f"{corpus}-loss.png", f"word2vec loss curve of {corpus}"))
    else:
        out.append(missing("The training result has no loss curve."))
    kv = keyed_vectors(store, fp)
    words = sample_words(kv)
    if not words:
        return "".join(out) + missing("No frequent non-stopword in the vocabulary to show neighbours for.")
    rows = [[w, ", ".join(f"{n} ({s:.2f})" for n, s in neighbours(kv, w, NEIGHBOURS))] for w in words]
    return "".join(out) + "<h3>Nearest neighbours</h3>" + table(["word", f"{NEIGHBOURS} nearest (cosine)"], rows)


def learning_curve(meta: dict, corpus: str, name: str, pngs: dict) -> str:
    """The head's learning curve (its saved history), with what its training time covers."""
    h = meta.get("history") or {}
    if not h.get("train_loss"):
        return missing(f"Head {name} saved no training history: no learning curve.")
    best, n = h.get("best_epoch", -1), len(h["train_loss"])
    pngs[f"{corpus}-head-curve.png"] = learning_curve_png(h, f"head {name}: learning curve")
    timing = (f"training {num(h.get('seconds'), 2)} s (every epoch with its validation pass"
              + (f"; torch's one-time start-up, {num(h['startup_seconds'], 2)} s, apart" if h.get("startup_seconds")
                 else "") + ")")
    return (f"<h4>Learning curve</h4><p>{n:,} epochs, kept epoch {best + 1:,} (validation loss "
            f"{num(h['val_loss'][best], 4)}, accuracy {num(h['val_accuracy'][best], 4)})"
            f"{', stopped early' if h.get('stopped_early') else ''}; {esc(timing)}.</p>"
            + img(f"{corpus}-head-curve.png", f"learning curve of head {name}"))


def head_section(store: FeatureStore, corpus: str, pngs: dict) -> str:
    heads = models_of(store, HEAD_KIND, corpus)
    if not heads:
        return missing("No linear head trained on this corpus (embcache train head).")
    try:
        linked = store.resolve_linked(corpus, "bert_features")
    except NotFound:
        linked = None
    # the newest head on the corpus's current features, preferring the user's own over compare's helper
    head = max(heads, key=lambda h: (h.meta.get("feature_fingerprint") == linked,
                                     not h.name.startswith("compare_"), h.created, h.name))
    meta = model_json(store, head, "head.json")
    part = "test" if "test" in meta.get("metrics", {}) else "validation"
    m = meta.get("metrics", {}).get(part)
    if not m:
        return missing(f"Head {head.name} has no saved metrics.")
    out = [f"<p>Head <b>{esc(head.name)}</b> (version {esc(head.version[:12])}, {esc(head.created)}), "
           f"{part} split of {sum(c['support'] for c in m['per_class'].values()):,} documents: "
           f"accuracy <b>{num(m['accuracy'])}</b>, macro-F1 <b>{num(m['macro_f1'])}</b>.</p>"]
    out.append(table(["class", "precision", "recall", "F1", "support"],
                     [[c, num(v["precision"]), num(v["recall"]), num(v["f1"]), v["support"]]
                      for c, v in m["per_class"].items()], {1, 2, 3, 4}))
    pngs[f"{corpus}-confusion.png"] = confusion_png(m["confusion_matrix"], m["labels"], f"head {head.name}: {part}")
    out.append(img(f"{corpus}-confusion.png", f"confusion matrix of head {head.name}"))
    out.append(learning_curve(meta, corpus, head.name, pngs))
    others = [h for h in heads if h is not head]
    if others:
        out.append("<p class=meta>Other heads on this corpus: " + ", ".join(
            f"{esc(h.name)} (test accuracy {num(h.meta.get('test_accuracy'))})" for h in others) + ".</p>")
    return "".join(out)


def projection_section(store: FeatureStore, corpus: str, pngs: dict) -> str:
    from sklearn.decomposition import PCA
    try:
        fp = store.resolve_linked(corpus, "bert_features")
        docs = store.corpus_features(corpus, "bert_features", fp, columns=["vector"], missing="skip")
    except NotFound:
        return missing("No BERT features for this corpus (embcache featurize bert).")
    if docs.num_rows < 3:
        return missing(f"Only {docs.num_rows} documents have features: too few to project.")
    rows = np.arange(docs.num_rows)
    if len(rows) > PROJECTION_POINTS:
        rows = np.sort(np.random.default_rng(0).choice(rows, PROJECTION_POINTS, replace=False))
    x = as_matrix(docs["vector"].take(rows))                                 # (N, H)
    labels = docs["label"].take(rows).to_pylist() if "label" in docs.column_names else [None] * len(rows)
    pca = PCA(n_components=2, random_state=0)
    points = pca.fit_transform(x)                                            # (N, 2)
    var = pca.explained_variance_ratio_
    pngs[f"{corpus}-projection.png"] = projection_png(points, labels, f"{corpus}: bert_features, PCA")
    colour = "coloured by label" if any(lab is not None for lab in labels) else "unlabelled: one colour"
    return (f"<p>{len(rows):,} of {docs.num_rows:,} documents (bert_features@{esc(fp[:12])}), {colour}; "
            f"the two components explain {100 * var[0]:.1f}% and {100 * var[1]:.1f}% of the variance.</p>"
            + img(f"{corpus}-projection.png", f"PCA projection of {corpus}'s document vectors"))


def comparison_section(store: FeatureStore, corpus: str) -> str:
    out = []
    path = store.fs.path("reports", f"compare-{corpus}.json")
    if store.fs.exists(path):
        rep = json.loads(store.fs.read_bytes(path))
        rows = [[r["approach"], num(r["accuracy"]), num(r["macro_f1"]), num(r["train_seconds"], 2),
                 ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in r["inference_ms_per_doc"].items()),
                 r["cached"], r["recomputed"]] for r in rep["rows"]]
        out.append(f"<p>{rep['test_documents']:,} test documents (split seed {rep['split_seed']}).</p>"
                   + table(["approach", "accuracy", "macro-F1", "training s", "inference ms/doc", "cached",
                            "recomputed"], rows, {1, 2, 3}))
    else:
        out.append(missing(f"No comparison table for this corpus: run `embcache compare {corpus}`, or set "
                           "[compare] enabled = true in a run config (about 35 s on BBC news; off in the "
                           "default run)."))
    statics = models_of(store, STATIC_KIND, corpus)
    if statics:
        rows = []
        for s in statics:
            test = model_json(store, s, "static.json")["meta"].get("metrics", {}).get("test", {})
            rows.append([s.name, s.meta.get("vectors", ""), s.meta.get("trainable", ""),
                         num(test.get("accuracy")), num(test.get("macro_f1"))])
        out.append("<h3>Static-vector classifiers</h3>"
                   + table(["name", "vectors", "trainable rows", "test accuracy", "macro-F1"], rows, {3, 4}))
    return "".join(out)


def run_section(run: dict | None, corpora: list[str]) -> str:
    if run is None:
        return missing("No run record in runs/: this report shows what the store holds, without cache hits "
                       "or timings (embcache run writes one).")
    out = [f"<p>Run <b>{esc(run['run_id'])}</b>: {esc(run.get('status', '?'))}, started {esc(run.get('started'))}, "
           f"finished {esc(run.get('finished'))}, the flow's wall time <b>{esc(num(run.get('wall_seconds'), 1))} s</b> "
           "(without the command's start: imports, Prefect's server).</p>"]
    summary = run.get("summary") or {}
    if summary:
        keys = ["documents", "rejected", "head_accuracy", "static_accuracy", "wordsim353", "analogy_accuracy"]
        out.append(table(["corpus", *[k.replace("_", " ") for k in keys]],
                         [[c, *[num(s.get(k)) for k in keys]] for c, s in summary.items()], set(range(1, 7))))
    other = [s for s in run.get("stages", []) if s.get("corpus") not in corpora]
    if other:
        out.append("<h3>Stages of the whole run</h3>" + stage_table(other))
    if run.get("config"):
        out.append(f"<details><summary>config</summary><pre>{esc(json.dumps(run['config'], indent=1))}</pre>"
                   "</details>")
    return "".join(out)


def corpus_html(store: FeatureStore, corpus: str, run: dict | None, pngs: dict) -> str:
    parts = [("Documents", documents_section(store, corpus)),
             ("What changed since the last run", changes_section(store, run, corpus)),
             ("Tokenization", truncation_section(store, corpus)),
             ("Stages: cache hits and timings", stages_section(run, corpus)),
             ("word2vec", word2vec_section(store, corpus, run, pngs)),
             ("Linear head", head_section(store, corpus, pngs)),
             ("Document vectors", projection_section(store, corpus, pngs)),
             ("Comparison", comparison_section(store, corpus))]
    return (f'<h2 id="{esc(corpus)}">Corpus {esc(corpus)}</h2>'
            + "".join(f"<h3>{esc(title)}</h3>{body}" for title, body in parts))


# -- the report --------------------------------------------------------------------------
def write_report(store_root: str, run_id: str | None = None, corpora: list[str] | None = None) -> str:
    """Write reports/<run_id>/index.html (+ PNGs) into the store; return its path or URL."""
    store = FeatureStore(store_root)
    run = run_record.load(store, run_id)
    known = store.corpora()
    if corpora:
        unknown = [c for c in corpora if c not in known]
        if unknown:
            close = [f"{c!r} → {g!r}" for c in unknown if (g := did_you_mean(c, known))]
            raise NotFound(store.fs.path("corpora"), f"no corpus {', '.join(unknown)}"
                                                    + (f"; did you mean {', '.join(close)}?" if close else "")
                                                    + f" (known: {', '.join(known) or 'none'})")
    elif run is not None:
        named = [*(run.get("summary") or {}), *(s.get("corpus") for s in run.get("stages", []))]
        corpora = [c for c in dict.fromkeys(named) if c in known] or known
    else:
        corpora = known
    pngs: dict[str, bytes] = {}
    body = [run_section(run, corpora)] + [corpus_html(store, c, run, pngs) for c in corpora]
    if not corpora:
        body.append(missing("The store has no corpus yet (embcache ingest)."))
    title = f"embcache report: {run['run_id']}" if run else "embcache report"
    nav = "".join(f'<a href="#{esc(c)}">{esc(c)}</a>' for c in corpora)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head><body>'
            f"<h1>{esc(title)}</h1><p class=meta>store {esc(store.root)} · written {utcnow()}</p>"
            f"<nav>{nav}</nav><h2>Run</h2>{''.join(body)}</body></html>\n")
    folder = run["run_id"] if run else "latest"
    for name, data in pngs.items():                    # images first: the page never points at a missing one
        store.fs.write_atomic(store.fs.path("reports", folder, name), data)
    store.fs.write_atomic(store.fs.path("reports", folder, "index.html"), page.encode())
    return f"{store.root}/reports/{folder}/index.html"
