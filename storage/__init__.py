"""embcache's feature store: Arrow tables under fingerprints, committed atomically.

No Prefect, no torch (torch is imported only when a caller asks for tensors).
"""

if __name__ != "embcache.storage":   # imported as a top-level `storage`, e.g. from the repository root
    raise ImportError(f"import embcache.storage, not {__name__}: embcache's layers install as its subpackages")

from .corpus import Corpus
from .errors import (CorruptShard, FingerprintError, FormatError, InvalidName, LockTimeout, NotFound,
                     QueryLimit, QueryRefused, SchemaMismatch, StoreError)
from .fingerprint import canonical_json, fingerprint, fingerprint_of, spec
from .store import FeatureStore, TableInfo, default_root
from .table import Table

__all__ = [
    "Corpus", "CorruptShard", "FeatureStore", "FingerprintError", "FormatError", "InvalidName",
    "LockTimeout", "NotFound", "QueryLimit", "QueryRefused", "SchemaMismatch", "StoreError", "Table", "TableInfo",
    "canonical_json", "default_root", "fingerprint", "fingerprint_of", "spec",
]
