"""`embcache serve`: a real uvicorn server on loopback (the CLI in a subprocess) over a copy of a real store."""

import glob
import os
import shutil
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pyarrow as pa
import pytest

import embcache
from embcache.storage import FeatureStore
from embcache.storage.ann import AnnConfig, build_index

from .conftest import doc_ids

EMBCACHE = os.path.join(os.path.dirname(sys.executable), "embcache")    # the console script


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(root: str, *args: str):
    port = free_port()
    proc = subprocess.Popen([EMBCACHE, "--store", root, "serve", "--port", str(port),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve exited {proc.returncode}: {proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, httpx.Client(base_url=url, timeout=60)
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail("serve did not answer /health within 120 s")


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def served(built_store, tmp_path_factory):
    """(store root, client) of `embcache serve` over a copy of the API store, with a vector index built."""
    root = str(tmp_path_factory.mktemp("served") / "store")
    shutil.copytree(built_store[0], root)
    store = embcache.open(root)
    t = store.feature_store.open("bert_features")
    build_index(t, store.reads.matrix("bert_features", t.fingerprint), AnnConfig(min_rows=0))
    proc, client = start(root)
    yield root, client
    stop(proc)


def test_features_by_doc_id_as_json_and_arrow(served):
    root, client = served
    ids = ["tech/002.txt", "business/001.txt"]
    expected = embcache.open(root).lookup(ids, corpus="bbc")
    got = client.get("/features/bert_features", params={"corpus": "bbc", "ids": ",".join(ids)})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["ids"] == ids
    np.testing.assert_allclose(np.asarray(body["vector"], np.float32), expected, rtol=1e-6)
    arrow = client.get("/features/bert_features", params={"ids": body["keys"], "format": "arrow"})
    assert arrow.headers["content-type"] == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(arrow.content).read_all()
    assert table["key"].to_pylist() == body["keys"]
    np.testing.assert_array_equal(np.stack(table["vector"].to_numpy(zero_copy_only=False)), expected)
    missing = client.get("/features/bert_features", params={"corpus": "bbc", "ids": "no/such.txt"})
    assert missing.status_code == 404 and "no/such.txt" in missing.json()["detail"]


def test_indexed_exact_and_sql_agree(served):
    root, client = served
    q = embcache.open(root).lookup(["sports/002.txt"], corpus="bbc")[0] + 0.05
    indexed = client.post("/similar", json={"corpus": "bbc", "vector": q.tolist(), "k": 5}).json()["hits"]
    exact = client.post("/similar", json={"corpus": "bbc", "vector": q.tolist(), "k": 5, "exact": True}).json()["hits"]
    assert [h["text_sha"] for h in indexed] == [h["text_sha"] for h in exact]
    np.testing.assert_allclose([h["score"] for h in indexed], [h["score"] for h in exact], rtol=1e-5)
    literal = ", ".join(f"{x:.9g}" for x in q)
    rows = client.post("/sql", json={"query": f"SELECT text_sha, array_cosine_similarity(vector, [{literal}]::FLOAT"
                                              f"[{len(q)}]) AS s FROM bert_features ORDER BY s DESC LIMIT 5"}).json()
    assert [r["text_sha"] for r in rows["rows"]] == [h["text_sha"] for h in exact]
    np.testing.assert_allclose([r["s"] for r in rows["rows"]], [h["score"] for h in exact], rtol=1e-4)


def test_similar_by_text_matches_the_python_api(served):
    root, client = served
    got = client.post("/similar", json={"corpus": "bbc", "text": "the team won the game", "k": 3}).json()["hits"]
    want = embcache.open(root).similar("bbc", text="the team won the game", k=3, exact=True)
    assert [h["doc_id"] for h in got] == [h.doc_id for h in want]


def test_neighbours_match_gensim(served):
    root, client = served
    from embcache.stages.word2vec_eval import keyed_vectors, neighbours
    got = client.get("/neighbours", params={"word": "game", "k": 5}).json()
    want = neighbours(keyed_vectors(FeatureStore(root)), "game", 5)
    assert [g["word"] for g in got] == [w for w, _ in want]
    np.testing.assert_allclose([g["score"] for g in got], [s for _, s in want], rtol=1e-5)
    assert client.get("/neighbours", params={"word": "zzzz"}).status_code == 404


def test_sql_is_bounded_and_read_only(served):
    root, client = served
    cross = client.post("/sql", json={"query": "SELECT * FROM bert_features a, bert_features b, bert_features c, "
                                               "bert_features d"})
    assert cross.status_code == 413 and "rows" in cross.json()["detail"]          # past sql_max_rows
    shard = glob.glob(f"{root}/tables/bert_features/*/shards/*.parquet")[0]
    refused = client.post("/sql", json={"query": f"SELECT count(*) FROM read_parquet('{shard}')"})
    assert refused.status_code == 400 and "sandbox" in refused.json()["detail"]
    ok = client.post("/sql", json={"query": "SELECT label, count(*) AS n FROM corpora.bbc GROUP BY 1 ORDER BY 1"})
    assert ok.json()["rows"][0] == {"label": "business", "n": 6}


def test_a_slow_statement_times_out_and_the_server_keeps_answering(served):
    root, client = served
    import threading
    slow = {}
    thread = threading.Thread(target=lambda: slow.update(r=client.post("/sql", json={
        "query": "SELECT count(*) FROM bert_features a, bert_features b, bert_features c, range(100000000) r"})))
    thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    assert client.get("/features/bert_features", params={"corpus": "bbc", "ids": "tech/001.txt"}).status_code == 200
    assert time.monotonic() - started < 5
    thread.join(60)
    assert slow["r"].status_code == 400 and "time limit" in slow["r"].json()["detail"]


def test_new_commits_are_served_without_a_restart(served):
    root, client = served
    t = FeatureStore(root).open("bert_features")
    row = t.read().slice(0, 1)
    new = row.set_column(row.schema.get_field_index("text_sha"), "text_sha", pa.array(["f" * 64]))
    t.write(new)
    deadline = time.monotonic() + 5                  # the server re-checks files every QueryServerConfig.recheck_s
    while (got := client.get("/features/bert_features", params={"ids": "f" * 64})).status_code == 404 \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got.status_code == 200 and got.json()["keys"] == ["f" * 64]


def test_openapi_docs_work_offline(served):
    """Issue 27: /docs loaded Swagger UI from a CDN (blank offline): every asset it names is served here."""
    import re
    _, client = served
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/features/{table}", "/similar", "/neighbours", "/sql", "/health"} <= set(paths)
    page = client.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]+)['"]""", page.text) + \
        re.findall(r"""url:\s*['"]([^'"]+)['"]""", page.text)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        assert asset.startswith("/"), f"/docs loads {asset} from elsewhere"
        assert client.get(asset).status_code == 200, asset


def error_of(response, status: int) -> str:
    """The one error body of every 4xx/5xx: {"error", "detail"}; returns the detail."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error", "detail"} and body["detail"], body
    return body["detail"]


def test_bad_vectors_are_refused_with_422(served):
    """Issue 26 items 2 and 4: NaN, Infinity, 1e39 and vectors of the wrong length answered 200 or 500."""
    _, client = served
    for values in ([float("nan")] * 32, [float("inf")] * 32, [1e39] * 32, [], [0.5] * 10, [0.5] * 385):
        got = client.post("/similar", content=__import__("json").dumps({"corpus": "bbc", "vector": values}),
                          headers={"content-type": "application/json"})
        error_of(got, 422)
    error_of(client.post("/similar", content=b'{"corpus": "bbc", "text": "\\ud800"}',
                         headers={"content-type": "application/json"}), 422)


def test_a_wrong_table_column_or_name_is_the_clients_error(served):
    """Issue 26 items 3 and 4: these were 500 CorruptShard with advice to run repair."""
    _, client = served
    for params, table, status in [({"ids": "x"}, "documents", 404), ({"ids": "x", "column": "nosuch"},
                                                                       "bert_features", 404),
                                  ({"ids": "x", "column": "../x"}, "bert_features", 400),
                                  ({"ids": "x", "corpus": "../../etc"}, "bert_features", 400),
                                  ({"ids": "x"}, "%2e%2e", 400), ({"ids": "x"}, "nosuch", 404)]:
        got = client.get(f"/features/{table}", params=params)
        detail = error_of(got, status)
        assert got.json()["error"] != "CorruptShard" and "repair" not in detail, detail
    error_of(client.post("/similar", json={"corpus": "../../etc", "vector": [0.1] * 32}), 400)
    error_of(client.get("/no/such/route"), 404)
    error_of(client.post("/similar", json={"corpus": "bbc", "text": "x", "k": 0}), 422)      # validation
    error_of(client.post("/similar", json={"corpus": "bbc", "txt": "x"}), 422)


def test_unusable_sql_is_400_with_duckdbs_whole_message(served):
    """Issue 26 item 4 and issue 31 item 2: an unknown table or column was a 500 (exit 4), its hints cut."""
    _, client = served
    detail = error_of(client.post("/sql", json={"query": "SELECT nosuch FROM corpora.bbc"}), 400)
    assert "nosuch" in detail and "Candidate bindings" in detail
    error_of(client.post("/sql", json={"query": "SELECT * FROM no_such_table"}), 400)
    error_of(client.post("/sql", json={"query": "SELECT * FROM '/etc/passwd'"}), 400)
    error_of(client.post("/sql", json={"query": "SELECT * FROM query_table('/etc/passwd')"}), 400)


def test_what_one_request_may_cost_is_bounded_with_413(served):
    """Issue 26: a 10 MB text took 40 s of CPU. Text length, batch size, ids, body and SQL rows are bounded."""
    from embcache.query_server_config import QueryServerConfig
    _, client = served
    limits = QueryServerConfig()
    error_of(client.post("/similar", json={"corpus": "bbc", "text": "a " * limits.max_text_chars}), 413)
    error_of(client.post("/similar", json={"corpus": "bbc", "texts": ["a"] * (limits.max_batch + 1)}), 413)
    error_of(client.get("/features/bert_features", params={"ids": ",".join(["x"] * (limits.max_ids + 1))}), 413)
    error_of(client.post("/similar", content=b"{" + b" " * limits.max_body_bytes + b"}",
                         headers={"content-type": "application/json"}), 413)
    assert client.get("/health").status_code == 200


def test_batches_filters_snapshots_and_both_spellings(served):
    root, client = served
    store = embcache.open(root)
    texts = ["the team won the game", "bank shares rise"]
    got = client.post("/similar", json={"corpus": "bbc", "texts": texts, "k": 3, "label": "sports"}).json()
    want = store.similar("bbc", text=texts, k=3, label="sports")
    assert [[h["doc_id"] for h in hits] for hits in got["results"]] == [[h.doc_id for h in w] for w in want]
    where = client.post("/similar", json={"corpus": "bbc", "text": texts[0], "where": "label = 'tech'"}).json()
    assert {h["label"] for h in where["hits"]} == {"tech"}
    snap = store.snapshots("bbc")[-1]
    same = client.post("/similar", json={"corpus": "bbc", "text": texts[0], "snapshot": snap}).json()["hits"]
    assert [h["doc_id"] for h in same] == [h.doc_id for h in store.similar("bbc", text=texts[0])]
    error_of(client.post("/similar", json={"corpus": "bbc", "text": "x", "snapshot": "999999"}), 404)
    assert client.get("/neighbors", params={"word": "game"}).json() == \
        client.get("/neighbours", params={"word": "game"}).json()


def test_serve_restarts_on_the_same_port_at_once(built_store, tmp_path):
    """Issue 26 item 8: a TIME_WAIT socket left by the last server made the port look taken."""
    import subprocess as sp
    port = free_port()
    for attempt in range(2):
        proc = sp.Popen([EMBCACHE, "--store", built_store[0], "serve", "--port", str(port), "--no-warm"],
                        stdout=sp.PIPE, stderr=sp.STDOUT, text=True)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}")   # keep-alive: the server closes first
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"serve #{attempt + 1} exited {proc.returncode}: {proc.stdout.read()}"
            try:
                if client.get("/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert client.get("/tables").status_code == 200
        stop(proc)                                           # leaves the server's side in TIME_WAIT
        client.close()


def test_a_damaged_shard_is_reported_not_served(built_store, tmp_path):
    root = str(tmp_path / "store")
    shutil.copytree(built_store[0], root)
    for f in glob.glob(f"{root}/tables/bert_features/*/derived/*"):
        os.unlink(f)                                           # no matrix yet: it must come from the shards
    shard = glob.glob(f"{root}/tables/bert_features/*/shards/*.parquet")[0]
    with open(shard, "r+b") as f:
        f.seek(64)
        f.write(b"\x00\x01\x02")
    proc, client = start(root, "--no-warm")
    try:
        got = client.get("/features/bert_features", params={"corpus": "bbc", "ids": doc_ids()[0]})
        assert got.status_code == 500 and got.json()["error"] == "CorruptShard"
    finally:
        stop(proc)


def test_a_remote_host_needs_allow_remote(built_store):
    done = subprocess.run([EMBCACHE, "--store", built_store[0], "serve",
                           "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--allow-remote" in done.stderr and "Traceback" not in done.stderr
