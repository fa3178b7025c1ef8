"""The report as a Prefect task and flow (the end-to-end flow runs its task last).

`embcache report` calls stages.report.write_report directly: it only reads the store.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ..stages.report import write_report
from .run_config import DEFAULT_STORE


@task(name="report", cache_policy=NO_CACHE)
def report_task(store: str, run_id: str | None = None, corpora: list[str] | None = None) -> str:
    return write_report(store, run_id, corpora)


@flow(name="report")
def report_flow(run_id: str | None = None, corpora: list[str] | None = None, store: str = DEFAULT_STORE) -> str:
    """The HTML report of a run (the newest by default) for its corpora; returns where index.html is."""
    where = report_task(store, run_id, corpora)
    get_run_logger().info("report: %s", where)
    return where
