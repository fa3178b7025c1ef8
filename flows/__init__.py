"""Prefect flows and tasks: plan what the store lacks, fan out shards, record runs.

The only layer that imports prefect.
"""

if __name__ != "embcache.flows":   # imported as a top-level `flows`, e.g. from the repository root
    raise ImportError(f"import embcache.flows, not {__name__}: embcache's layers install as its subpackages")
