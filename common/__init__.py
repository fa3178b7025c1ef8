"""The bottom of embcache's stack: small, dependency-free definitions every layer shares.

Standard library only, and nothing of ours: storage/, pipeline/, stages/ and the layers above
may import it (tests/test_layers.py checks both).
"""

if __name__ != "embcache.common":   # imported as a top-level `common`, e.g. from the repository root
    raise ImportError(f"import embcache.common, not {__name__}: embcache's layers install as its subpackages")
