"""`dlopt COMMAND [overrides]`: dispatch to one Hydra app per command.

Only the standard library is imported here, so `dlopt --help` answers at once. Everything after
the command name goes to Hydra as dlopt.hydra_glue.hydra_args rewrites it (`--help`, `--cfg job`, `-m`,
`--config-dir`, `hydra.*` overrides all work as in any Hydra app).
"""

import importlib
import sys

from dlopt.errors import INTERRUPTED, Interrupted, UserError
from dlopt.hydra_glue import hydra_args

COMMANDS = {
    "train": ("dlopt.apps.train", "train a model from the composed config; returns the monitored metric"),
    "eval": ("dlopt.apps.eval", "test a trained run (run=RUN_DIR) or checkpoint (ckpt_path=FILE)"),
    "doctor": ("dlopt.apps.doctor", "diagnose a trained run (run=RUN_DIR): symptoms, evidence, remedies; try=true tests them"),
    "explain": ("dlopt.apps.explain", "which inputs a trained run (run=RUN_DIR) relies on: LIME, SHAP, gradients, permutation"),
    "ensemble": ("dlopt.apps.ensemble", "an ensemble scored beside its members: method=bagging|boosting|stacking trains "
                 "them, runs=SWEEP_DIR combines finished runs"),
    "runs": ("dlopt.apps.runs", "list, compare (compare=[A,B]) and aggregate (by=optimizer: mean ± sd, a t-test) "
             "finished runs; imports no torch"),
    "tune-lr": ("dlopt.apps.tune_lr", "learning-rate range test on the train config; plots loss vs lr, suggests one"),
}

USAGE = """usage: dlopt COMMAND [overrides] [hydra flags]    (dlopt --version: the installed version)

commands:
{commands}

examples:
  dlopt train                                  train the default (digits, offline)
  dlopt train model=resnet optimizer=adam      pick options from config groups
  dlopt train -m optimizer=sgd,adam            a sweep: one run per combination, one summary
  dlopt train --help                           every config group and option
  dlopt train --cfg job                        print the composed config, do not train
  dlopt eval run=outputs/train/DATE/TIME       test metrics of a finished run
  dlopt doctor run=outputs/train/DATE/TIME     what is wrong with a run and which override fixes it
  dlopt explain run=outputs/train/DATE/TIME    which inputs it relies on, and how far that holds
  dlopt ensemble method=bagging ensemble.members=5        five members on bootstrap resamples, averaged
  dlopt ensemble runs=outputs/train/multirun/DATE/TIME    the best ensemble of a sweep's runs
  dlopt tune-lr model=resnet optimizer=sgd     suggest optimizer.lr for that run (outputs/tune_lr/...)
  dlopt runs where='model=cnn' sort=test/acc   the runs under outputs/, filtered, best first
  dlopt runs path=outputs/train/multirun/DATE/TIME by=optimizer    mean ± sd per optimizer, and is the gap real
"""


def usage() -> str:
    width = max(map(len, COMMANDS))
    return USAGE.format(commands="\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # a command is missing: the list of them, as for an unknown one
        print(f"dlopt: give a command; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version", "version"):
        from importlib.metadata import version

        print(f"dlopt {version('dlopt')}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"dlopt: unknown command '{command}'; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    try:
        args = hydra_args(command, rest)
    except UserError as err:
        print(f"dlopt {command}: {err}", file=sys.stderr)
        return 2
    try:
        importlib.import_module(COMMANDS[command][0]).main(command, args, script=sys.argv[0])
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
    except KeyboardInterrupt as err:  # Ctrl-C: a run has said what it keeps (Interrupted), else none had started
        if not isinstance(err, Interrupted):
            print(f"dlopt {command}: interrupted before a run started: nothing of it was saved", file=sys.stderr)
        return INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
