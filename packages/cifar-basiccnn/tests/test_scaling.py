"""Scale-out on one machine: a two-node torchrun job on the loopback address, and SLURM's environment.

The two "nodes" are two processes talking gloo over 127.0.0.1, exactly as two machines would, minus
the network; docs/scaling.md has the same commands.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

BIN = Path(sys.executable).parent
JOB = ["data=synthetic", "data.train_size=1200", "data.test_size=301", "batch_size=64",
       "trainer.num_nodes=2", "trainer.strategy=ddp", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_node(rank: int, port: int, *overrides: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank),
           "--master-addr", "127.0.0.1", "--master-port", str(port), str(BIN / "basiccnn-train"), *JOB, *overrides]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def two_nodes(*overrides: str, timeout: float = 600) -> list[subprocess.CompletedProcess]:
    port = free_port()
    procs = [launch_node(r, port, *overrides) for r in (0, 1)]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout), *p.communicate()) for p in procs]


@pytest.mark.slow
def test_two_node_torchrun_job_trains_once_writes_once_and_resumes_after_a_rank_is_killed(tmp_path):
    out = tmp_path / "run"
    # first launch: killed (SIGKILL to node 1's whole process tree) once epoch 1's checkpoint exists
    port = free_port()
    procs = [launch_node(r, port, "epochs=4", f"output_dir={out}") for r in (0, 1)]
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and time.monotonic() < deadline and procs[0].poll() is None:
        time.sleep(0.5)
    assert last.exists(), procs[0].communicate()[1][-2000:]
    os.killpg(procs[1].pid, signal.SIGKILL)
    for p in procs:
        try:
            p.communicate(timeout=15)  # node 0 may wait on its dead peer: the relaunch restarts both anyway
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
    assert procs[1].returncode != 0

    # relaunch both: the job resumes from last.ckpt and finishes
    node0, node1 = two_nodes("epochs=4", f"output_dir={out}")
    assert node0.returncode == 0 and node1.returncode == 0, node0.stderr[-2000:] + node1.stderr[-2000:]
    assert "resuming from" in node0.stdout
    assert node0.stdout.count("epoch 4/4") == 1 and node1.stdout == ""  # rank zero alone prints
    assert node0.stdout.count("epoch ") < 4  # the epochs before the kill were not trained again
    assert "effective batch 128 images per optimizer step" in node0.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == list(range(1, 5))
    assert metrics["device"]["world_size"] == 2
    assert sum(map(sum, metrics["test"]["confusion_matrix"])) == 301  # every test image once, across both ranks
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # one run folder


def test_a_launched_job_without_output_dir_is_one_line(tmp_path):
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "1"}
    done = subprocess.run([BIN / "basiccnn-train", "data=synthetic"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "set output_dir=PATH" in done.stderr
    assert "2 processes started by torchrun" in done.stderr and not (tmp_path / "outputs").exists()


SLURM_PROBE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from pytorch_lightning.utilities import rank_zero_only
    from cifar_shared.engine.callbacks import RunRecorder
    from cifar_shared.engine.cli import compose_config
    from cifar_shared.engine.train import build_trainer, setup_logging
    out = Path(sys.argv[1])
    cfg = compose_config("cifar_basiccnn.conf", ["data=synthetic", "trainer.num_nodes=2", "trainer.devices=2",
                                                 "trainer.strategy=ddp", "trainer.accelerator=cpu", f"output_dir={out}"])
    out.mkdir()
    setup_logging(out / "train.log")
    t = build_trainer(cfg, RunRecorder(out / "metrics.json", ["a"]))
    env = t.strategy.cluster_environment
    print(json.dumps({"env": type(env).__name__, "world": t.world_size, "rank": t.global_rank, "local": t.local_rank,
                      "node": t.node_rank, "main": env.main_address, "writer": rank_zero_only.rank == 0}))
""")


def test_slurm_environment_resolves_world_ranks_and_a_single_writer(tmp_path):
    """What srun sets for task 3 of a 2-node x 2-task job: Lightning's SLURM environment picks it up
    through our trainer factory, and only task 0 would write the run folder."""
    slurm = {"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
             "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "cifar", "SLURM_NODELIST": "gpu[07-08]", "SLURM_JOB_NUM_NODES": "2"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run([sys.executable, "-c", SLURM_PROBE, str(tmp_path / "run")], capture_output=True, text=True, env={**env, **slurm})
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got == {"env": "SLURMEnvironment", "world": 4, "rank": 3, "local": 1, "node": 1, "main": "gpu07", "writer": False}
    assert not (tmp_path / "run" / "train.log").exists()  # rank 3 opens no train.log


@pytest.mark.slow
def test_a_sweep_through_the_submitit_launcher_runs_each_job_and_reports(tmp_path):
    """`-m hydra/launcher=submitit_local`: the cluster launcher's local twin (same pickling, same job
    folders), so `hydra/launcher=slurm` differs only in where submitit sends the jobs."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the cluster extra (hydra-submitit-launcher)")
    out = tmp_path / "sweep"
    done = subprocess.run([BIN / "basiccnn-train", "-m", "hydra/launcher=submitit_local", "seed=1,2", "data=synthetic",
                           "data.train_size=200", "data.test_size=50", "epochs=1", "trainer.enable_progress_bar=false",
                           f"output_dir={out}"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    seeds = [OmegaConf.load(out / job / "config.yaml").seed for job in ("0", "1")]
    assert seeds == [1, 2] and all(len(json.loads((out / job / "metrics.json").read_text())["history"]) == 1 for job in ("0", "1"))
    report = subprocess.run([BIN / "cifar-report", str(out), "--out", str(tmp_path / "report.md")], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    table = (tmp_path / "report.md").read_text()
    assert f"{out}/0 " in table and f"{out}/1 " in table and "mean ± sd of 2" in table
