"""search=grid|random|bayes|genetic: the space grammar, real tiny sweeps through the dlopt command, the
study they leave, pruning, continuing a study, parallel trials, and the bad inputs of issue 6."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from dlopt.errors import UserError
from dlopt.search import space

SMALL = ("model=mlp", "model.width=16", "search.params=null")  # a tiny net; only the space given on the command line


def study_of(sweep: Path) -> optuna.Study:
    return optuna.load_study(study_name=sweep.name, storage=f"sqlite:///{sweep / 'study.db'}")


def search_dir(cwd: Path, name: str) -> Path:
    return cwd / "outputs" / "train" / "search" / name


def summary(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


# the grammar


def test_the_optuna_sweeper_grammar_maps_to_optuna_distributions():
    parsed, fixed = space.parse(["optimizer.lr=tag(log,interval(1e-4,1e-1))", "optimizer=choice(sgd,adam)",
                                 "model.depth=range(2,8)", "data.batch_size=32,64", "model.width=tag(int,interval(8,64))",
                                 "regularization.dropout=range(0.0,0.3,0.1)", "seed=3"])
    assert parsed["optimizer.lr"] == FloatDistribution(1e-4, 0.1, log=True)
    assert parsed["optimizer"] == CategoricalDistribution(["sgd", "adam"])
    assert parsed["model.depth"] == IntDistribution(2, 7)  # range's stop is excluded, as in Hydra's range
    assert parsed["data.batch_size"] == CategoricalDistribution([32, 64])
    assert parsed["model.width"] == IntDistribution(8, 64)
    assert space.grid({"d": parsed["regularization.dropout"]}) == {"d": [0.0, 0.1, 0.2]}
    assert fixed == {"seed": "seed=3"}


def test_a_later_override_replaces_the_declared_one():
    parsed, fixed = space.parse(["optimizer.lr=interval(0.1,1)", "model.depth=range(1,3)", "optimizer.lr=0.5",
                                 "model.depth=4,5"])
    assert "optimizer.lr" not in parsed and fixed == {"optimizer.lr": "optimizer.lr=0.5"}
    assert parsed["model.depth"] == CategoricalDistribution([4, 5])
    assert space.grid(parsed) == {"model.depth": [4, 5]}


@pytest.mark.parametrize("override, message", [
    ("optimizer.lr=interval(0.1,0.1)", "optimizer.lr=interval(0.1,0.1) needs low < high"),
    ("optimizer.lr=tag(log,interval(0,1))", "needs low > 0: a log scale has no 0 or negative values"),
    ("model.depth=range(5,2)", "model.depth=range(5,2,1) is empty"),
])
def test_empty_or_inverted_spaces_are_refused(override, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        space.parse([override])


def test_a_grid_needs_lists():
    parsed, _ = space.parse(["optimizer.lr=interval(0.1,1)"])
    with pytest.raises(UserError, match="search=grid needs a list of values for optimizer.lr"):
        space.grid(parsed)


# bad input through the command: one line, exit status 2, nothing written


@pytest.mark.parametrize("args, message", [
    (["optimizer.lrr=interval(0.1,1)"], "dlopt train: optimizer.lrr is not a key of optimizer (did you mean lr?)"),
    (["optimizer=choice(sgd,adamm)"], "dlopt train: optimizer=adamm is not an option of optimizer (did you mean adam?)"),
    (["optimizer.lr=choice()"], "empty choice is not legal"),
    (["optimizer.lr=interval(1,0.1)"], "dlopt train: optimizer.lr=interval(1,0.1) needs low < high"),
    (["optimizer.lr=tag(log,interval(0,1))"], "needs low > 0"),
    (["search.sampler=tpf"], "dlopt train: search.sampler=tpf is not a sampler (did you mean tpe?); choose one of grid, random, tpe, gp, cmaes, nsga2"),
    (["search.pruner=medain"], "dlopt train: search.pruner=medain is not a pruner (did you mean median?)"),
    (["search.storage=sqlite:////no/such/folder/s.db"], "dlopt train: search.storage=sqlite:////no/such/folder/s.db "
                                                        "cannot be opened"),
    (["search.storage=postgresql://nobody@127.0.0.1:1/none"], "cannot be opened"),
    (["search.storage=journal:/tmp/dlopt-never-written.log", "search.heartbeat=5"],
     "search.heartbeat=5: search.storage=journal:/tmp/dlopt-never-written.log is a journal file, which keeps no "
     "heartbeats"),
    (["search.heartbeat=0"], "search.heartbeat=0 is not valid: expected seconds"),
    (["search.storage=journal:/no/such/folder/s.log"], "dlopt train: search.storage=journal:/no/such/folder/s.log: "
                                                       "/no/such/folder is not a folder this machine has"),
    (["search.n_trials=0"], "search.n_trials=0 is not valid: expected a positive number of trials"),
    (["search.n_trials=null"], "search.n_trials=null: give a number of trials (only search=grid has one by itself)"),
    (["search.warmup_epochs=-1"], "search.warmup_epochs=-1 is not valid: expected an integer >= 0"),
    (["search.startup_trials=1.5"], "search.startup_trials=1.5 is not valid: expected an integer >= 0"),
    (["search.sampler=nsga2", "search.population=1"], "search.population=1 is not valid: expected an integer >= 2"),
    (["search.params=null"], "the search space is empty"),
])
def test_bad_search_input_is_one_line_and_starts_nothing(in_process, tmp_path, args, message):
    result = in_process.run("train", "search=bayes", *args, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.output, result.describe()
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.describe()
    assert not (tmp_path / "outputs").exists()


# real sweeps


@pytest.fixture(scope="module")
def random_search(cli, tmp_path_factory):
    """search=random without -m: three tiny trials, one of them failing on a bad sampled value."""
    cwd = tmp_path_factory.mktemp("random")
    result = cli.ok("train", "search=random", "search.study_name=r", "search.n_trials=3", *SMALL, *cli.TINY,
                    "optimizer.lr=choice(0.01,-1)", "model.depth=range(1,3)", cwd=cwd)
    return cwd, search_dir(cwd, "r"), result


def test_search_without_dash_m_runs_a_study_of_n_trials(cli, random_search):
    cwd, sweep, result = random_search
    assert cli.run_dirs(cwd) == [], "search=random ran a single run instead of a search"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2"]
    trials = study_of(sweep).trials
    assert len(trials) == 3 and {t.number for t in trials} == {0, 1, 2}
    for trial in trials:
        cfg = cli.config(sweep / str(trial.number))  # run folder N is trial N, with the trial's values
        assert cfg["optimizer"]["lr"] == trial.params["optimizer.lr"]
        assert cfg["model"]["depth"] == trial.params["model.depth"]
        assert cfg["search"]["trial"] == trial.number
    for n in (0, 1, 2):  # trials are numbered from 0, as their run folders
        assert f"search: trial {n} ({n + 1} of 3 finished): " in result.output, result.describe()


def test_a_failing_trial_is_recorded_with_its_reason_and_the_search_goes_on(cli, random_search):
    _, sweep, result = random_search
    trials = study_of(sweep).trials
    for trial in trials:
        if trial.params["optimizer.lr"] == -1:
            assert trial.state == TrialState.FAIL
            assert trial.user_attrs["error"] == "optimizer.lr=-1 is not valid: expected a number > 0"
        else:
            assert trial.state == TrialState.COMPLETE
            assert trial.value == cli.metrics(sweep / str(trial.number))["objective"]
    assert any(t.state == TrialState.FAIL for t in trials), "the space has a bad lr; seed 0 should draw it"
    assert "failed: optimizer.lr=-1 is not valid" in result.output


def test_the_search_folder_has_the_summary_best_yaml_and_plots(cli, random_search):
    _, sweep, _ = random_search
    study = study_of(sweep)
    rows = summary(sweep)
    assert [r["run"] for r in rows if r["status"] == "done"] == [str(study.best_trial.number)] + \
        [r["run"] for r in rows if r["status"] == "done"][1:]
    assert float(rows[0]["val/loss"]) == pytest.approx(study.best_value)
    assert all("search.trial=" not in r["overrides"] for r in rows)
    best = yaml.safe_load((sweep / "best.yaml").read_text())
    assert best["run"] == str(study.best_trial.number) and best["val/loss"] == pytest.approx(study.best_value)
    assert f"optimizer.lr={study.best_params['optimizer.lr']}" in best["overrides"]
    assert not any(o.startswith("search") for o in best["overrides"])
    for png in ("history.png", "parallel_coordinates.png"):
        assert (sweep / png).stat().st_size > 10_000, png


def test_each_trial_logs_its_choices_to_tensorboards_hparams_view(cli, random_search):
    from tensorboard.backend.event_processing import event_accumulator, plugin_event_accumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    _, sweep, _ = random_search
    trial = study_of(sweep).best_trial
    logs = str(sweep / str(trial.number) / "tensorboard")
    events = plugin_event_accumulator.EventAccumulator(logs)
    events.Reload()
    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["optimizer.lr"].number_value == pytest.approx(trial.params["optimizer.lr"])
    assert hparams["model.depth"].number_value == trial.params["model.depth"]
    assert hparams["model"].string_value == "mlp" and "search.trial" not in hparams
    scalars = event_accumulator.EventAccumulator(logs)
    scalars.Reload()
    assert scalars.Scalars("hparams/objective")[-1].value == pytest.approx(trial.value)


def test_the_same_study_name_continues_the_study(cli, random_search, tmp_path):
    cwd, sweep, _ = random_search
    # a sweep killed while a trial ran leaves that trial RUNNING: it is run again, not counted
    study = study_of(sweep)
    interrupted = study.ask({"optimizer.lr": CategoricalDistribution([0.01, -1]),
                             "model.depth": IntDistribution(1, 2)})
    result = cli.ok("train", "search=random", "search.study_name=r", "search.n_trials=4", *SMALL, *cli.TINY,
                    "optimizer.lr=choice(0.01,-1)", "model.depth=range(1,3)", cwd=cwd)
    assert "continuing, 3 of 4 trials done" in result.output, result.describe()
    assert f"trial {interrupted.number} was interrupted" in result.output
    trials = study_of(sweep).trials
    assert len(trials) == 5  # 3 done, the interrupted one (now failed), its rerun
    assert trials[3].state == TrialState.FAIL and "error" not in trials[3].user_attrs
    assert trials[3].user_attrs["interrupted"] is True
    assert trials[4].params == trials[3].params and trials[4].state != TrialState.RUNNING
    assert (sweep / "4").is_dir() and not (sweep / "5").exists()  # earlier run folders are kept, not rewritten
    assert len(summary(sweep)) == 4  # the folders 0-2 and 4; the interrupted trial never had one
    other = cli.run("train", "search=random", "search.study_name=r", "search.n_trials=5", *SMALL, *cli.TINY,
                    "optimizer.lr=choice(0.01,-1)", "model.depth=range(1,4)", cwd=cwd, timeout=60)
    assert other.returncode == 2 and other.stderr.strip() == (
        "dlopt train: search.study_name=r was started with another search space (model.depth differ); give the "
        "same space to continue it, or a new search.study_name"), other.describe()
    assert len(study_of(sweep).trials) == 5


@pytest.mark.slow
def test_grid_runs_every_combination_once(cli, tmp_path):
    cli.ok("train", "-m", "search=grid", "search.study_name=g", "optimizer=sgd", "regularization=none",
           "optimizer.lr=1e-3,1e-2", "model.depth=1,2", *SMALL[:2], *cli.TINY, cwd=tmp_path)
    sweep = search_dir(tmp_path, "g")
    combos = {(c["optimizer"]["lr"], c["model"]["depth"]) for c in map(cli.config, (sweep / str(i) for i in range(4)))}
    assert combos == {(0.001, 1), (0.001, 2), (0.01, 1), (0.01, 2)}
    assert not (sweep / "4").exists()


def test_grid_needs_lists_from_the_shell_too(in_process, tmp_path):
    result = in_process.run("train", "search=grid", "optimizer.lr=interval(0.001,0.1)", cwd=tmp_path)
    assert result.returncode == 2 and "search=grid needs a list of values for optimizer.lr" in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_declared_key_this_model_lacks_is_left_out_with_a_warning(cli, tmp_path):
    """The default space has model.depth; model=resnet has no depth: that key is skipped, not fatal."""
    result = cli.ok("train", "search=random", "search.study_name=w", "search.n_trials=1", "model=resnet",
                    *cli.TINY, cwd=tmp_path, timeout=300)
    assert "model.depth is not a key of this config; left out of the search" in result.output
    [trial] = study_of(search_dir(tmp_path, "w")).trials
    assert trial.state == TrialState.COMPLETE and "model.depth" not in trial.params and "optimizer.lr" in trial.params


def good_then_stuck(cli, cwd: Path, name: str, epochs: int, *args: str):
    """A bayes search of two queued trials, a good lr first, then an lr too small to learn, up to `epochs`
    epochs each: the result, and the two trials."""
    sweep = search_dir(cwd, name)
    sweep.mkdir(parents=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{sweep / 'study.db'}")
    study.enqueue_trial({"optimizer.lr": 0.02})
    study.enqueue_trial({"optimizer.lr": 1e-6})
    result = cli.ok("train", "search=bayes", f"search.study_name={name}", "search.n_trials=2", *args, "optimizer=adam",
                    "optimizer.lr=tag(log,interval(1e-6,0.1))", *SMALL, f"trainer.max_epochs={epochs}",
                    "trainer.limit_train_batches=6", "trainer.limit_val_batches=2", "trainer.limit_test_batches=1",
                    cwd=cwd)
    return result, study_of(sweep).trials


@pytest.mark.slow
def test_a_trial_behind_the_median_is_pruned(cli, tmp_path):
    result, (good, bad) = good_then_stuck(cli, tmp_path, "p", 4, "search.pruner=median", "search.startup_trials=1",
                                          "search.warmup_epochs=0")
    assert good.state == TrialState.COMPLETE and len(good.intermediate_values) == 4
    assert bad.state == TrialState.PRUNED, result.describe()
    assert bad.value == bad.intermediate_values[0]  # Optuna keeps a pruned trial's last reported value
    sweep = search_dir(tmp_path, "p")
    metrics = cli.metrics(sweep / "1")
    assert metrics["pruned"] is True and metrics["epochs"] == 1
    assert metrics["stop_reason"] == f"pruned by the median pruner at epoch 0 (val/loss={bad.value:.4f})"
    assert "test/acc" in metrics  # a pruned run still tests its best epoch
    assert [r["status"] for r in summary(sweep)] == ["done", "pruned"]
    assert "pruned by the median pruner at epoch 0" in result.output


@pytest.mark.slow
def test_a_trial_behind_in_its_hyperband_bracket_is_pruned(cli, tmp_path):
    """Hyperband over 2 epochs has one bracket whose first rung is epoch 1: the trial that learns nothing is
    not promoted there and stops; the good one runs on."""
    result, (good, bad) = good_then_stuck(cli, tmp_path, "h", 2, "search.pruner=hyperband", "search.warmup_epochs=1")
    assert good.state == TrialState.COMPLETE and bad.state == TrialState.PRUNED, result.describe()
    stop_reason = cli.metrics(search_dir(tmp_path, "h") / "1")["stop_reason"]
    assert stop_reason.startswith("pruned by the hyperband pruner at epoch 1 (val/loss="), stop_reason


def overlapping(trials: list[optuna.trial.FrozenTrial]) -> list[tuple[int, int, int]]:
    """(i, j, k): trial k started after trial j ended, while trial i, which ran when j ended, still ran. A
    batch-synchronous search never has one: the next batch starts when the slowest of the last has ended."""
    return [(i.number, j.number, k.number) for i in trials for j in trials for k in trials
            if i.datetime_start < j.datetime_complete <= k.datetime_start < i.datetime_complete]


@pytest.mark.slow
def test_a_trial_starts_as_soon_as_one_ends_with_the_joblib_launcher(cli, tmp_path):
    """search.n_jobs=2 keeps two trials in flight: beside a long trial (0), a short one (1) ends, the next (2) starts at
    once, while trial 0 still runs, and is pruned (behind trial 1), and trial 3 takes its place. The times are the
    study's (asked, told)."""
    sweep = search_dir(tmp_path, "a")
    sweep.mkdir(parents=True)
    study = optuna.create_study(study_name="a", storage=f"sqlite:///{sweep / 'study.db'}")
    for lr, epochs in ((0.02, 100), (0.005, 2), (1e-6, 100), (0.005, 2)):
        study.enqueue_trial({"optimizer.lr": lr, "trainer.max_epochs": epochs})
    result = cli.ok("train", "search=bayes", "search.study_name=a", "search.n_trials=4", "search.n_jobs=2",
                    "hydra/launcher=joblib", "search.pruner=median", "search.startup_trials=1",
                    "search.warmup_epochs=0", "optimizer=adam", "optimizer.lr=tag(log,interval(1e-6,0.1))",
                    "trainer.max_epochs=choice(2,100)", *SMALL, "callbacks.early_stopping=null",
                    "trainer.limit_train_batches=6", "trainer.limit_val_batches=2", "trainer.limit_test_batches=1",
                    cwd=tmp_path, timeout=600)
    trials = study_of(sweep).trials
    timeline = [(t.number, t.state.name, t.datetime_start.time(), t.datetime_complete.time()) for t in trials]
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED,
                                         TrialState.COMPLETE], (timeline, result.describe())
    assert (0, 1, 2) in overlapping(trials), timeline
    assert [len(t.intermediate_values) for t in trials] == [100, 2, 1, 2]  # each worker reported to the study
    for t in trials:  # trial N ran in run folder N
        assert Path(t.user_attrs["run"]).name == str(t.number)
        assert cli.config(sweep / str(t.number))["search"]["trial"] == t.number
    assert not (sweep / "4").exists()
    hydra = yaml.safe_load((sweep / "0" / ".hydra" / "hydra.yaml").read_text())["hydra"]
    assert hydra["launcher"]["_target_"].endswith("JoblibLauncher")
    assert "Joblib.Parallel" not in result.output  # its lines at each launch (one per trial) are quiet
    assert [line.split("(")[1].split(")")[0] for line in result.output.splitlines() if "search: trial" in line] == [
        f"{n} of 4 finished" for n in range(1, 5)]


def test_genetic_uses_nsga2_with_the_population(cli, tmp_path):
    result = cli.run("train", "search=genetic", "search.population=4", "--cfg", "job", cwd=tmp_path, timeout=60)
    cfg = yaml.safe_load(result.stdout)
    assert cfg["search"]["sampler"] == "nsga2" and cfg["search"]["population"] == 4
    from omegaconf import OmegaConf

    from dlopt.search.study import sampler

    made = sampler(OmegaConf.create(cfg["search"]), seed=0)
    assert isinstance(made, optuna.samplers.NSGAIISampler) and made._population_size == 4


@pytest.mark.slow
def test_cmaes_adapts_the_numeric_knobs_and_draws_the_choices(cli, tmp_path):
    cli.ok("train", "search=cmaes", "search.study_name=c", "search.n_trials=4", "search.startup_trials=1",
           "search.pruner=none", "optimizer.lr=tag(log,interval(1e-3,1e-1))", "model.depth=range(1,4)",
           "optimizer=choice(sgd,adam)", *SMALL, *cli.TINY, cwd=tmp_path)
    trials = study_of(search_dir(tmp_path, "c")).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert {"optimizer.lr", "model.depth", "optimizer"} == set(trials[-1].params)
    # the first trial is the random start, the others CMA-ES's (it marks them with its generation)
    assert ["cma:generation" in t.system_attrs for t in trials] == [False, True, True, True]


@pytest.mark.slow
def test_trials_as_separate_jobs_with_the_submitit_launcher(cli, tmp_path):
    """submitit_local: the code path of submitit_slurm (pickled jobs, own processes), without a cluster."""
    cli.ok("train", "search=random", "search.study_name=s", "search.n_trials=3", "search.n_jobs=2",
           "hydra/launcher=submitit_local", "optimizer.lr=tag(log,interval(1e-3,1e-1))", *SMALL, *cli.TINY,
           cwd=tmp_path, timeout=600)
    sweep = search_dir(tmp_path, "s")
    trials = study_of(sweep).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3  # the third asked when one of the first two ended
    assert all(len(t.intermediate_values) == 1 for t in trials)
    assert [cli.config(sweep / str(t.number))["search"]["trial"] for t in trials] == [0, 1, 2]


@pytest.fixture(scope="module")
def postgres():
    """A real PostgreSQL server on the loopback (Debian's package, run as its postgres user) in a temporary folder,
    stopped at the end; database(name) makes a new database and gives its URL. Skipped where PostgreSQL or
    psycopg is missing."""
    import shutil
    import socket
    import subprocess
    import tempfile

    bin_dir = Path("/usr/lib/postgresql")
    found = sorted(bin_dir.glob("*/bin/initdb"))
    if not found or shutil.which("runuser") is None or os.geteuid() != 0:
        pytest.skip("needs PostgreSQL's server (Debian's postgresql package) and root to run it as user postgres")
    pytest.importorskip("psycopg")
    tools = found[-1].parent
    folder = Path(tempfile.mkdtemp(prefix="dlopt-postgres-"))  # pytest's folders are root's alone
    folder.chmod(0o777)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def as_postgres(*argv):
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, timeout=120)

    as_postgres(str(tools / "initdb"), "-D", str(folder / "data"), "-A", "trust", "-U", "postgres")
    as_postgres(str(tools / "pg_ctl"), "-D", str(folder / "data"), "-l", str(folder / "log"), "-w", "-o",
                f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start")

    def database(name):
        as_postgres(str(tools / "createdb"), "-h", "127.0.0.1", "-p", str(port), name)
        return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"

    yield database
    as_postgres(str(tools / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "stop")
    shutil.rmtree(folder, ignore_errors=True)


def storage_url(kind, tmp_path, request):
    """A new storage of each kind a shared study may have."""
    if kind == "postgresql":
        return request.getfixturevalue("postgres")(tmp_path.name.lower().replace("-", "_")[:50])
    return f"sqlite:///{tmp_path / 'shared.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'shared.log'}"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_two_machines_share_one_study_through_its_storage(cli, tmp_path, kind, request):
    """Two sweepers (two shells, or two machines with a database URL or a journal file on a shared file system)
    on one study: n_trials is the study's total, exactly, every trial number is run once, each sweeper keeps its own
    run folders, and the two draw their own points."""
    import subprocess

    from dlopt.search.study import storage

    url = storage_url(kind, tmp_path, request)
    args = [cli.exe, "train", "search=random", "search.study_name=shared", f"search.storage={url}",
            "search.n_trials=4", "optimizer.lr=tag(log,interval(1e-3,1e-1))", *SMALL, *cli.TINY]
    machines = [tmp_path / "a", tmp_path / "b"]
    procs = []
    for cwd in machines:
        cwd.mkdir()
        procs.append(subprocess.Popen(args, cwd=cwd, env=cli.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trials = optuna.load_study(study_name="shared", storage=storage(url)).trials
    run = [t for t in trials if not t.user_attrs.get("surplus")]  # asked at the same moment past n_trials: not run
    assert [t.state for t in run] == [TrialState.COMPLETE] * 4, outputs
    ran = [cli.config(d)["search"]["trial"] for cwd in machines
           for d in search_dir(cwd, "shared").iterdir() if (d / ".hydra").is_dir()]
    assert sorted(ran) == [t.number for t in run]
    assert len({t.params["optimizer.lr"] for t in run}) == 4  # each sweeper its own seed: no point drawn twice


@pytest.mark.parametrize("name, kind", [("grid", optuna.samplers.GridSampler), ("random", optuna.samplers.RandomSampler),
                                        ("tpe", optuna.samplers.TPESampler), ("gp", optuna.samplers.GPSampler),
                                        ("cmaes", optuna.samplers.CmaEsSampler), ("nsga2", optuna.samplers.NSGAIISampler)])
def test_each_sampler_name_is_optunas_sampler(name, kind):
    from omegaconf import OmegaConf

    from dlopt.search.study import sampler

    search = OmegaConf.create({"sampler": name, "startup_trials": 3, "population": 4})
    assert isinstance(sampler(search, seed=0, grid={"x": [1, 2]}), kind)


@pytest.mark.parametrize("name, kind", [("none", optuna.pruners.NopPruner), ("median", optuna.pruners.MedianPruner),
                                        ("hyperband", optuna.pruners.HyperbandPruner)])
def test_each_pruner_name_is_optunas_pruner(name, kind):
    from omegaconf import OmegaConf

    from dlopt.search.study import pruner

    made = pruner(OmegaConf.create({"pruner": name, "startup_trials": 3, "warmup_epochs": 2}), max_epochs=12)
    assert isinstance(made, kind)
    if name == "hyperband":  # epochs are the resource
        assert made._min_resource == 2 and made._max_resource == 12


def test_two_sweepers_may_create_a_new_storage_at_the_same_moment(cli, tmp_path):
    """Both create the tables of a new database; the later one must not fail on what the other made."""
    import subprocess
    import sys

    for round in range(4):
        url = f"sqlite:///{tmp_path / f'new{round}.db'}"
        code = f"from dlopt.search.study import storage; storage({url!r})"
        procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(2)]
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], errors


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_trial_whose_process_dies_is_failed_by_its_heartbeat_and_run_again(cli, tmp_path, kind, request):
    """Two sweepers on one database study with heartbeats; one is killed (SIGKILL) in its first trial. Its trial goes
    silent, the other sweeper fails it after two heartbeats, runs its parameters again (Optuna's
    RetryHeartbeatStaleTrialCallback), and the study ends with its n_trials finished; the dead trial counts as interrupted."""
    import os
    import subprocess

    from dlopt.search.study import storage
    from dlopt.search.sweeper import tally

    tests = str(Path(__file__).parent)
    url = storage_url(kind, tmp_path, request)
    args = [cli.exe, "train", "-m", "--config-dir", str(Path(tests) / "conf"), "callbacks=[default,kill]",
            "callbacks.kill.epoch=0", "callbacks.kill.batch=0", "search=random", "search.study_name=shared",
            f"search.storage={url}", "search.heartbeat=1", "search.n_trials=3",
            "optimizer.lr=tag(log,interval(1e-3,1e-1))", *SMALL, *cli.TINY, "trainer.max_epochs=2"]
    path = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p)
    procs = []
    for name, kill in (("alive", "0"), ("killed", "1")):
        (tmp_path / name).mkdir()
        procs.append(subprocess.Popen(args, cwd=tmp_path / name, env={**cli.env(), "PYTHONPATH": path,
                                                                      "DLOPT_TEST_KILL": kill},
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, -9], outputs
    study = optuna.load_study(study_name="shared", storage=storage(url))
    count = tally(study)
    assert (count["done"] + count["pruned"], count["failed"], count["interrupted"]) == (3, 0, 1), (count, outputs)
    [dead] = [t for t in study.trials if t.state == TrialState.FAIL]
    [again] = [t for t in study.trials if t.system_attrs.get("failed_trial") == dead.number]
    assert again.state == TrialState.COMPLETE and again.params == dead.params


def test_parallel_coordinates_draw_every_trial_visibly_and_integer_knobs_with_whole_ticks():
    """Optuna's Blues would draw the worst trials white on white; an integer knob's axis would read 1.25, 1.5, ..."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.colors import to_rgb
    from optuna.visualization import matplotlib as plots

    from dlopt.search import sweeper

    study = optuna.create_study()
    for depth, lr, loss in ((1, 1e-3, 0.4), (2, 1e-2, 0.9), (4, 3e-2, 2.1), (3, 3e-3, 1.2)):
        study.add_trial(optuna.trial.create_trial(
            params={"model.depth": depth, "optimizer.lr": lr}, value=loss,
            distributions={"model.depth": IntDistribution(1, 4), "optimizer.lr": FloatDistribution(1e-4, 1e-1, log=True)}))
    ax = plots.plot_parallel_coordinate(study)
    sweeper._readable_lines(ax, [True, False])  # noqa: SLF001 (axes: model.depth, optimizer.lr)
    [lines] = [c for c in ax.collections if c.get_cmap() is not None]
    worst = to_rgb(lines.get_cmap()(lines.norm(2.1)))
    assert sum(worst) / 3 < 0.8  # not near white
    depth = [a for a in ax.figure.axes if a is not ax and a is not lines.colorbar.ax][0]
    ax.figure.canvas.draw()
    ticks = [t for t in depth.get_yticks() if 1 <= t <= 4]
    assert ticks and all(float(t).is_integer() for t in ticks)
