if __name__ != "embcache.pipeline":   # imported as a top-level `pipeline`, e.g. from the repository root
    raise ImportError(f"import embcache.pipeline, not {__name__}: embcache's layers install as its subpackages")
