"""hydra/launcher=ray on a real local Ray cluster of two 1-CPU nodes (Ray's own test helper, ray.cluster_utils.Cluster,
started and shut down here; nothing else of the user's Ray is touched), with token authentication on. dlopt runs as a
driver in another folder than the nodes', with the default relative sweep folders: searches, plain sweeps and
ensembles run their runs on both nodes and leave everything in the driver's folder."""

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

pytestmark = pytest.mark.slow
TESTS = Path(__file__).parent
SMALL = ("model=mlp", "model.width=16")


NODES = """
import signal, sys
from pathlib import Path
from ray.cluster_utils import Cluster
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
cpus = [int(n) for n in sys.argv[2].split(",")]
nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus[0]})
for n in cpus[1:]:
    nodes.add_node(num_cpus=n)
nodes.wait_for_nodes()
Path(sys.argv[1]).write_text(nodes.address)
try:
    signal.pause()
finally:
    nodes.shutdown()
"""


class Nodes:
    """Ray nodes of `cpus` CPUs each on this machine (Ray's own test helper, ray.cluster_utils.Cluster), in a process
    of their own started in `folder` (a worker's folder is its node's), stopped by stop(); env: what a driver needs."""

    def __init__(self, cpus: str, folder: Path, token: str):
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
                    "PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)}
        address = folder / "address"
        self.proc = subprocess.Popen([sys.executable, "-c", NODES, str(address), cpus], cwd=folder,
                                     env={**os.environ, **self.env})
        while not address.is_file() or not address.read_text():
            assert self.proc.poll() is None, "the Ray test cluster did not start"
            time.sleep(0.2)
        self.env["RAY_ADDRESS"] = address.read_text()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two nodes of 1 CPU, token authentication on: the environment of a driver."""
    nodes = Nodes("1,1", tmp_path_factory.mktemp("nodes"), secrets.token_hex(16))
    yield nodes.env
    nodes.stop()


def dlopt(cli, env, cwd, *args, ok=True):
    """`dlopt ARGS` in cwd, a fresh process with the cluster's environment added."""
    result = cli.run(*args, cwd=cwd, env=env, timeout=900)
    if ok:
        assert result.returncode == 0 and "Traceback" not in result.output, result.describe()
    return result


def nodes_of(runs):
    return {json.loads((run / "metrics.json").read_text())["node"] for run in runs}


@pytest.fixture(scope="module")
def search(cli, cluster, tmp_path_factory):
    """A 4-trial Bayesian search with the median pruner, 2 trials in flight; trial 1's worker process is SIGKILLed
    in its first batch."""
    cwd = tmp_path_factory.mktemp("driver")
    proc = dlopt(cli, {**cluster, "DLOPT_TEST_KILL": "1"}, cwd, "train", "-m", "--config-dir", str(TESTS / "conf"),
                 "callbacks=[default,kill]", "callbacks.kill.epoch=0", "callbacks.kill.batch=0",
                 "callbacks.kill.run=1", "search=bayes", "search.study_name=s", "search.n_trials=5",
                 "search.n_jobs=2", "search.startup_trials=1", "search.params=null",
                 "optimizer.lr=tag(log,interval(1e-3,1e-1))", "hydra/launcher=ray", *SMALL, *cli.TINY,
                 "trainer.max_epochs=3")
    sweep = cwd / "outputs" / "train" / "search" / "s"
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{sweep / 'study.db'}")
    return sweep, study, proc


def test_a_search_runs_its_trials_on_both_nodes_into_the_drivers_folder(search):
    sweep, study, proc = search
    trials = study.trials
    assert len(trials) == 5 and all(t.state != TrialState.RUNNING for t in trials)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4, [(t.number, t.state, t.user_attrs) for t in trials]
    assert all(t.intermediate_values for t in finished)  # each epoch reported to the pruner from the node
    runs = [sweep / str(t.number) for t in finished]
    assert all((run / "metrics.json").is_file() for run in runs)
    assert len(nodes_of(runs)) == 2
    assert "sweep summary (5 runs" in proc.stdout + proc.stderr and "1 failed" in proc.stdout + proc.stderr
    # two trials ran at the same time
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:]))


def test_a_trial_whose_worker_dies_is_failed_with_its_reason_and_the_search_goes_on(search):
    sweep, study, proc = search
    dead = study.trials[1]
    assert dead.state == TrialState.FAIL and "Ray worker died" in dead.user_attrs["error"]
    assert "Ray worker died" in (sweep / "1" / "error.txt").read_text()
    assert "search s ended: " in proc.stderr + proc.stdout and "1 failed" in proc.stderr + proc.stdout


def test_a_plain_sweep_and_a_bagging_ensemble_run_on_both_nodes(cli, cluster, tmp_path):
    proc = dlopt(cli, cluster, tmp_path, "train", "-m", "optimizer=sgd,adam", "seed=0,1", "hydra/launcher=ray",
                 *SMALL, *cli.TINY)
    [sweep] = cli.sweep_dirs(tmp_path)
    runs = sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())
    assert len(runs) == 4 and all((run / "metrics.json").is_file() for run in runs)
    assert len(nodes_of(runs)) == 2
    assert "sweep summary (4 runs, 0 pruned, 0 failed" in proc.stdout + proc.stderr

    proc = dlopt(cli, cluster, tmp_path, "ensemble", "method=bagging", "ensemble.members=2", "hydra/launcher=ray",
                 *SMALL, *cli.TINY)
    members = sorted((tmp_path / "outputs" / "ensemble").glob("*/*/members/*/metrics.json"))
    assert len(members) == 2, proc.stdout[-2000:]
    assert len(nodes_of([m.parent for m in members])) == 2


def test_a_sweep_folder_the_nodes_cannot_see_fails_each_run_naming_it(cli, cluster, tmp_path):
    """A node whose file system lacks the driver's folder (its own mount namespace, with an empty file system over
    the folder): each run fails naming the sweep folder, and the summary counts the runs as failed."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        pytest.skip("needs unshare -m (root) to give a Ray node a file system of its own")
    hidden = tmp_path / "driver"
    hidden.mkdir()
    head = Nodes("0", tmp_path, cluster["RAY_AUTH_TOKEN"])  # runs nothing itself
    node = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                             f"mount -t tmpfs tmpfs {hidden} && exec {Path(sys.executable).parent / 'ray'} start "
                             f"--address={head.env['RAY_ADDRESS']} --num-cpus=1 --block"],
                            env={**os.environ, **head.env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    joined = "import ray; ray.init(); assert len([n for n in ray.nodes() if n['Alive']]) == 2"
    try:
        while subprocess.run([sys.executable, "-c", joined], env={**os.environ, **head.env}, capture_output=True,
                             timeout=120).returncode != 0:
            assert node.poll() is None, "the node of its own file system did not start"
            time.sleep(1)
        proc = dlopt(cli, head.env, hidden, "train", "-m", "optimizer=sgd,adam", "hydra/launcher=ray", *SMALL,
                     *cli.TINY)
    finally:
        node.terminate()
        node.wait(timeout=120)
        head.stop()
    [sweep] = cli.sweep_dirs(hidden)
    for run in ("0", "1"):
        error = (sweep / run / "error.txt").read_text()
        assert f"the sweep folder {sweep.resolve()} is not on a file system Ray node" in error
    assert "2 runs, 0 pruned, 2 failed" in proc.stdout + proc.stderr


@pytest.mark.parametrize("args, env, message", [
    (["hydra.launcher.address=127.0.0.1:9"], {}, "no Ray cluster answers at hydra.launcher.address=127.0.0.1:9"),
    (["hydra.launcher.num_cpus=4"], {}, "hydra.launcher.num_cpus=4: no node of the Ray cluster has that many CPUs"),
    ([], {"RAY_AUTH_TOKEN": "0" * 32}, "refused this machine's token"),
])
def test_bad_ray_input_is_one_line_and_writes_nothing(cli, cluster, tmp_path, args, env, message):
    proc = dlopt(cli, {**cluster, **env}, tmp_path, "train", "-m", "optimizer=sgd,adam", "hydra/launcher=ray", *args,
                 ok=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_without_ray_installed_the_line_says_how_to_install_it(cli, tmp_path):
    code = ("import sys; sys.modules['ray'] = None; sys.argv = ['dlopt', 'train', '-m', 'optimizer=sgd,adam', "
            "'hydra/launcher=ray']; from dlopt.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=cli.env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "hydra/launcher=ray needs Ray: pip install 'dlopt[ray]'" in proc.stderr
    assert not (tmp_path / "outputs").exists()
