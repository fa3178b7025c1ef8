"""Run every featurize stage once on a corpus and print each stage's own peak memory (JSON).

    python -m tests.reliability.memory_child STORE CORPUS_GLOB MODEL

Each stage runs with the process's peak RSS reset first (Linux: /proc/self/clear_refs "5"
resets VmHWM), so its figure is its own peak above the memory held before it started
(imports, model): what test_memory.py compares between corpus sizes.
"""

from __future__ import annotations

import gc
import json
import sys


def status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def main(store: str, corpus_glob: str, model: str) -> None:
    import pyarrow as pa  # noqa: F401  (imports before the first measurement)

    from embcache.storage.memory import use_returning_pool
    use_returning_pool()                                   # as the console script does

    from embcache.pipeline.configs import EncodeConfig, SGNSConfig, TokenizeConfig
    from embcache.pipeline.ingest import IngestConfig, Source
    from embcache.pipeline.words import WordConfig
    from embcache.stages import bert, planning
    from embcache.stages import word2vec as w2v
    from embcache.stages.ingest import ingest_corpus
    from embcache.storage import FeatureStore
    from embcache.storage.compact import compact

    plan = bert.plan_bert(store, bert.BertConfig(model, TokenizeConfig(max_length=32), EncodeConfig()), "NFC")
    bert.cached_encoder(None, plan.model_path, plan.encode, None)          # the model loads before measuring
    bert.cached_tokenizer(plan.model_path)
    peaks: dict[str, float] = {}

    def measure(name: str, fn) -> None:
        gc.collect()
        bert.release_native_memory()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                                   # VmHWM := VmRSS
        before = status_mb("VmRSS")
        fn()
        peaks[name] = round(status_mb("VmHWM") - before, 1)

    measure("ingest", lambda: ingest_corpus(store, "mem", [Source(corpus_glob, format="jsonl")], IngestConfig()))
    fs = FeatureStore(store)

    def featurize_bert() -> None:
        _, documents, tokens, features = bert.tables(plan)
        wanted = planning.snapshot_keys(fs, "mem")
        for table, source, fn, size in ((tokens, documents, bert.tokenize_shard, 4096),
                                        (features, tokens, bert.encode_shard, 512)):
            for keys in planning.KeyBatches(planning.todo(table, source, wanted), size):
                fn(plan, keys)
            fs.corpus("mem").link(table.name, table.fingerprint)

    measure("featurize_bert", featurize_bert)
    words = WordConfig(min_count=2)
    vocab = {}
    measure("vocabulary", lambda: vocab.update(w2v.build_vocab(store, "mem", words)))
    xplan = w2v.plan_examples(store, "mem", vocab["fingerprint"], w2v.ExamplesConfig(words))

    def examples() -> None:
        _, table = w2v.examples_table(xplan)
        todo = planning.todo(table, w2v.documents_of(fs, "mem"), planning.snapshot_keys(fs, "mem"))
        for keys in planning.KeyBatches(todo, 256):
            w2v.examples_shard(xplan, keys)
        fs.corpus("mem").link("w2v_examples", table.fingerprint)

    measure("examples", examples)
    examples_fp = fs.resolve_linked("mem", "w2v_examples")
    measure("train_word2vec", lambda: w2v.train_vectors(store, "mem", examples_fp, vocab["fingerprint"],
                                                        SGNSConfig(dim=16, epochs=1, threads=1)))
    measure("compact", lambda: [compact(fs.open(name)) for name in ("bert_features", "w2v_examples")])
    print(json.dumps(peaks))


if __name__ == "__main__":
    main(*sys.argv[1:4])
