"""The README's Python API section runs as written, against a small real store."""

import re
import tempfile
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks(section: str = "## Python API") -> list[str]:
    """The ```python blocks of one README section, in order."""
    text = README.read_text(encoding="utf-8")
    body = text.split(section + "\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```$", body, flags=re.DOTALL | re.MULTILINE)


def test_the_python_section_runs(built_store, monkeypatch, tmp_path, capsys):
    blocks = python_blocks()
    assert len(blocks) == 2 and "embcache.open(" in blocks[0]
    monkeypatch.setenv("EMBCACHE_STORE", built_store[0])
    monkeypatch.chdir(tmp_path)                       # nothing the snippets write lands in the repository
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))   # nor in /tmp
    for i, code in enumerate(blocks):
        exec(compile(code, f"README.md (Python API, block {i + 1})", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "['bbc']" in out and "bert_features" in out
    assert "'no/such.txt'" in out                     # the UnknownKeys message names the id
    assert 'doc_id: [["d1","d2"]]' in out and "length: [[5,2]]" in out   # snapshot order
