"""What the query server (`embcache serve`, embcache/query_server.py) listens on and what one request
may cost. No FastAPI here: the CLI reads these defaults for its options and must not pay for
importing the server. (Prefect's server, `embcache server`, has its own config in flows/.)"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QueryServerConfig:
    """The query server. Past a per-request bound the answer is HTTP 413 with the error body."""
    host: str = "127.0.0.1"          # loopback only unless allow_remote: the server has no authentication
    port: int = 8765
    allow_remote: bool = False       # listen on a non-loopback address (anyone who reaches it reads the store)
    warm: bool = True                # at start: load bert_features' matrix and its query encoder
    recheck_s: float = 0.05          # commits show up within this long (stats of manifests and pointers)
    sql_timeout_s: float = 10.0      # a statement still running after this is interrupted (HTTP 400)
    sql_memory_limit: str = "1GB"    # DuckDB's memory limit per statement (it spills beyond, then fails)
    sql_max_rows: int = 10_000       # a longer SQL result is refused (413): add a LIMIT
    sql_concurrency: int = 2         # statements running at once; others wait their turn
    max_ids: int = 10_000            # ids per features request (413 past it)
    max_k: int = 1_000               # hits per query of similar / neighbours (larger k is cut to it)
    max_batch: int = 64              # queries (texts or vectors) per similar request (413 past it)
    max_text_chars: int = 20_000     # characters per query text (413 past it): a 10 MB text cost 40 s of CPU
    max_body_bytes: int = 8 << 20    # bytes of one request body (413 past it)
