"""Several GPUs on one machine: the LocalCluster gives each worker its own (CUDA_VISIBLE_DEVICES).

CI has no GPU, so the cluster is started with GPU names given, and each real worker
process reports the environment it got: what torch in it would see. On a CUDA machine
`runners.session(config, device="auto")` passes visible_gpus() in their place.
"""

import os

import pytest
import torch

from embcache.flows import runners

pytestmark = pytest.mark.slow


def test_worker_envs_give_each_worker_one_gpu_and_a_share_of_the_cores():
    assert runners.worker_envs(2, [], cores=2) == [{"OMP_NUM_THREADS": "1"}] * 2
    envs = runners.worker_envs(4, ["0", "GPU-5f3e"], cores=16)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "GPU-5f3e", "0", "GPU-5f3e"]
    assert {e["OMP_NUM_THREADS"] for e in envs} == {"4"}
    assert runners.worker_envs(3, ["1"], cores=2)[2]["OMP_NUM_THREADS"] == "1"     # never 0 threads


def test_visible_gpus_follow_torch():
    if not torch.cuda.is_available():
        assert runners.visible_gpus() == []           # a CPU machine: the cluster stays as it was
    else:
        assert len(runners.visible_gpus()) == torch.cuda.device_count()


def test_each_worker_process_sees_only_its_own_gpu():
    from distributed import Client
    before = dict(os.environ)
    with runners.local_cluster(gpus=["0", "1"]) as cluster, Client(cluster) as client:
        seen = client.run(lambda: (os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("OMP_NUM_THREADS")))
        threads = client.nthreads()
    assert sorted(v[0] for v in seen.values()) == ["0", "1"]         # one worker per GPU, by default
    assert {v[1] for v in seen.values()} == {str(max(1, runners.available_cores() // 2))}
    assert set(threads.values()) == {1}
    assert dict(os.environ) == before                                # this process's environment untouched


def test_run_configs_set_the_device_and_precision(tmp_path):
    from embcache.flows.errors import ConfigError
    from embcache.flows.run_config import load_config
    from embcache.pipeline.configs import output_fields
    path = tmp_path / "gpu.toml"
    path.write_text('[bert]\ndevice = "cuda:1"\nprecision = "bf16"\n[compare]\ndevice = "cuda"\n')
    cfg = load_config(path)
    assert (cfg.encode.device, cfg.encode.precision, cfg.finetune.device) == ("cuda:1", "bf16", "cuda")
    assert output_fields(cfg.encode)["precision"] == "bf16" and "device" not in output_fields(cfg.encode)
    path.write_text('[bert]\ndevice = "gpu0"\n')
    with pytest.raises(ConfigError, match=r"\[bert\].*device"):
        load_config(path)
