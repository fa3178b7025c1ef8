"""What `embcache serve` listens on and how it bounds each request (no FastAPI here: the CLI
reads these defaults for its options, and must not pay for importing the server)."""

from __future__ import annotations

from dataclasses import dataclass



@dataclass(frozen=True)
class ServeConfig:
    """The query server (embcache/server.py)."""
    host: str = "127.0.0.1"          # loopback only unless allow_remote: the server has no authentication
    port: int = 8765
    allow_remote: bool = False       # listen on a non-loopback address (anyone who reaches it reads the store)
    warm: bool = True                # at start: map bert_features' matrix and load its encoder
    recheck_s: float = 0.05          # commits show up within this long (stats of manifests and pointers)
    sql_timeout_s: float = 10.0      # a statement still running after this is interrupted (HTTP 400)
    sql_memory_limit: str = "1GB"    # DuckDB's memory limit per statement (it spills beyond, then fails)
    sql_max_rows: int = 10_000       # a longer SQL result is refused: add a LIMIT
    sql_concurrency: int = 2         # statements running at once; others wait their turn
    max_ids: int = 10_000            # ids per features request
    max_k: int = 1_000               # neighbours per similar / neighbours request
