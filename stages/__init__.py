"""Store-aware units of work, without Prefect: read a stage's inputs from the store, call
`embcache.pipeline`, commit the results. `embcache.flows` wraps them in tasks and flows;
each module declares its stages' versions and output-affecting config next to its code.
"""

if __name__ != "embcache.stages":   # imported as a top-level `stages`, e.g. from the repository root
    raise ImportError(f"import embcache.stages, not {__name__}: embcache's layers install as its subpackages")
