"""embcache's feature store: Arrow tables under fingerprints, committed atomically.

No Prefect, no torch (torch is imported only when a caller asks for tensors).
"""

from .corpus import Corpus
from .errors import (CorruptShard, FingerprintError, FormatError, InvalidName, LockTimeout, NotFound,
                     QueryRefused, SchemaMismatch, StoreError)
from .fingerprint import canonical_json, fingerprint, fingerprint_of, spec
from .store import FeatureStore, TableInfo, default_root
from .table import Table

__all__ = [
    "Corpus", "CorruptShard", "FeatureStore", "FingerprintError", "FormatError", "InvalidName",
    "LockTimeout", "NotFound", "QueryRefused", "SchemaMismatch", "StoreError", "Table", "TableInfo",
    "canonical_json", "default_root", "fingerprint", "fingerprint_of", "spec",
]
