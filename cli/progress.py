"""Progress bars for the commands that run flows in this process."""

from __future__ import annotations

from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .app import err


@contextmanager
def progress_bars():
    """Rich bars fed by flows.progress while a flow runs in this process.

    Redrawn 4 times a second on a terminal. Elsewhere (a pipe, a log file) nothing is
    drawn until the end, so no refresh thread rebuilds them meanwhile (at rich's default
    10 per second it took 0.6 % of a core from encoding); their final state is printed once.
    """
    from ..flows import progress
    bars = Progress(TextColumn("{task.description:>9}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False,
                    auto_refresh=err.is_terminal, refresh_per_second=4)
    ids: dict[str, int] = {}

    def report(stage: str, n: int, total: int) -> None:
        if stage not in ids:
            ids[stage] = bars.add_task(stage, total=total or None)
        bars.advance(ids[stage], n)

    progress.set_reporter(report, lambda text: bars.console.print(text, highlight=False, soft_wrap=True))
    try:
        with bars:
            yield
    finally:
        progress.set_reporter(None)
