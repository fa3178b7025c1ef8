"""The featurize flows on a 2-worker Dask LocalCluster (prefect-dask) write what the thread runner writes.

One cluster for the module (starting worker processes costs tens of seconds here), one
moto S3 server started before it, so the workers inherit its endpoint.
"""

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from embcache.flows import runners
from embcache.cli.main import app
from embcache.flows.runners import RunnerConfig
from embcache.pipeline.encode import EncodeConfig
from embcache.pipeline.ingest import IngestConfig, Source
from embcache.pipeline.skipgram import SkipGramConfig
from embcache.pipeline.tokenize import TokenizeConfig
from embcache.pipeline.words import WordConfig
from embcache.storage import FeatureStore
from embcache.storage.query import as_matrix
from tests.s3server import moto_s3

pytestmark = [pytest.mark.usefixtures("prefect_engine"), pytest.mark.slow]

WORDS = ("the a cat cats dog sat sits mat rug quarterly earnings beat analyst expectations market bank "
         "shares film music game team win won play new year said would people government minister "
         "election tax growth rate company").split()


def corpus_texts(n: int = 14) -> dict[str, str]:
    rng = np.random.default_rng(7)
    return {f"{i:02d}.txt": " ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for i in range(n)}


@pytest.fixture(scope="module")
def cluster():
    """(scheduler address, S3 endpoint): a 2-worker LocalCluster opened as `--runner dask` opens one."""
    omp = os.environ.get("OMP_NUM_THREADS")
    with moto_s3("bucket") as endpoint, runners.session(RunnerConfig("dask", workers=2)) as address:
        assert os.environ.get("OMP_NUM_THREADS") == omp     # Dask's nannies set it here; the session undoes it
        yield address, endpoint


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("docs")
    for name, text in corpus_texts().items():
        (d / name).write_text(text)
    return d


def featurize_bert(store, corpus_dir, tiny_bert, flow_for=lambda f: f):
    from embcache.flows.featurize_flows import featurize_bert_flow, ingest_flow
    ingest_flow("news", [Source(str(corpus_dir), format="files")], IngestConfig(), store=store)
    return flow_for(featurize_bert_flow)("news", tiny_bert, TokenizeConfig(max_length=16), EncodeConfig(),
                                         store=store, encode_shard_docs=2, tokenize_shard_docs=4)


def sorted_rows(store, table) -> pa.Table:
    t = FeatureStore(store).open(table).read()
    return t.take(pa.compute.sort_indices(t, [("text_sha", "ascending")]))   # stable: a key's rows keep their order


def encoder_cache_info() -> dict:
    """The lru_cache info of what encode tasks load (the torch model, or its ONNX export) in this process."""
    from embcache.stages import bert
    return bert._encoder.cache_info()._asdict()          # one call per encode shard, torch or ONNX


def model_loads(address) -> dict:
    """{worker: encoder_cache_info()} read inside each worker process."""
    from distributed import Client
    with Client(address) as client:
        return client.run(encoder_cache_info)


def test_bert_on_dask_equals_threads_and_loads_the_model_once_per_worker(tmp_path, cluster, corpus_dir, tiny_bert):
    address, _ = cluster
    threads = featurize_bert(str(tmp_path / "threads"), corpus_dir, tiny_bert)
    dask = featurize_bert(str(tmp_path / "dask"), corpus_dir, tiny_bert, runners.on)
    encoders = threads.encoder, dask.encoder                                   # where each encoded: its own line
    assert replace(threads, encoder={}) == replace(dask, encoder={}) and dask.encode.computed == 14   # 7 encode, 4 tokenize
    assert all(e["precision"] == "fp32" and e["device"] == "cpu" for e in encoders)
    for table in ("bert_tokens", "bert_features"):
        a, b = sorted_rows(str(tmp_path / "threads"), table), sorted_rows(str(tmp_path / "dask"), table)
        assert a.drop_columns(["vector"] if "vector" in a.column_names else []).equals(
            b.drop_columns(["vector"] if "vector" in b.column_names else []))
    va, vb = (as_matrix(sorted_rows(str(tmp_path / s), "bert_features")["vector"]) for s in ("threads", "dask"))
    np.testing.assert_allclose(vb, va, rtol=0, atol=1e-6)
    loads = model_loads(address)
    assert len(loads) == 2
    assert all(info["misses"] <= 1 for info in loads.values()), loads          # loaded once per process
    assert sum(info["hits"] + info["misses"] for info in loads.values()) == 7   # one call per encode shard
    assert sum(info["misses"] for info in loads.values()) >= 1


def test_word2vec_examples_on_dask_equal_threads(tmp_path, cluster):
    from gensim.test.utils import datapath
    from embcache.flows.featurize_flows import ingest_flow
    from embcache.flows.word2vec_flows import featurize_word2vec_flow
    lines = Path(datapath("lee_background.cor")).read_text(encoding="utf-8").splitlines()[:120]
    src = tmp_path / "lee.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    results = {}
    for name, flow_for in (("threads", lambda f: f), ("dask", runners.on)):
        store = str(tmp_path / name)
        ingest_flow("lee", [Source(str(src))], IngestConfig(), store=store)
        results[name] = flow_for(featurize_word2vec_flow)("lee", WordConfig(min_count=2),
                                                          SkipGramConfig(draws="stored"),   # seeded draws
                                                          epochs_of_examples=2, store=store, shard_docs=16)
    assert results["threads"] == results["dask"]
    assert results["dask"]["computed"] == results["dask"]["documents"] == 118     # distinct texts: 8 shards
    a, b = (sorted_rows(str(tmp_path / n), "w2v_examples") for n in ("threads", "dask"))
    assert a.num_rows > 1000 and a.equals(b)                                  # bit-identical examples


def test_cli_dask_address_with_an_s3_store(tmp_path, cluster, corpus_dir, tiny_bert):
    """`--dask-address` + `--store s3://…`: workers commit to S3 through the lease lock; same vectors."""
    address, _ = cluster
    local = str(tmp_path / "local")
    featurize_bert(local, corpus_dir, tiny_bert)
    s3 = "s3://bucket/store"
    cli = CliRunner()
    for args in (["ingest", "news", str(corpus_dir), "--format", "files"],
                 ["featurize", "bert", "news", "--model", tiny_bert, "--max-length", "16", "--shard-docs", "2"]):
        r = cli.invoke(app, ["--store", s3, "--dask-address", address, *args])
        assert r.exit_code == 0, r.output
    assert "encoded 14" in r.output
    a, b = sorted_rows(local, "bert_features"), sorted_rows(s3, "bert_features")
    assert a["text_sha"].equals(b["text_sha"])
    np.testing.assert_allclose(as_matrix(b["vector"]), as_matrix(a["vector"]), rtol=0, atol=1e-6)
    assert len(FeatureStore(s3).open("bert_features").manifest().shards) == 7


def test_runner_choices_are_checked_before_anything_starts(tmp_path):
    from embcache.flows.run import load_config
    from embcache.flows.errors import FlowError
    assert load_config({"runner": {"kind": "dask", "workers": 2}}).runner == RunnerConfig("dask", None, 2)
    for bad in ({"kind": "spark"}, {"kind": "threads", "address": "tcp://h:8786"}, {"workers": 0},
                {"kind": "dask", "address": "tcp://h:8786", "workers": 2}, {"nodes": 3}):
        with pytest.raises(FlowError, match="runner"):
            load_config({"runner": bad})
    r = CliRunner().invoke(app, ["--store", str(tmp_path), "--runner", "threads", "--dask-address", "tcp://h:1",
                                 "status"])
    assert r.exit_code == 2 and "--runner dask" in r.output
