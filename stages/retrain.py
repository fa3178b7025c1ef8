"""Retrain policies: whether a training stage whose inputs changed trains again now.

A training stage's ledger entry (stages/ledger.py) records, besides its full identity,
its *basis* (the identity without the corpus snapshot: config, features, model, code
versions) and the snapshot it trained on. When only the snapshot changed, the policy
decides (RetrainPolicy below); anything else changing (basis) always trains again, and
`embcache run --retrain` trains whatever changed.

    >>> decide_policy("changed", 0.05, changed=22, documents=2246, force=False)
    (False, 'retrain policy "changed": 22 documents changed since training (1.0 % ≤ 5.0 %)')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from ..storage import FeatureStore, NotFound
from . import ledger

# changed: train again when more than `retrain_threshold` of the documents changed (added,
#   edited or removed) since the model was trained; always: on any change of its inputs,
#   the corpus snapshot included; never: only on demand (`--retrain`) or when never trained.
RetrainPolicy = Literal["changed", "always", "never"]
POLICIES: tuple[str, ...] = ("changed", "always", "never")


@dataclass(frozen=True)
class Staleness:
    """How far a stored model is behind the current snapshot."""
    trained_snapshot: str | None   # the snapshot it trained on
    added: int                     # documents in the current snapshot that it did not see
    removed: int                   # documents it saw that are no longer current (edits count in both)
    documents: int                 # documents in the current snapshot

    @property
    def changed(self) -> int:
        return max(self.added, self.removed)

    def as_dict(self) -> dict:
        return {"trained_snapshot": self.trained_snapshot, "added": self.added, "removed": self.removed,
                "documents": self.documents}


@dataclass(frozen=True)
class Decision:
    train: bool
    reason: str                    # said in the run record and the report
    previous: dict | None          # the stored result reused when not training
    stale: Staleness | None


def decide_policy(policy: str, threshold: float, changed: int, documents: int, force: bool) -> tuple[bool, str]:
    """(train?, why) when only the snapshot changed since the last training."""
    share = changed / max(documents, 1)
    said = f"{changed:,} documents changed since training ({share:.1%} {{}} {threshold:.1%})"
    if force:
        return True, "--retrain"
    if policy == "never":
        return False, f'retrain policy "never": {said.format("vs")}; --retrain trains it'
    if policy == "always":
        return True, f'retrain policy "always": {said.format("vs")}'
    if share > threshold:
        return True, f'retrain policy "changed": {said.format(">")}'
    return False, f'retrain policy "changed": {said.format("≤")}'


def decide(fs: FeatureStore, stage: str, corpus: str, name: str, basis: str, policy: str,
           threshold: float, force: bool, model_kind: str | None) -> Decision:
    """Train or reuse, for a stage whose full identity has no ledger entry (something changed)."""
    entry = ledger.last(fs, stage, corpus, name, model_kind)
    if entry is None:
        return Decision(True, "not trained yet", None, None)
    if entry.get("basis") != basis:
        return Decision(True, "its config, features or model changed", None, None)
    stale = staleness(fs, corpus, entry.get("snapshot"))
    if stale is None:
        return Decision(True, "the snapshot it trained on is gone", None, None)
    train, why = decide_policy(policy, threshold, stale.changed, stale.documents, force)
    return Decision(train, why, None if train else entry["result"], stale)


def staleness(fs: FeatureStore, corpus: str, trained_snapshot: str | None) -> Staleness | None:
    """Documents added and removed between `trained_snapshot` and the current one (doc_id,
    text and label compared; reads both snapshots' key columns: O(documents), once per run)."""
    if trained_snapshot is None:
        return None
    c = fs.corpus(corpus)
    current = c.snapshot()
    if current.id == trained_snapshot:
        return Staleness(trained_snapshot, 0, 0, current.rows)
    try:
        old, new = _identities(c, trained_snapshot), _identities(c, None)
    except NotFound:
        return None
    added = int(pc.sum(pc.invert(pc.is_in(new, value_set=old))).as_py() or 0)
    removed = int(pc.sum(pc.invert(pc.is_in(old, value_set=new))).as_py() or 0)
    return Staleness(trained_snapshot, added, removed, len(new))


def _identities(corpus, snapshot_id: str | None) -> pa.Array:
    docs = corpus.read(snapshot_id, columns=["doc_id", "text_sha", "label"])
    label = pc.fill_null(docs["label"], "\x00")
    return pc.binary_join_element_wise(docs["doc_id"], docs["text_sha"], label, "\x1f").combine_chunks()
