"""--device on a machine whose torch sees no CUDA GPU: one line naming what to install, exit 2.

The real console script in a subprocess, before any store, corpus or Prefect server is touched.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from embcache.cli.app import EXIT_USAGE

EMBCACHE = os.path.join(os.path.dirname(sys.executable), "embcache")    # the console script

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


@pytest.mark.parametrize("args", [["featurize", "bert", "news", "--device", "cuda"],
                                  ["featurize", "bert", "news", "--device", "cuda:1", "--precision", "bf16"],
                                  ["finetune", "news", "--device", "cuda"]])
def test_cuda_without_a_cuda_torch_is_one_line_naming_what_to_install(tmp_path, args):
    done = subprocess.run([EMBCACHE, "--store", str(tmp_path / "no-store"), *args], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == EXIT_USAGE, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("error: device 'cuda") and "install a CUDA build of torch" in lines[0]
    assert "--device cpu" in lines[0] and not (tmp_path / "no-store").exists()


def test_a_misspelt_device_is_refused_by_the_option(tmp_path):
    done = subprocess.run([EMBCACHE, "--store", str(tmp_path), "featurize", "bert", "news", "--device", "gpu"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_USAGE and "auto, cpu, cuda, cuda:N or mps" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_run_config_asking_for_cuda_fails_before_anything_runs(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("a cat sat on the mat")
    (tmp_path / "gpu.toml").write_text('[[corpora]]\nname = "news"\nsources = [{path = "docs", format = "files"}]\n'
                                       '[bert]\ndevice = "cuda"\n')
    done = subprocess.run([EMBCACHE, "--store", str(tmp_path / "store"), "run", "gpu.toml"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == EXIT_USAGE and "install a CUDA build of torch" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "store").exists()
