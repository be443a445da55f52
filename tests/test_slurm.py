"""The workflow on a real SLURM cluster: a single-node SLURM (Debian's slurmctld, slurmd and munge, which `.ci/run`
installs through scripts/install_system_packages.sh) started by this module as root, and the smoke config run through
`snakemake --executor slurm` with the shipped profile (`profiles/slurm/`) to the final table.

Settings that work in a container, and the status-polling hang they avoid, are in ../shared/notes/snakemake.md: no
accounting database, so job states come from `squeue` (the profile says so), with MinJobAge well above the first
status check. The daemons are stopped by their PIDs afterwards, never by name. Skipped, with the reason, where the
SLURM packages are not installed or the tests do not run as root; the local workflow is tested in test_workflow.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from benchmark import layout
from benchmark.config import load_config
from benchmark.plan import Plan
from conftest import REPO

DAEMONS = ("munged", "slurmctld", "slurmd")
METHODS = ["finetune", "l2sp"]  # two methods of the smoke config: every stage runs, in about two minutes

needs_slurm = pytest.mark.skipif(
    any(shutil.which(tool, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"])) is None for tool in (*DAEMONS, "sbatch", "squeue"))
    or os.geteuid() != 0,
    reason="needs Debian's slurmctld, slurmd, slurm-client and munge (scripts/install_system_packages.sh) and root to start them",
)


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what} within {seconds} s")


def _stop(pid_file: Path) -> None:
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def _slurm_conf(folder: Path) -> str:
    host = socket.gethostname().split(".")[0]
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 1024
    return "\n".join(
        [
            "ClusterName=ganbench",
            f"SlurmctldHost={host}(127.0.0.1)",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "MpiDefault=none",
            # Configless: slurmd fetches this file from the controller and keeps it in /run/slurm/conf, where commands
            # inside a job find it (the jobstep plugin drops SLURM_CONF from the job's `srun`).
            "SlurmctldParameters=enable_configless",
            "ReturnToService=2",
            "MinJobAge=300",  # squeue knows a finished job this long: well above the first status check (2 s here, 10 s in the profile)
            f"StateSaveLocation={folder}/state",
            f"SlurmdSpoolDir={folder}/spool",
            f"SlurmctldPidFile={folder}/slurmctld.pid",
            f"SlurmdPidFile={folder}/slurmd.pid",
            f"SlurmctldLogFile={folder}/slurmctld.log",
            f"SlurmdLogFile={folder}/slurmd.log",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={memory_mb} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory) -> Iterator[dict[str, str]]:
    """A running single-node SLURM; yields the environment its clients need (SLURM_CONF)."""
    folder = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    conf = folder / "slurm.conf"
    conf.write_text(_slurm_conf(folder))
    env = {**os.environ, "SLURM_CONF": str(conf), "PATH": os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"])}
    had_run_slurm = Path("/run/slurm").exists()
    munge_run = Path("/run/munge")
    munge_run.mkdir(exist_ok=True)
    shutil.chown(munge_run, "munge", "munge")
    munge_pid = folder / "munged.pid"
    # munged refuses to run as root: it runs as its own user, writing its pid file where that user may write
    subprocess.run(["runuser", "-u", "munge", "--", "munged", "--pid-file", "/run/munge/test-munged.pid"], env=env, check=True)
    shutil.copy("/run/munge/test-munged.pid", munge_pid)
    try:
        subprocess.run(["slurmctld"], env=env, check=True)
        subprocess.run(["slurmd", "--conf-server", "127.0.0.1"], env={k: v for k, v in env.items() if k != "SLURM_CONF"}, check=True)

        def node_idle() -> bool:
            shown = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            return shown.returncode == 0 and shown.stdout.strip() == "idle"

        _wait(node_idle, 60, "the SLURM node did not come up idle")
        yield env
    finally:
        for pid_file in (folder / "slurmd.pid", folder / "slurmctld.pid", munge_pid):
            _stop(pid_file)
        if not had_run_slurm:  # slurmd's link to its cached config
            shutil.rmtree("/run/slurm", ignore_errors=True)


@needs_slurm
def test_smoke_config_runs_through_the_slurm_executor_to_the_final_table(slurm_cluster, tmp_path):
    """Each training or scoring job is one `sbatch` allocation sized from its rule's resources; the seeds of each
    run group train in one job as one batched model (`seed_batching=vectorised`). The table holds every run; the
    SLURM controller allocated every job Snakemake submitted."""
    config_path = REPO / "tests" / "smoke_config.yaml"
    command = [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
        "--workflow-profile", str(REPO / "profiles" / "slurm"), "--jobs", "4",
        "--slurm-init-seconds-before-status-checks", "2", "table",  # the target before --configfile and --config, which take lists
        "--configfile", str(config_path), "--config", f"methods={json.dumps(METHODS)}", "seed_batching=vectorised",
    ]  # fmt: skip
    started = time.monotonic()
    # A hang (the status-polling one above) must fail the test, not the CI run: a hard limit, and SIGKILL after it.
    result = subprocess.run(["timeout", "-k", "10", "900", *command], capture_output=True, text=True, cwd=REPO, env=slurm_cluster)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-4000:]

    config = load_config(config_path)
    config["methods"] = METHODS
    runs = Plan(config).runs
    frame = pd.read_csv(tmp_path / layout.RESULTS_CSV)
    assert {(r.task, r.method, r.seed) for r in runs} == set(map(tuple, frame[["task", "method", "seed"]].drop_duplicates().to_numpy()))
    table = (tmp_path / layout.RESULTS_TABLE).read_text()
    assert all(method in table for method in METHODS)
    for run in runs:
        record = json.loads((tmp_path / run.run_dir / "config.json").read_text())
        assert record["trained_in_batch_of"] == len(config["seeds"])
    # SLURM ran the jobs: each one Snakemake submitted was allocated by the controller, every stage among them.
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: .*?/slurm_logs/rule_([a-z_]+)/", result.stderr)
    controller_log = (Path(slurm_cluster["SLURM_CONF"]).parent / "slurmctld.log").read_text()
    allocated = set(re.findall(r"Allocate JobId=(\d+)", controller_log)) | set(re.findall(r"_start_job: Started JobId=(\d+)", controller_log))
    assert {job for job, _ in submitted} <= allocated, (submitted, sorted(allocated))
    # Training and scoring go through the queue; data, splits and tables are local rules (the Snakefile says why).
    assert {rule for _, rule in submitted} == {"train_encoder", "pretrain", "adapt_seeds", "evaluate_seeds"}
    print(f"SLURM smoke run: {len(submitted)} jobs in {elapsed:.0f} s")
