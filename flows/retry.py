"""Which task failures are worth a retry: Prefect's `retry_condition_fn` for every shard task.

A retry repeats the same work on the same store, so it helps only with what may pass:
a lock held too long, a flaky network or worker. It cannot help a full or read-only
disk, a damaged committed file (`embcache repair` is the cure), or bad input; those
fail the task at once, and the CLI prints their one line.

    @task(retries=1, retry_condition_fn=retryable)
"""

from __future__ import annotations

import errno

from ..pipeline.errors import PipelineError
from ..storage.errors import CorruptShard, FingerprintError, FormatError, InvalidName, SchemaMismatch

NEVER_RETRIED = (CorruptShard, FormatError, SchemaMismatch, FingerprintError, InvalidName, PipelineError)
# the disk is full (or over quota, or the file over its size limit), or read-only, or refuses us
FINAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def final(error: BaseException | None) -> bool:
    """True when a retry of the work that raised `error` would fail the same way."""
    while error is not None:                       # StoreError wraps the OSError it names
        if isinstance(error, NEVER_RETRIED):
            return True
        if isinstance(error, OSError) and error.errno in FINAL_ERRNOS:
            return True
        error = error.__cause__ or error.__context__
    return False


def retryable(task, task_run, state) -> bool:
    """Prefect's retry_condition_fn: retry unless the failure is `final`."""
    error = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return not final(error if isinstance(error, BaseException) else None)
