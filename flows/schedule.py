"""The end-to-end flow on a schedule, run warm in this process: `embcache schedule CONFIG ...`.

    embcache prefect-server                                        # in one shell
    prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api   # once
    embcache schedule pipeline.toml --interval 600                 # deployment embcache-run/pipeline

`serve_schedule` registers (or updates) the deployment `embcache-run/<name>` on the
server at PREFECT_API_URL, then executes its scheduled runs in this process, one at a
time, with imports, models and the Prefect client kept warm between runs
(flows/warm_runner.py says why not Prefect's Runner). Each run re-reads the config,
ingests its sources (globs pick up new files) and computes only what the store lacks.
Ctrl-C or SIGTERM stops serving and pauses the schedule; `embcache schedule delete`
ends it (flows/schedule_admin.py lists, pauses, resumes and deletes schedules).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .prefect_server import PrefectServerError, PrefectServerOptionError, api_url_advice

FLOW_NAME = "embcache-run"           # pipeline_flow's name: deployments are embcache-run/<name>


class ScheduleOptionError(ConfigError):
    """A schedule option or name that cannot be used as given (a usage error, exit 2)."""

    def __init__(self, reason: str, where: str = "schedule"):
        super().__init__(where, reason)

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class ScheduleConfig:
    """One deployment of the end-to-end flow, `embcache-run/<name>`, and how this process serves it."""
    name: str                         # the deployment's name (runs of other names do not block these)
    config_path: str | None = None    # absolute TOML/YAML path, re-read by every run; None: embedded default
    store: str | None = None          # overrides the config's store (--store / $EMBCACHE_STORE given)
    cron: str | None = None           # a cron line, in UTC ("0 * * * *"); exactly one of cron / interval
    interval: float | None = None     # seconds between runs
    poll: float | None = None         # seconds between looks for due runs; None: PREFECT_RUNNER_POLL_FREQUENCY (10)


def check_schedule(s: ScheduleConfig) -> None:
    """Fail before anything is served: exactly one valid schedule."""
    if (s.cron is None) == (s.interval is None):
        raise ScheduleOptionError("give exactly one of --cron \"...\" or --interval SECONDS")
    if s.interval is not None and not s.interval > 0:
        raise ScheduleOptionError(f"--interval must be a positive number of seconds, got {s.interval:g}")
    if s.cron is not None:
        from prefect.client.schemas.schedules import CronSchedule
        try:
            CronSchedule(cron=s.cron)
        except ValueError:
            raise ScheduleOptionError(f"not a valid cron line: {s.cron!r} "
                                      f"(five fields: minute hour day month weekday)") from None


def server_for_schedules() -> str:
    """PREFECT_API_URL (environment or Prefect profile), checked to answer; else what to do.

    Schedules live on a Prefect server that outlives this command: a temporary one would
    vanish with it.
    """
    from prefect.client.orchestration import get_client

    from .prefect_server import configured_api_url
    url = configured_api_url()
    if not url:
        raise PrefectServerOptionError(
            "PREFECT_API_URL is not set, so there is no Prefect server to keep schedules on (a temporary "
            "one would vanish with this command). Start one with `embcache prefect-server` in another "
            f"shell, then `{api_url_advice('http://127.0.0.1:4200/api')}` (the line it prints)")
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise PrefectServerError(f"no Prefect server answers at PREFECT_API_URL={url} ({problem}): "
                                 f"is `embcache prefect-server` running?")
    return url


def deployment_parameters(s: ScheduleConfig) -> dict:
    """What every scheduled run of pipeline_flow is called with."""
    params = {}
    if s.config_path is not None:
        params["config_path"] = str(Path(s.config_path).resolve())
    if s.store is not None:        # a local path made absolute, as the UI shows it; a URL as given
        params["store"] = s.store if "://" in s.store else str(Path(s.store).resolve())
    return params


def apply_deployment(s: ScheduleConfig):
    """Create or update `embcache-run/<name>` with its schedule, unpaused; returns its id.

    One run at a time: the deployment's concurrency limit is 1 with CANCEL_NEW, so even a
    second process serving the same deployment cannot overlap a run (flows/warm_runner.py
    keeps one process's runs in line).
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.types.entrypoint import EntrypointType

    from .run import pipeline_flow
    deployment = pipeline_flow.to_deployment(
        name=s.name, cron=s.cron, interval=s.interval, parameters=deployment_parameters(s), paused=False,
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        description="embcache end-to-end run: ingest the config's sources, compute only what is new.",
        tags=["embcache"], entrypoint_type=EntrypointType.MODULE_PATH)  # embcache.flows.run.pipeline_flow
    deployment.work_pool_name = None      # served from a process, not a work pool (set after construction,
    deployment.work_queue_name = None     # as Prefect's Runner does, so an old work pool is cleared)
    return deployment.apply()


def serve_schedule(s: ScheduleConfig, on_run, on_note) -> str:
    """Serve `embcache-run/<name>` in this process until a signal or its deletion; returns why it stopped.

    on_run(ScheduledRun) after each run, on_note(str) for what the terminal should know
    (paused, resumed). SIGTERM / SIGHUP / Ctrl-C stop it and pause the schedule;
    `embcache schedule delete NAME` stops it with "deleted".
    """
    from .run import pipeline_flow
    from .warm_runner import WarmRunner
    deployment_id = apply_deployment(s)
    from . import featurize_flows, train_flows, word2vec_flows  # noqa: F401 - warm before the first run
    runner = WarmRunner(pipeline_flow, deployment_id, s.poll, on_run, on_note)
    return runner.serve()
