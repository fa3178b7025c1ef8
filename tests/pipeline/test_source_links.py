"""Issue 18, items 1, 6, 7: symlink loops in globs and folder walks, dangling and
self-pointing links, and JSONL files whose keys appear late. Real files and links in tmp_path."""

from __future__ import annotations

import json
import os
import threading

import pytest

from embcache.pipeline.ingest import Source

from .test_ingest import run, write


def finished_within(seconds: float, fn, *args):
    """fn(*args) in a thread; fail (instead of hanging the suite) if it runs past `seconds`."""
    result: dict = {}

    def target():
        try:
            result["value"] = fn(*args)
        except BaseException as e:      # re-raised below, in the test's thread
            result["error"] = e

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s (a symlink loop followed?)"
    if "error" in result:
        raise result["error"]
    return result["value"]


def two_topics(root):
    write(root / "sport" / "001.txt", "A football match report.\n")
    write(root / "tech" / "001.txt", "A new phone.\n")


# ---------------------------------------------------------------- item 1: loops


def test_glob_over_a_link_back_to_its_parent_reads_each_file_once(tmp_path):
    two_topics(tmp_path / "L")
    os.symlink("..", tmp_path / "L" / "sport" / "again")
    docs, rejected = finished_within(60, run, Source(str(tmp_path / "L" / "**" / "*.txt")))
    assert sorted(d["text"] for d in docs) == ["A football match report.", "A new phone."]
    assert [(r["reason"], os.path.basename(r["source"])) for r in rejected] == [("link_loop", "again")]
    assert "already" in rejected[0]["detail"]


def test_two_cycles_finish_and_count_each_file_once(tmp_path):
    two_topics(tmp_path / "L")
    os.symlink("..", tmp_path / "L" / "sport" / "up")
    os.symlink("../sport", tmp_path / "L" / "tech" / "sideways")
    for source in (Source(str(tmp_path / "L" / "**" / "*.txt")), Source(str(tmp_path / "L"), format="lines"),
                   Source(str(tmp_path / "L"), format="folder")):
        docs, rejected = finished_within(60, run, source)
        assert sorted(d["text"].strip() for d in docs) == ["A football match report.", "A new phone."], source
        assert {r["reason"] for r in rejected} == {"link_loop"}, source


def test_a_linked_folder_outside_the_tree_is_still_read(tmp_path):
    write(tmp_path / "elsewhere" / "x.txt", "linked in\n")
    write(tmp_path / "L" / "a.txt", "here\n")
    os.symlink(tmp_path / "elsewhere", tmp_path / "L" / "more")
    docs, rejected = run(Source(str(tmp_path / "L" / "**" / "*.txt")))
    assert sorted(d["doc_id"] for d in docs) == ["a.txt:1", "more/x.txt:1"]
    assert rejected == []


# ---------------------------------------------------------------- item 7: broken links


@pytest.mark.parametrize("fmt", ["folder", "files", "lines", "glob"])
def test_dangling_and_self_pointing_links_are_rejected_rows(tmp_path, fmt):
    root = tmp_path / "c"
    write(root / "sport" / "ok.txt", "A fine text.\n")
    os.symlink(tmp_path / "gone.txt", root / "sport" / "dangling.txt")
    os.symlink("self.txt", root / "sport" / "self.txt")
    source = (Source(str(root / "**" / "*.txt")) if fmt == "glob"
              else Source(str(root), format=fmt))
    docs, rejected = finished_within(60, run, source)
    assert [d["text"].strip() for d in docs] == ["A fine text."]
    found = {os.path.basename(r["source"]): (r["reason"], r["detail"]) for r in rejected}
    assert set(found) == {"dangling.txt", "self.txt"}
    assert found["dangling.txt"][0] == found["self.txt"][0] == "broken_link"
    assert "does not exist" in found["dangling.txt"][1]
    assert "loop" in found["self.txt"][1]


# ---------------------------------------------------------------- item 6: JSONL keys


def test_jsonl_record_after_a_thousand_blank_lines_is_read(tmp_path):
    path = write(tmp_path / "d.jsonl", "\n" * 1000 + json.dumps({"text": "late but fine"}) + "\n")
    docs, rejected = run(Source(str(path)))
    assert [d["text"] for d in docs] == ["late but fine"]
    assert len(rejected) == 1000 and {r["reason"] for r in rejected} == {"empty_text"}


def test_jsonl_label_key_first_seen_after_a_thousand_records(tmp_path):
    lines = [json.dumps({"text": f"unlabelled {i}"}) for i in range(1000)]
    lines.append(json.dumps({"text": "labelled", "label": "pos"}))
    path = write(tmp_path / "d.jsonl", "\n".join(lines) + "\n")
    docs, rejected = run(Source(str(path), label_column="label"))
    assert rejected == []
    assert len(docs) == 1001 and docs[-1]["label"] == "pos" and docs[0]["label"] is None


def test_jsonl_column_missing_from_every_record_is_still_an_error(tmp_path):
    from embcache.pipeline.errors import SourceSchemaError
    path = write(tmp_path / "d.jsonl", "\n".join(json.dumps({"text": f"t{i}"}) for i in range(1500)))
    with pytest.raises(SourceSchemaError, match="'label'"):
        run(Source(str(path), label_column="label"))
