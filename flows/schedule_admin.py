"""Schedules you can manage: list, pause, resume and delete `embcache-run/<name>` deployments.

    embcache schedule list             # name, when, paused or active, served by a process, last and next run
    embcache schedule pause pipeline   # the server stops making runs; a process serving it idles
    embcache schedule resume pipeline
    embcache schedule delete pipeline  # the deployment and its schedule; a process serving it stops

Everything goes through the Prefect client against PREFECT_API_URL (flows/schedule.py
`server_for_schedules` checks it is set and answers).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from .schedule import FLOW_NAME, ScheduleOptionError


@dataclass(frozen=True)
class ScheduleInfo:
    """One schedule as the server holds it."""
    name: str                      # the deployment's name: embcache-run/<name>
    when: str                      # "every 600 s" / "cron '0 * * * *' (UTC)" / "none"
    paused: bool                   # paused: the server makes no runs for it
    served: bool                   # a process polled for its runs lately (the deployment's status READY)
    config_path: str | None        # the run config every run re-reads (None: the embedded default)
    store: str | None              # the store it overrides the config's with, if any
    last_run: str | None           # "completed 2026-05-01 10:00:03" (UTC, when it ended), None if none yet
    next_run: datetime | None      # when its next scheduled run comes due

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["next_run"] = self.next_run.isoformat() if self.next_run else None
        return d


def describe_schedule(deployment) -> str:
    """A deployment's schedules in words (active ones; a paused deployment keeps them)."""
    parts = []
    for s in deployment.schedules:
        sched = s.schedule
        if getattr(sched, "interval", None) is not None:
            parts.append(f"every {sched.interval.total_seconds():g} s")
        elif getattr(sched, "cron", None) is not None:
            parts.append(f"cron {sched.cron!r} ({getattr(sched, 'timezone', None) or 'UTC'})")
        else:
            parts.append(type(sched).__name__)
    return ", ".join(parts) or "none"


def list_schedules() -> list[ScheduleInfo]:
    """Every deployment of the end-to-end flow on the server, by name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import DeploymentSort
    with get_client(sync_client=True) as client:
        deployments = client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
                                              sort=DeploymentSort.NAME_ASC, limit=200)
        return [_info(client, d) for d in deployments]


def find_schedule(client, name: str):
    """The deployment `embcache-run/<name>` (NAME or embcache-run/NAME); ScheduleOptionError if none."""
    from prefect.exceptions import ObjectNotFound
    short = name.split("/", 1)[1] if name.startswith(f"{FLOW_NAME}/") else name
    try:
        return client.read_deployment_by_name(f"{FLOW_NAME}/{short}")
    except ObjectNotFound:
        raise ScheduleOptionError(f"no schedule named {short!r} on the Prefect server "
                                  f"(`embcache schedule list` shows them)", where=name) from None


def set_paused(name: str, paused: bool) -> ScheduleInfo:
    """Pause or resume a schedule; returns it as it is now."""
    from prefect.client.orchestration import get_client
    with get_client(sync_client=True) as client:
        deployment = find_schedule(client, name)
        if paused:
            client.pause_deployment(deployment.id)
        else:
            client.resume_deployment(deployment.id)
        return _info(client, client.read_deployment(deployment.id))


def delete_schedule(name: str) -> ScheduleInfo:
    """Delete the deployment (its schedule and its runs to come); returns it as it was."""
    from prefect.client.orchestration import get_client
    with get_client(sync_client=True) as client:
        deployment = find_schedule(client, name)
        info = _info(client, deployment)
        client.delete_deployment(deployment.id)
        return info


def _info(client, deployment) -> ScheduleInfo:
    from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterId, FlowRunFilter,
                                                FlowRunFilterState, FlowRunFilterStateType)
    from prefect.client.schemas.objects import DeploymentStatus, StateType
    from prefect.client.schemas.sorting import FlowRunSort

    def runs(types, sort):
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=types))),
            sort=sort, limit=1)

    finished = runs([StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED],
                    FlowRunSort.END_TIME_DESC)
    upcoming = [] if deployment.paused else runs([StateType.SCHEDULED], FlowRunSort.NEXT_SCHEDULED_START_TIME_ASC)
    last = None
    if finished:
        r = finished[0]
        at = r.end_time or r.state.timestamp
        last = f"{r.state.type.value.lower()} {at.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S}"
    params = deployment.parameters or {}
    return ScheduleInfo(name=deployment.name, when=describe_schedule(deployment), paused=deployment.paused,
                        served=deployment.status == DeploymentStatus.READY,
                        config_path=params.get("config_path"), store=params.get("store"), last_run=last,
                        next_run=upcoming[0].next_scheduled_start_time if upcoming else None)
