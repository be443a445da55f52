"""One GPU per job on a local multi-GPU node (`benchmark.devices`), and the GPU each training rule asks for.

No GPU is needed: the slot claim only reads the GPU count (GANBENCH_GPUS here) and sets CUDA_VISIBLE_DEVICES before
CUDA starts. A claim that did not hold its lock (closing the slot file at once) would give two concurrent jobs the
same GPU; the second test fails on it (shown in its body)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmark import devices
from conftest import REPO


@pytest.fixture
def two_gpus(monkeypatch, tmp_path):
    """Two GPUs; slot files in a folder that does not exist yet (the claim makes it)."""
    locks = tmp_path / "locks" / "gpus"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("GANBENCH_GPUS", "2")
    monkeypatch.setenv("GANBENCH_GPU_LOCKS", str(locks))
    monkeypatch.setattr(devices, "_held", [])
    yield locks
    for descriptor in devices._held:
        os.close(descriptor)


def claim_in_fresh_process(lock_dir) -> subprocess.Popen:
    """A job: claims a slot, prints CUDA_VISIBLE_DEVICES, then holds its slot until killed."""
    code = "import os, sys, time; from benchmark.devices import claim_gpu_slot; claim_gpu_slot('auto'); print(os.environ.get('CUDA_VISIBLE_DEVICES'), flush=True); time.sleep(60)"
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"} | {"GANBENCH_GPUS": "2", "GANBENCH_GPU_LOCKS": str(lock_dir)}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)


def test_concurrent_jobs_get_different_gpus_and_a_killed_job_frees_its_own(two_gpus):
    first, second = claim_in_fresh_process(two_gpus), claim_in_fresh_process(two_gpus)
    try:
        assert {first.stdout.readline().strip(), second.stdout.readline().strip()} == {"0", "1"}
        third = claim_in_fresh_process(two_gpus)  # more GPU jobs than GPUs: none is free, nothing is set
        assert third.stdout.readline().strip() == "None"
        third.kill()
        first.kill()
        first.wait()
        again = claim_in_fresh_process(two_gpus)
        assert again.stdout.readline().strip() != "None"  # the killed job's slot is free again
        again.kill()
    finally:
        for process in (first, second):
            process.kill()


def test_a_claim_holds_its_slot_for_the_life_of_the_process(two_gpus, monkeypatch):
    assert devices.claim_gpu_slot("auto") == 0 and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert devices.claim_gpu_slot("cuda") == 1
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert devices.claim_gpu_slot("auto") is None and "CUDA_VISIBLE_DEVICES" not in os.environ
    # A broken claim that lets go of its lock at once hands the next job a GPU that is in use.
    for descriptor in devices._held:
        os.close(descriptor)
    devices._held.clear()
    assert devices.claim_gpu_slot("auto") == 0  # slot 0 looks free again: that is what holding the file prevents


def test_nothing_is_claimed_where_the_scheduler_chose_on_the_cpu_or_with_one_gpu(two_gpus, monkeypatch):
    assert devices.claim_gpu_slot("cpu") is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # SLURM's choice for a job with --gpus=1
    assert devices.claim_gpu_slot("auto") is None and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("GANBENCH_GPUS", "1")
    assert devices.claim_gpu_slot("auto") is None and "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not two_gpus.exists()  # no slot file was made
    monkeypatch.setenv("GANBENCH_GPUS", "eight")
    with pytest.raises(devices.BenchmarkError, match="GANBENCH_GPUS is 'eight'"):
        devices.claim_gpu_slot("auto")


def test_a_job_claims_one_of_several_gpus_it_was_given(two_gpus, monkeypatch):
    """A share of a server (CUDA_VISIBLE_DEVICES=2,5): jobs claim those GPUs, each its own."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert devices.claim_gpu_slot("auto") == 0 and os.environ["CUDA_VISIBLE_DEVICES"] == "2"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert devices.claim_gpu_slot("auto") == 1 and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    assert sorted(path.name for path in two_gpus.iterdir()) == ["gpu2.lock", "gpu5.lock"]


def test_the_gpu_count_comes_from_the_driver_s_device_files(monkeypatch, tmp_path):
    monkeypatch.delenv("GANBENCH_GPUS", raising=False)
    monkeypatch.setattr(devices, "DEVICE_FILES", tmp_path)
    assert devices.gpu_count() == 0
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm", "nvidia-modeset"):  # only nvidia<N> are GPUs
        (tmp_path / name).touch()
    assert devices.gpu_count() == 3


def dry_run_resources(tmp_path, *config: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "2", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(REPO / "tests" / "smoke_config.yaml"), "--config", *config],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.mark.parametrize(("device", "gpus"), [("cuda", 1), ("cpu", 0)])
def test_training_rules_ask_for_a_gpu_exactly_when_the_device_is_one(tmp_path, device, gpus):
    shown = dry_run_resources(tmp_path, f"device={device}", "seed_batching=vectorised")
    jobs = [block for block in shown.split("\nrule ")[1:]]
    training = [block for block in jobs if block.split(":")[0] in ("pretrain", "train_encoder", "adapt_seeds", "evaluate_seeds")]
    assert training and all(f"gpu={gpus}" in block for block in training)
    assert any(block.startswith("adapt_seeds") for block in training)
