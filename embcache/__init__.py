"""embcache: a cached feature store for text embeddings.

The layers install as subpackages: embcache.storage, embcache.pipeline, embcache.stages,
embcache.flows, embcache.cli.
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("embcache")
except PackageNotFoundError:      # a source tree that was never installed
    __version__ = "0+unknown"
