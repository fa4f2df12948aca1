"""Several processes per run (issue 5): `trainer=ddp` for real, with 2 CPU processes (gloo).

Lightning starts rank 1 by running the command again; the run must still leave one folder, its
report written once by rank 0, test metrics over the whole test split, both ranks' logs, and no
process behind. Every command runs in its own process session, killed whole after a timeout,
so a hung rank cannot hang the tests. The SLURM recipe (trainer=slurm) runs as two tasks with
the variables srun would set.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

TIMEOUT = 240  # seconds for one command, all of its processes included


@dataclass
class Done:
    argv: list[str]
    returncode: int
    output: str
    leftovers: list[str]  # processes of its session still running 10 s after it ended

    def describe(self) -> str:
        tail = "\n".join(self.output.splitlines()[-30:])
        return f"$ {' '.join(self.argv)}\nexit {self.returncode}, leftovers {self.leftovers}\n{tail}"


def session(sid: int) -> list[str]:
    """The processes still running (not zombies) in session `sid`: 'PID COMMAND LINE'."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.getsid(int(entry.name)) == sid \
                    and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(f"{entry.name} {(entry / 'cmdline').read_text().replace(chr(0), ' ')}")
        except OSError:  # ended meanwhile
            pass
    return found


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start argv in a new session (its pid is the session id)."""
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = TIMEOUT) -> Done:
    """Wait for proc and its children; after `timeout`, kill the whole session and fail."""
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"$ {' '.join(proc.args)} still ran after {timeout}s (killed)\n{output[-3000:]}")
    deadline = time.monotonic() + 10  # a rank may still be exiting after closing its output
    while (leftovers := session(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if leftovers:
        os.killpg(proc.pid, signal.SIGKILL)
    return Done(list(proc.args), proc.returncode, output, leftovers)


def dlopt(cli, *args: str, cwd: Path, module: bool = False, env: dict[str, str] | None = None) -> Done:
    """`dlopt ARGS` (or `python -m dlopt ARGS`) in cwd."""
    argv = [sys.executable, "-m", "dlopt", *args] if module else [cli.exe, *args]
    return finish(run(argv, cwd, {**cli.env(), **(env or {})}))


def ok(done: Done) -> Done:
    assert done.returncode == 0, done.describe()
    assert "Traceback" not in done.output, done.describe()
    assert not done.leftovers, done.describe()
    return done


def one_run_dir(cli, cwd: Path) -> Path:
    dirs = cli.run_dirs(cwd)
    assert len(dirs) == 1, dirs
    return dirs[0]


def assert_report(cli, run_dir: Path, logs: tuple[str, ...]) -> dict:
    """The files of a finished run, written once; its rank logs; sane metrics."""
    for name in ("metrics.json", "curves.png", "augmentations.png", "checkpoints/best.ckpt", ".hydra/config.yaml", *logs):
        assert (run_dir / name).is_file(), f"{name} missing in {sorted(p.name for p in run_dir.iterdir())}"
    assert sorted(p.name for p in run_dir.glob("*.log")) == sorted(logs)
    metrics = cli.metrics(run_dir)
    cli.assert_finite(metrics)
    assert metrics["epochs"] == 1 and 0 < metrics["test/loss"] < 10
    return metrics


def single_error_line(done: Done, *parts: str) -> str:
    assert done.returncode == 2, done.describe()
    assert "Traceback" not in done.output, done.describe()
    assert not done.leftovers, done.describe()
    errors = [line for line in done.output.splitlines() if line.startswith("dlopt train: ")]
    assert len(errors) == 1, done.describe()
    for part in parts:
        assert part in errors[0], errors[0]
    return errors[0]


# --- trainer=ddp: 2 processes started by Lightning ---------------------------------------------


def test_epoch_loss_is_a_mean_over_samples():
    """Batches split differently (one process, or two) give the same epoch loss: a short last
    batch weighs by its samples."""
    import torch
    import torch.nn.functional as F

    from dlopt.training.module import Classifier

    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    module = Classifier(net, torch.optim.SGD, num_classes=2, input_shift=torch.zeros(3), input_scale=torch.ones(3))
    x, y = torch.randn(71, 3), torch.randint(0, 2, (71,))
    module._step((x[:64], y[:64]), "test")
    module._step((x[64:], y[64:]), "test")
    with torch.no_grad():
        assert torch.isclose(module.losses["test_"].compute(), F.cross_entropy(net(x), y))



@pytest.fixture(scope="module")
def ddp_run(cli, tmp_path_factory) -> tuple[Done, Path]:
    """A tiny 2-process run, tested on the whole test split (3 batches per rank)."""
    cwd = tmp_path_factory.mktemp("ddp")
    start = time.perf_counter()
    done = ok(dlopt(cli, "train", "trainer=ddp", "trainer.devices=2", *cli.TINY, "trainer.limit_test_batches=null",
                    cwd=cwd))
    print(f"2-process tiny run: {time.perf_counter() - start:.1f}s")
    return done, one_run_dir(cli, cwd)


@pytest.mark.slow
def test_ddp_run_leaves_one_folder_written_once_by_rank_zero(cli, ddp_run):
    done, run_dir = ddp_run
    assert_report(cli, run_dir, logs=("train.log", "train_ddp_process_1.log"))
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (run_dir / "train_ddp_process_1.log").read_text()
    assert not (run_dir / "train_ddp_process_1").exists()
    assert cli.config(run_dir)["trainer"]["strategy"] == "ddp"
    assert "Starting with 2 processes" in done.output
    # rank 1 keeps its messages to its log file
    assert done.output.count("FLOPs per sample") == 1, done.describe()


@pytest.mark.slow
def test_ddp_test_metrics_cover_the_whole_test_split(cli, ddp_run):
    """The same checkpoint tested in one process gives the numbers of the two processes together."""
    _, run_dir = ddp_run
    ok(dlopt(cli, "eval", f"run={run_dir}", cwd=run_dir.parents[3]))
    evaluated = cli.metrics(cli.run_dirs(run_dir.parents[3], "eval")[0])
    tested = cli.metrics(run_dir)
    for key in ("test/loss", "test/acc", "test/f1"):
        assert math.isclose(tested[key], evaluated[key], rel_tol=1e-5), (key, tested[key], evaluated[key])


@pytest.mark.slow
def test_ddp_with_python_m_dlopt(cli, tmp_path):
    ok(dlopt(cli, "train", "trainer=ddp", *cli.TINY, cwd=tmp_path, module=True))
    assert_report(cli, one_run_dir(cli, tmp_path), logs=("train.log", "train_ddp_process_1.log"))


def test_more_processes_than_cores_is_one_line(cli, tmp_path):
    cores = len(os.sched_getaffinity(0))
    done = dlopt(cli, "train", "trainer=ddp", f"trainer.devices={cores + 1}", *cli.TINY, cwd=tmp_path)
    single_error_line(done, f"trainer.devices={cores + 1}", f"{cores} CPU cores", f"trainer.devices={cores} or fewer")
    assert "Initializing distributed" not in done.output
    assert cli.run_dirs(tmp_path) == []


def test_ddp_inside_a_sweep_is_refused(cli, tmp_path):
    """Rank 1 would run the whole sweep again (Lightning issue 11300): stop at the first run."""
    done = dlopt(cli, "train", "-m", "trainer=ddp", "optimizer=sgd,adam", *cli.TINY, cwd=tmp_path)
    single_error_line(done, "trainer.devices=2", "sweep", "trainer.devices=1", "trainer=slurm")
    assert "Initializing distributed" not in done.output
    assert cli.sweep_dirs(tmp_path) == [] and cli.run_dirs(tmp_path) == []


# --- trainer=slurm: the tasks srun starts -------------------------------------------------------


def test_slurm_recipe_composes(cli, tmp_path):
    done = ok(dlopt(cli, "train", "trainer=slurm", "trainer.num_nodes=2", "trainer.devices=4", "--cfg", "job",
                    cwd=tmp_path))
    trainer = yaml.safe_load(done.output)["trainer"]
    assert (trainer["strategy"], trainer["num_nodes"], trainer["devices"]) == ("ddp", 2, 4)
    env = {"SLURM_JOB_ID": "4242", "SLURM_PROCID": "3", "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "4"}
    done = ok(dlopt(cli, "train", "trainer=slurm", "--cfg", "hydra", "--resolve", cwd=tmp_path, env=env))
    assert "dir: outputs/train/slurm/4242\n" in done.output
    done = ok(dlopt(cli, "train", "trainer=slurm", "--cfg", "job", "--resolve", cwd=tmp_path, env=env))
    trainer = yaml.safe_load(done.output)["trainer"]
    assert (trainer["num_nodes"], trainer["devices"]) == (2, 4)  # from the allocation
    done = ok(dlopt(cli, "train", "trainer=slurm", "--cfg", "hydra", cwd=tmp_path))
    assert "_rank${oc.env:SLURM_PROCID,0}.log" in done.output
    assert cli.run_dirs(tmp_path) == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_slurm_tasks_share_one_run_folder(cli, tmp_path):
    """Two tasks of one node, with the variables srun sets: one folder, one log per task."""
    slurm = {"SLURM_JOB_ID": "31337", "SLURM_JOB_NAME": "dlopt", "SLURM_NTASKS": "2", "SLURM_NNODES": "1",
             "SLURM_NTASKS_PER_NODE": "2", "SLURM_NODELIST": "localhost", "SLURM_NODEID": "0",
             "MASTER_PORT": str(free_port())}
    argv = [cli.exe, "train", "trainer=slurm", *cli.TINY]
    tasks = [run(argv, tmp_path, {**cli.env(), **slurm, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)})
             for rank in (0, 1)]
    for done in [finish(task) for task in tasks]:
        ok(done)
    run_dir = one_run_dir(cli, tmp_path)
    assert run_dir == tmp_path / "outputs" / "train" / "slurm" / "31337"
    assert_report(cli, run_dir, logs=("train_rank0.log", "train_rank1.log"))
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (run_dir / "train_rank1.log").read_text()


# --- trainer=nodes: several machines outside SLURM, each started on its own ----------------------

NODE_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK", "RANK", "WORLD_SIZE",
                  "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_JOB_ID", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK",
                  "PMI_RANK", "LSB_JOBID")


def no_nodes_env(cli, **extra: str) -> dict[str, str]:
    """The test's environment without any launcher's variables, plus `extra`."""
    env = {k: v for k, v in cli.env().items() if k not in NODE_VARIABLES}
    return {**env, **extra}


@pytest.fixture(scope="module", params=["lightning", "torchrun"])
def two_machines(cli, request, tmp_path_factory) -> tuple[str, Path, list[Done]]:
    """The tiny run of `ddp_run` as 2 machines x 1 process, both on this one (loopback, gloo): started with
    Lightning's variables (MASTER_ADDR/MASTER_PORT/NODE_RANK, the same hydra.run.dir on both), or by torchrun
    (c10d rendezvous; the folder is named after --rdzv-id)."""
    cwd = tmp_path_factory.mktemp(request.param)
    args = ["train", "trainer=nodes", *cli.TINY, "trainer.limit_test_batches=null"]
    port = str(free_port())
    if request.param == "lightning":
        argvs = [[cli.exe, *args, "trainer.num_nodes=2", "hydra.run.dir=outputs/train/nodes/shared"]] * 2
        envs = [no_nodes_env(cli, MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=str(node)) for node in (0, 1)]
    else:
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
                    "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=run42"]
        argvs, envs = [[*torchrun, "-m", "dlopt", *args]] * 2, [no_nodes_env(cli)] * 2
    start = time.perf_counter()
    machines = [run(argv, cwd, env) for argv, env in zip(argvs, envs)]
    done = [ok(finish(machine)) for machine in machines]
    print(f"2 machines x 1 process ({request.param}): {time.perf_counter() - start:.1f}s")
    return request.param, cwd, done


@pytest.mark.slow
def test_two_machines_make_one_run_equal_to_two_devices(cli, ddp_run, two_machines):
    """One folder, written once by global rank 0, each process's own log; the same numbers as one machine x 2
    processes, bit for bit: the same 2 ranks see the same shards, and a sum of two gradients does not depend on
    which process adds."""
    import numpy as np

    launcher, cwd, done = two_machines
    run_dir = one_run_dir(cli, cwd)
    assert run_dir == cwd / "outputs" / "train" / "nodes" / ("shared" if launcher == "lightning" else "run42")
    assert sorted(str(p.relative_to(cwd)) for p in (cwd / "outputs").rglob("*")
                  if p.is_dir() and run_dir not in (p, *p.parents)) == ["outputs/train", "outputs/train/nodes"]
    metrics = assert_report(cli, run_dir, logs=("train_rank0.log", "train_rank1.log"))
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (run_dir / "train_rank1.log").read_text()
    assert sum(d.output.count("FLOPs per sample") for d in done) == 1  # the terminal shows rank 0's messages
    one_machine = cli.metrics(ddp_run[1])
    for key in [k for k in one_machine if k.startswith(("train/", "val/", "test/"))] + ["objective"]:
        assert metrics[key] == one_machine[key], (key, metrics[key], one_machine[key])
    with np.load(run_dir / "predictions.npz") as ours, np.load(ddp_run[1] / "predictions.npz") as theirs:
        assert len(ours["test_labels"]) == 270  # the whole test split
        for name in theirs.files:
            assert np.array_equal(ours[name], theirs[name]), name


def test_several_machines_without_their_environment_is_one_line(cli, tmp_path):
    """Each refused before torch starts and before a process waits for another machine, leaving no folder."""
    see = "see README, Several machines"
    lightning = no_nodes_env(cli, MASTER_ADDR="127.0.0.1", MASTER_PORT="1", NODE_RANK="1")
    cases = [  # (arguments, environment, what the one line says)
        (["trainer.num_nodes=2"], no_nodes_env(cli),
         ["trainer.num_nodes=2 but no environment defines the machines", "torchrun --nnodes=N", "--rdzv-id=ID",
          "MASTER_ADDR=HOST MASTER_PORT=PORT NODE_RANK=K", see]),
        (["-m", "trainer.num_nodes=2", "optimizer=sgd,adam"], lightning,
         ["trainer.num_nodes=2 inside a sweep (-m)", "trainer.num_nodes=1", see]),
        (["trainer=ddp", "trainer.devices=1", "trainer.num_nodes=2"], lightning,
         ["every machine would write its own run folder", "trainer=nodes", "hydra.run.dir=DIR", see]),
        (["trainer=nodes", "trainer.num_nodes=2"], no_nodes_env(cli),  # found while composing: not a log line
         ["trainer=nodes needs a run folder every node shares", "torchrun --nnodes=N", "NODE_RANK=K", see]),
    ]
    for args, env, parts in cases:
        done = dlopt(cli, "train", *args, *cli.TINY, cwd=tmp_path, env=env)
        if "trainer=nodes" in args:
            assert done.returncode == 2 and "Traceback" not in done.output and not done.leftovers, done.describe()
            line = done.output.strip().splitlines()[-1]
            assert line.startswith("dlopt train: ") and all(part in line for part in parts), done.describe()
        else:
            single_error_line(done, *parts)
        assert "Initializing distributed" not in done.output, done.describe()
        assert not (tmp_path / "outputs").exists(), sorted(tmp_path.rglob("*"))
