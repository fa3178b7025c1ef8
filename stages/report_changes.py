"""The report's "What changed since the last run": documents added, edited and removed, and
what each stage did about it (recomputed rows, trained again, kept its model) and why.

The run record (runs/<run_id>.json, flows/run.py) names each corpus's snapshot in its summary
and, per training stage, the reason the retrain policy or the ledger gave (stages/retrain.py,
stages/ledger.py). The previous run is the newest older record that has the corpus; the two
snapshots are compared by doc_id (O(documents), reading doc_id, text_sha and label only):

    >>> changes = document_changes(store.corpus("bbc"), "000002", "000003")    # doctest: +SKIP
    DocumentChanges(added=5, edited=2, removed=1, documents=2246)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ..storage import FeatureStore, NotFound, StoreError
from . import run_record
from .report_html import esc, missing, table

SNAPSHOT_NOTE = re.compile(r"^snapshot (\S+?),")      # the ingest stage's note in records without summary[snapshot]


@dataclass(frozen=True)
class DocumentChanges:
    added: int          # doc_ids in the new snapshot only
    edited: int         # doc_ids in both whose text or label differs
    removed: int        # doc_ids in the old snapshot only
    documents: int      # documents in the new snapshot


def snapshot_of(run: dict, corpus: str) -> str | None:
    """The corpus snapshot a run worked on (its summary, else its ingest stage's note)."""
    summary = (run.get("summary") or {}).get(corpus) or {}
    if summary.get("snapshot"):
        return summary["snapshot"]
    for s in run.get("stages", []):
        if s.get("stage") == "ingest" and s.get("corpus") == corpus and (m := SNAPSHOT_NOTE.match(s.get("note", ""))):
            return m.group(1)
    return None


def previous_run(store: FeatureStore, run: dict, corpus: str) -> dict | None:
    """The newest run record older than `run` that names a snapshot of `corpus`, or None."""
    ids = sorted((n[:-5] for n in store.fs.listdir(store.fs.path("runs"))
                  if n.endswith(".json") and run_record.RUN_ID_RE.match(n[:-5]) and n[:-5] < run["run_id"]),
                 reverse=True)
    for run_id in ids:
        try:
            older = run_record.load(store, run_id)
        except StoreError:              # an unreadable old record: look further back
            continue
        if older is not None and snapshot_of(older, corpus) is not None:
            return older
    return None


def document_changes(corpus, old: str, new: str) -> DocumentChanges:
    """What differs between two snapshots of a corpus (NotFound if one is gone)."""
    def read(snapshot: str) -> pa.Table:
        docs = corpus.read(snapshot, columns=["doc_id", "text_sha", "label"])
        return docs.set_column(2, "label", pc.fill_null(docs["label"], "\x00"))
    a, b = read(old), read(new)
    if old == new:
        return DocumentChanges(0, 0, 0, b.num_rows)
    both = a.join(b, "doc_id", join_type="inner", left_suffix="_old", right_suffix="_new")
    edited = pc.or_(pc.not_equal(both["text_sha_old"], both["text_sha_new"]),
                    pc.not_equal(both["label_old"], both["label_new"]))
    kept = both.num_rows
    return DocumentChanges(b.num_rows - kept, int(pc.sum(edited.cast(pa.int64())).as_py() or 0), a.num_rows - kept,
                           b.num_rows)


def stage_decision(stage: dict) -> tuple[str, str]:
    """(what the stage did, why) in words, from its record."""
    computed, cached, unit = int(stage.get("computed") or 0), int(stage.get("cached") or 0), stage.get("unit", "")
    note, reason = stage.get("note") or "", stage.get("reason")
    if note.startswith("nothing changed since run"):        # a run that started no flow (stages/noop.py)
        return "nothing to do", note
    if unit == "models":
        if computed:
            why = reason or (re.search(r"\(([^()]*)\)$", note) or [None, "its inputs changed"])[1]
            return "trained again", why
        why = reason or note.removeprefix("stored result kept: ")
        return "kept its model", why
    if stage.get("stage") == "ingest":
        return f"{computed:,} new texts, {cached:,} already stored", note
    if computed:
        return f"recomputed {computed:,} {unit}", f"{cached:,} from the cache" + (f"; {note}" if note else "")
    return "nothing to recompute", f"all {cached:,} {unit} from the cache" + (f"; {note}" if note else "")


def changes_section(store: FeatureStore, run: dict | None, corpus: str) -> str:
    """The report's section for one corpus of `run`, as HTML."""
    if run is None:
        return missing("No run record: what changed between runs is not known.")
    now = snapshot_of(run, corpus)
    stages = [s for s in run.get("stages", []) if s.get("corpus") == corpus]
    if now is None and not stages:
        return missing(f"Run {run['run_id']} did not run this corpus.")
    out = []
    before = previous_run(store, run, corpus)
    if now is None:
        out.append(missing("This run's record names no snapshot of the corpus."))
    elif before is None:
        out.append(f"<p>First run of this corpus: snapshot {esc(now)}.</p>")
    else:
        old = snapshot_of(before, corpus)
        try:
            d = document_changes(store.corpus(corpus), old, now)
            out.append(f"<p>Since run {esc(before['run_id'])} (snapshot {esc(old)} → {esc(now)}): "
                       f"<b>{d.added:,}</b> documents added, <b>{d.edited:,}</b> edited, <b>{d.removed:,}</b> "
                       f"removed; {d.documents:,} documents now.</p>")
        except NotFound:
            out.append(missing(f"Snapshot {old} of the previous run ({before['run_id']}) is gone: no comparison."))
    if stages:
        rows = [[s.get("stage", "?"), *stage_decision(s)] for s in stages]
        out.append(table(["stage", "what it did", "why"], rows))
    return "".join(out)
