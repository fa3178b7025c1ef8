"""Where a flow's shard tasks run: Prefect's thread pool in this process, or a Dask cluster.

    embcache --runner dask featurize bert bbc                          # a LocalCluster, one process per core
    embcache --runner dask --dask-address tcp://sched:8786 run cfg.toml   # an existing cluster

A command opens one `session`: with Dask and no address it starts a LocalCluster
(processes, `workers` of them, one thread each; on a machine whose torch sees GPUs, one
worker per GPU, each seeing only its own: `worker_envs`) that every flow of the command shares
(`embcache run` has several); `on(flow)` then gives a flow a prefect-dask
DaskTaskRunner connected to it. Inside a flow, `map_shards` sends one task per shard to
wherever the flow's task runner puts tasks. Without a session, flows run as before.

Tasks take plain picklable arguments (plans: frozen dataclasses of strings, numbers and
dicts; lists of text hashes) and return row counts; every worker process loads a model
or vocabulary once (lru_cache in stages/bert.py and stages/word2vec.py) and commits its
own shards through the store's lock. Prefect imports stay inside the functions: the
CLI imports this module for its options and must start fast.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from ..pipeline.cores import available_cores
from ..storage.memory import worker_environment
from .errors import RunnerError

from . import progress


@dataclass(frozen=True)
class RunnerConfig:
    kind: Literal["threads", "dask"] = "threads"   # threads: Prefect's thread pool in this process
    address: str | None = None     # Dask scheduler (tcp://host:8786); None: a LocalCluster for the command
    workers: int | None = None     # LocalCluster worker processes; None: the cores this process may use

    def __post_init__(self):
        if self.kind not in ("threads", "dask"):
            raise RunnerError("runner", f"kind must be threads or dask, got {self.kind!r}")
        if self.kind == "threads" and (self.address or self.workers):
            raise RunnerError("runner", "address and workers apply to the dask runner only")
        if self.address and self.workers:
            raise RunnerError("runner", "workers sizes the LocalCluster started without an address; "
                                          "a cluster at an address has its own workers")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            raise RunnerError("runner", f"workers must be a positive integer, got {self.workers!r}")


_address: str | None = None   # the scheduler that `on` connects flows to, while a dask session is open


@contextmanager
def session(config: RunnerConfig | None, device: str = "auto") -> Iterator[str | None]:
    """Make `on(flow)` run flows on `config`'s runner for the block; yields the scheduler address.

    None (nothing chosen) is the thread runner. device: where the command's BERT runs
    (EncodeConfig.device): a LocalCluster on a machine whose torch sees GPUs gives each worker
    its own GPU when it is auto or cuda (`gpu_workers`); cpu, and a cluster at an address,
    leave the workers as they are."""
    global _address
    if config is None or config.kind == "threads":
        yield None
        return
    try:
        import prefect_dask  # noqa: F401
    except ImportError as e:
        raise RunnerError("runner", f"the dask runner needs prefect-dask ({e}): "
                                      "pip install 'embcache[dask]'") from None
    with ExitStack() as stack:
        gpus = visible_gpus() if device in ("auto", "cuda") and not config.address else []
        address = config.address or stack.enter_context(local_cluster(config.workers, gpus)).scheduler_address
        stack.enter_context(api_for_workers(address))
        before, _address = _address, address
        try:
            yield address
        finally:
            _address = before


def visible_gpus() -> list[str]:
    """The CUDA GPUs this process may use, as CUDA_VISIBLE_DEVICES names them ("0", "1", … or
    the UUIDs it lists); none when torch has no CUDA. torch counts through NVML, without
    creating a CUDA context, so forked or spawned workers can still use the GPUs."""
    import torch
    count = torch.cuda.device_count() if torch.version.cuda is not None else 0
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return (listed or [str(i) for i in range(count)])[:count]


def worker_envs(workers: int, gpus: list[str], cores: int) -> list[dict[str, str]]:
    """Each LocalCluster worker's environment: its share of the cores (OMP_NUM_THREADS) and,
    when there are GPUs, one of them (CUDA_VISIBLE_DEVICES, round robin: worker i gets gpus[i % n]),
    so torch in worker i sees that GPU alone, as cuda:0, and `--device cuda`/auto uses it.

    >>> [env["CUDA_VISIBLE_DEVICES"] for env in worker_envs(3, ["0", "1"], cores=12)]
    ['0', '1', '0']
    >>> worker_envs(3, ["0", "1"], cores=12)[2]
    {'OMP_NUM_THREADS': '4', 'CUDA_VISIBLE_DEVICES': '0'}
    """
    share = str(max(1, cores // workers))
    return [{"OMP_NUM_THREADS": share, **({"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} if gpus else {})}
            for i in range(workers)]


@contextmanager
def local_cluster(workers: int | None = None, gpus: list[str] | None = None):
    """A Dask LocalCluster of worker processes with one thread each.

    Each worker's share of the cores goes to its environment as OMP_NUM_THREADS, which
    pipeline.cores.available_cores honours: torch in 2 workers on 2 cores uses 1 thread
    each, in 1 worker both (Dask's own default is 1 per worker, whatever the machine).
    With `gpus` (visible_gpus()), one worker per GPU by default, each seeing only its own
    (worker_envs): what dask-cuda's LocalCUDACluster does, built from distributed's
    SpecCluster so that no other package is needed.
    """
    from distributed import LocalCluster, Nanny, Scheduler, SpecCluster
    gpus = list(gpus or [])
    n = workers or len(gpus) or available_cores()
    envs = [{**env, **worker_environment()} for env in worker_envs(n, gpus, available_cores())]
    saved = dict(os.environ)
    log = logging.getLogger("distributed")     # scheduler and nannies log here, at INFO, per event
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        if gpus:
            cluster = SpecCluster(
                scheduler={"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": ":0"}},
                workers={f"gpu-{i}-{env['CUDA_VISIBLE_DEVICES']}": {
                    "cls": Nanny, "options": {"nthreads": 1, "host": "127.0.0.1", "env": env,
                                              "silence_logs": logging.WARNING}} for i, env in enumerate(envs)},
                silence_logs=logging.WARNING)
        else:
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                   silence_logs=logging.WARNING, env=envs[0])
        with cluster:
            _restore_environ(saved)
            yield cluster
    finally:
        _restore_environ(saved)
        log.setLevel(level)


def _restore_environ(saved: dict[str, str]) -> None:
    """Undo what Dask's nannies set in this process to spawn workers (OMP_NUM_THREADS=1 among
    them), which would otherwise leave this process's own stages (training) on one core."""
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


@contextmanager
def api_for_workers(address: str):
    """A Prefect API that worker processes can reach, for the block.

    With no PREFECT_API_URL set, Prefect runs an ephemeral server per process, so each
    Dask worker would start (and wait for) its own. Instead this starts the one this
    process would use and names it in the settings, which prefect-dask sends along with
    every task. A remote cluster needs PREFECT_API_URL set to a server its workers reach.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings
    if PREFECT_API_URL.value():
        yield
        return
    host = urlsplit(address).hostname or ""
    if host not in ("localhost", "::1") and not host.startswith("127."):
        logging.getLogger(__name__).warning(
            "Dask scheduler %s may be on another machine, whose workers cannot reach this process's "
            "temporary Prefect server on 127.0.0.1: set PREFECT_API_URL to a server they can reach", address)
    from prefect.server.api.server import SubprocessASGIServer
    server = SubprocessASGIServer()   # the instance this process's ephemeral client uses
    server.start()
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield


def on(flow):
    """`flow` with a DaskTaskRunner on the session's cluster, or `flow` itself outside a dask session."""
    if _address is None:
        return flow
    from prefect_dask import DaskTaskRunner
    return flow.with_options(task_runner=DaskTaskRunner(address=_address))


def dask_threads() -> int | None:
    """Worker threads of the Dask cluster the current flow runs its tasks on; None if not on Dask."""
    from prefect.context import FlowRunContext
    ctx = FlowRunContext.get()
    runner = getattr(ctx, "task_runner", None)
    dask = sys.modules.get("prefect_dask")       # a DaskTaskRunner means it is imported (importing it: ~0.8 s)
    if dask is None or not isinstance(runner, dask.DaskTaskRunner):
        return None
    return max(1, sum(runner.client.nthreads().values()))


def map_shards(task, plan, shards: Iterable[list[str]], total: int, stage: str, in_flight: int = 1) -> list[int]:
    """`task(plan, keys, total)` for every shard; the rows each committed, in shard order.

    Thread runner: `in_flight` tasks at once; 1 calls them one after another in the
    flow's thread (a shard that already uses every core gains nothing from company).
    Dask: twice the cluster's threads in flight, so no worker waits for the next shard;
    progress is reported here, as tasks report it only to a reporter in their own process.
    """
    threads = dask_threads()
    if threads is None and in_flight <= 1:
        return [task(plan, keys, total) for keys in shards]
    window = 2 * threads if threads else in_flight
    results, running = [], deque()

    def collect() -> None:
        future, n = running.popleft()
        results.append(future.result())
        if threads:
            progress.advance(stage, n, total)

    for keys in shards:
        if len(running) >= window:
            collect()
        running.append((task.submit(plan, keys, total), len(keys)))
    while running:
        collect()
    return results
