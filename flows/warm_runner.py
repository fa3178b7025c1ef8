"""Scheduled runs of one deployment, executed in this process, one at a time, warm.

Why not Prefect's own `flow.serve` / Runner: Prefect 3.8's Runner starts every flow run
as a new Python process (`python -m prefect.engine`, or a spawned process for a served
flow object), so each scheduled run paid for its imports (torch, transformers, Prefect:
~8 s on 2 cores), its model loads and a new API client before its first stage; a run
that found 3 new files of 30 took 12.0 s. Here the runs execute in the serving process
itself, through the same calls the Runner's child makes:

    poll   client.get_scheduled_flow_runs_for_deployments([id], scheduled_before=now)
    claim  propose_state(Pending)      the server applies the deployment's concurrency limit
    run    flow_engine.run_flow(flow, flow_run=...)   Running -> Completed / Failed / Crashed,
                                       logs, task runs and subflows, as in any process

so each run is a real flow run under the deployment in the UI, with its logs and task
runs, and what the stages cache per process stays loaded (the BERT model and tokenizer,
vocabularies: stages/bert.py, stages/word2vec.py), as do Prefect's client and its log and
event workers.

The trade-off is isolation. A run that leaks memory or corrupts the interpreter state
affects the next runs (the Runner's fresh process per run would not carry it over); a
run cannot be killed without stopping the serving process (one cancelled from the UI
runs to its end, then is marked Cancelled); and edits to embcache's own
code take effect at the next `embcache schedule`, not the next run (the run config is
re-read by every run). The store's commits make an interrupted run safe either way.

One run at a time: runs that came due while another was working, or together, are
cancelled with a message, except the latest, which picks up everything that arrived
(ingest reads every source afresh) - what the deployment's CANCEL_NEW limit does to a
run that comes due while another holds the slot.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from .prefect_server import StopRequested, raise_stop


@dataclass(frozen=True)
class ScheduledRun:
    """What one scheduled run did: the schedule's terminal prints a line of it."""
    flow_run: str                  # the flow run's name, as the UI shows it ('crimson-otter')
    flow_run_id: str
    scheduled: datetime | None     # when it came due
    started: datetime              # when this process took it (or cancelled it)
    seconds: float                 # from taking it to its final state (0 for one cancelled unstarted)
    state: str                     # COMPLETED, FAILED, CRASHED, CANCELLED
    message: str = ""              # why it failed or was cancelled
    record: dict | None = None     # the run record pipeline_flow returned (completed runs)


def poll_seconds(poll: float | None) -> float:
    """`poll`, else Prefect's PREFECT_RUNNER_POLL_FREQUENCY (what a served flow's Runner polls at)."""
    if poll is not None:
        return float(poll)
    from prefect.settings import PREFECT_RUNNER_POLL_FREQUENCY
    return float(PREFECT_RUNNER_POLL_FREQUENCY.value())


class WarmRunner:
    """Polls one deployment for due runs and executes each in this process, one after another."""

    def __init__(self, flow, deployment_id, poll: float | None, on_run, on_note):
        self.flow = flow
        self.deployment_id = deployment_id
        self.poll = poll_seconds(poll)
        self.on_run = on_run           # on_run(ScheduledRun) after each run
        self.on_note = on_note         # on_note(str): paused, resumed, stopping

    def serve(self) -> str:
        """Until SIGTERM / SIGHUP / Ctrl-C ("stopped": the schedule is paused) or the deployment's
        deletion ("deleted")."""
        from prefect.context import SyncClientContext
        previous = {sig: signal.signal(sig, raise_stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
        try:
            with SyncClientContext.get_or_create() as ctx:    # one client: the flow engine reuses it too
                try:
                    return self._loop(ctx.client)
                except (KeyboardInterrupt, StopRequested):
                    self._pause(ctx.client)
                    return "stopped"
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _loop(self, client) -> str:
        import httpx
        from prefect.exceptions import ObjectNotFound
        self._paused, unreachable = None, False
        while True:
            try:
                self._poll_once(client)
                if unreachable:
                    self.on_note("the Prefect server answers again")
                unreachable = False
            except ObjectNotFound:
                return "deleted"
            except httpx.HTTPError as e:      # a server restart or a network blip: keep serving, say so once
                if not unreachable:
                    self.on_note(f"the Prefect server did not answer ({type(e).__name__}: {e}); "
                                 f"trying again every {self.poll:g} s")
                unreachable = True
                time.sleep(self.poll)

    def _poll_once(self, client) -> None:
        """One look at the deployment: note a pause or resume; run what came due, or sleep a poll interval."""
        deployment = client.read_deployment(self.deployment_id)
        if deployment.paused != self._paused:
            if self._paused is not None:
                self.on_note("schedule paused: no runs until it is resumed" if deployment.paused
                             else "schedule resumed")
            self._paused = deployment.paused
        # polled while paused too: the server then shows the deployment as served (status READY)
        due = client.get_scheduled_flow_runs_for_deployments(
            deployment_ids=[self.deployment_id], scheduled_before=datetime.now(timezone.utc))
        if self._paused or not due:
            time.sleep(self.poll)            # a signal interrupts the sleep: StopRequested / KeyboardInterrupt
            return
        due.sort(key=lambda r: r.next_scheduled_start_time or r.expected_start_time or r.created)
        *earlier, latest = due
        for run in earlier:
            self._cancel(client, run, f"one run at a time: {latest.name!r} came due too and runs instead, "
                                      f"picking up everything that arrived")
        self._execute(client, latest)

    def _execute(self, client, run) -> None:
        """Claim `run` (Scheduled -> Pending) and run it here, in this thread; report how it ended."""
        from prefect.exceptions import Abort
        from prefect.flow_engine import run_flow
        from prefect.states import Cancelled, Pending
        from prefect.utilities.engine import propose_state_sync
        started, t = datetime.now(timezone.utc), time.perf_counter()
        try:
            state = propose_state_sync(client, Pending(), flow_run_id=run.id)
        except Abort as e:                    # gone meanwhile: deleted, or taken by another process
            self.on_note(f"run {run.name!r} not started: {e}")
            return
        if not state.is_pending():            # e.g. Cancelled: another process holds the deployment's slot
            self.on_run(self._report(run, started, t, state))
            return
        try:
            state = run_flow(self.flow, flow_run=client.read_flow_run(run.id), return_type="state")
        except Abort as e:                    # the server refused Running (cancelled before it began)
            self.on_note(f"run {run.name!r} not started: {e}")
            return
        except BaseException:                 # SIGTERM / Ctrl-C mid-run: its line, with the state Prefect gave it
            self._report_interrupted(client, run, started, t)
            raise
        if state.is_cancelling():             # cancelled from the UI while it ran: nothing here kills a run,
            state = propose_state_sync(       # so it ran to its end; settle it (and free the deployment's slot)
                client, Cancelled(message=f"{state.message or 'cancelled'}; it was running and ran to its end, "
                                          f"keeping what it committed"), flow_run_id=run.id, force=True)
        self.on_run(self._report(run, started, t, state))

    def _report_interrupted(self, client, run, started: datetime, t: float) -> None:
        try:
            state = client.read_flow_run(run.id).state
        except Exception:                     # noqa: BLE001 - the line is a courtesy; stopping goes on
            return
        if state is not None:              # read back from the server: it holds no result, so no record
            self.on_run(self._report(run, started, t, state, in_process=False))

    def _cancel(self, client, run, message: str) -> None:
        from prefect.exceptions import Abort
        from prefect.states import Cancelled
        from prefect.utilities.engine import propose_state_sync
        started = datetime.now(timezone.utc)
        try:
            state = propose_state_sync(client, Cancelled(message=message), flow_run_id=run.id)
        except Abort:
            return
        self.on_run(self._report(run, started, time.perf_counter(), state))

    def _report(self, run, started: datetime, t: float, state, in_process: bool = True) -> ScheduledRun:
        from prefect.exceptions import MissingResult
        record = None
        if in_process and state.is_completed():      # the flow's return value, held in memory
            try:
                result = state.result(raise_on_failure=False)
            except MissingResult:
                result = None
            record = result if isinstance(result, dict) else None
        return ScheduledRun(flow_run=run.name, flow_run_id=str(run.id),
                            scheduled=run.next_scheduled_start_time or run.expected_start_time, started=started,
                            seconds=round(time.perf_counter() - t, 3), state=state.type.value,
                            message=state.message or "", record=record)

    def _pause(self, client) -> None:
        """Pause the schedule: the server stops making runs that no process would take."""
        from prefect.exceptions import ObjectNotFound
        try:
            client.pause_deployment(self.deployment_id)
        except ObjectNotFound:
            pass
