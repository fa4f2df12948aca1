"""`dlopt doctor run=RUN_DIR [try=true]`: the symptoms of a trained run, their evidence and remedies as
commands; try=true trains the top remedies beside the original and compares (dlopt/diagnostics/doctor.py)."""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dlopt.apps import app, task
from dlopt.checks import validate
from dlopt.errors import UserError


@task
def doctor(cfg: DictConfig, run_dir: Path) -> dict:
    from dlopt.diagnostics import doctor as medic

    validate(cfg, "doctor")
    thresholds = OmegaConf.to_container(cfg.diagnostics.thresholds)
    folder, runs = medic.runs_of(cfg.run)
    if cfg["try"] and len(runs) > 1:
        raise UserError(f"run={cfg.run} holds {len(runs)} runs; try=true tries the remedies of one run: pick one, "
                        f"e.g. run={runs[0]}")
    diagnoses = [medic.examine(run, thresholds, f"run={run}") for run in runs]
    trained = [d for d in diagnoses if medic.trained(d)]
    if not trained:
        raise UserError(f"run={cfg.run} is not a run of dlopt train (its config has no model and optimizer); doctor "
                        "reads training runs")
    if len(trained) > 1:
        for diagnosis in trained:
            print(medic.one_line(diagnosis))
        print(f"{len(trained)} runs in {folder}; for the evidence and remedies of one: dlopt doctor run=RUN")
        medic.save({"sweep": str(folder), "runs": [d.to_json() for d in trained]}, run_dir)
        return {str(d.run): [f.symptom for f in d.findings] for d in trained}
    diagnosis = trained[0]
    print(medic.describe(diagnosis))
    tried = None
    if cfg["try"]:
        tried = medic.try_remedies(diagnosis, cfg.remedies, run_dir, thresholds, list(cfg.try_overrides or []))
        print(f"tried (same seed and epochs; the original trained again beside them, runs in {run_dir}):")
        print(medic.tried_table(tried))
    report = diagnosis.to_json()
    medic.save({**report, **({"tried": tried} if tried is not None else {})}, run_dir)
    return report


main = app("doctor", doctor)
