"""The run report: one offline HTML page with PNGs, written into the store.

    reports/<run_id>/index.html          (reports/latest/ when the store has no run record)
    reports/<run_id>/<corpus>-loss.png, <corpus>-confusion.png, <corpus>-projection.png

Per corpus: documents and rejected rows (snapshot stats), cache hits vs computed and
timings per stage (runs/<run_id>.json), the word2vec loss curve and nearest neighbours,
the linear head's metrics and confusion matrix, a PCA projection of the document
vectors coloured by label, and the comparison table. Every section is optional: what
the store lacks is said in one line. No JavaScript, no external CSS: it opens offline.

    >>> write_report("./embcache-store")              # doctest: +SKIP
    './embcache-store/reports/20261121T130501Z-1a2b3c/index.html'
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import tempfile
from pathlib import Path

import numpy as np

from ..storage import FeatureStore, NotFound
from ..storage.errors import CorruptShard
from ..storage.manifest import utcnow
from ..storage.query import as_matrix

from . import run_record
from .heads import HEAD_KIND

SAMPLE_WORDS = 5          # frequent non-stopwords whose neighbours are shown
NEIGHBOURS = 8
PROJECTION_POINTS = 5000  # documents drawn (seeded) for the PCA plot; all of them when fewer
STATIC_KIND = "static"

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328;max-width:1100px;margin:2em auto;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #d0d7de;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.4em}table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #d0d7de;padding:.3em .6em}
th{background:#f6f8fa;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.missing{color:#6e7781;font-style:italic}.meta{color:#57606a}img{max-width:100%;border:1px solid #d0d7de}
.bar{display:inline-block;height:.8em;background:#2da44e;vertical-align:middle}
.bar.c{background:#d0d7de}code{background:#f6f8fa;padding:0 .25em}nav a{margin-right:1em}
"""


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


# -- figures (Agg, no pyplot state) ---------------------------------------------------
def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def loss_curve_png(loss: list[float], title: str) -> bytes:
    """The word2vec issue's loss PNG (w2v_eval.loss_png), as bytes for the store."""
    from .word2vec_eval import loss_png
    with tempfile.TemporaryDirectory() as tmp:
        return loss_png(loss, Path(tmp) / "loss.png", title).read_bytes()


def confusion_png(matrix: list[list[int]], labels: list[str], title: str) -> bytes:
    """Rows = true class, columns = predicted; each cell annotated with its count."""
    m = np.asarray(matrix, dtype=np.int64)                                   # (C, C)
    side = 1.6 + 0.55 * len(labels)
    fig = _figure(side + 1.2, side)
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black")
    return _png(fig)


def projection_png(points: np.ndarray, labels: list[str | None], title: str) -> bytes:
    """(N, 2) points, one colour per label (one colour and no legend when nothing is labelled)."""
    fig = _figure(6.4, 4.8)
    ax = fig.add_subplot()
    names = sorted({lab for lab in labels if lab is not None})
    groups = [(n, [lab == n for lab in labels]) for n in names]
    if any(lab is None for lab in labels):
        groups.append(("(no label)", [lab is None for lab in labels]))
    for name, mask in groups:
        xy = points[np.asarray(mask)]
        ax.scatter(xy[:, 0], xy[:, 1], s=10, alpha=0.7, label=name)
    if names:
        ax.legend(fontsize="small", markerscale=1.5, loc="best")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title)
    return _png(fig)


# -- HTML pieces ----------------------------------------------------------------------
def esc(v) -> str:
    return html.escape(str(v))


def num(v, digits: int = 4) -> str:
    """Counts with thousands separators, scores with `digits` decimals, "—" for none (plain text)."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return f"{v:,}" if isinstance(v, int) else f"{v:.{digits}f}"


class Raw(str):
    """A string that is already HTML."""


def table(head: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    """An HTML table; cells are escaped unless Raw, columns in `numeric` right-aligned."""
    def cell(i: int, c) -> str:
        return f"<td{' class=n' if i in numeric else ''}>{c if isinstance(c, Raw) else esc(c)}</td>"
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def missing(text: str) -> str:
    return f'<p class="missing">{esc(text)}</p>'


def img(file: str, alt: str) -> str:
    return f'<p><img src="{esc(file)}" alt="{esc(alt)}"></p>'


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
           f"finished {esc(run.get('finished'))}, wall time <b>{esc(num(run.get('wall_seconds'), 1))} s</b>.</p>"]
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
            raise NotFound(store.fs.path("corpora"), f"no corpus {', '.join(unknown)} (known: "
                                                    f"{', '.join(known) or 'none'})")
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
