"""`dlopt COMMAND [overrides]`: dispatch to one Hydra app per command.

Only the standard library is imported here, so `dlopt --help` answers at once. Everything after
the command name is handed to Hydra unchanged (`--help`, `--cfg job`, `-m`, `--config-dir`,
`hydra.*` overrides all work as in any Hydra app).
"""

import importlib
import sys

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


# Hydra's flags that take a value; Hydra wants every flag before the overrides
VALUE_FLAGS = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--cfg", "-c", "--package", "-p",
               "--info", "-i", "--experimental-rerun"}


def flags_first(args: list[str]) -> list[str]:
    """`model=mlp --cfg job` -> `--cfg job model=mlp`, so a flag typed after an override still works."""
    flags, overrides, rest = [], [], iter(args)
    for arg in rest:
        if arg.startswith("-"):
            flags.append(arg)
            if arg in VALUE_FLAGS:
                value = next(rest, None)
                if value is not None:
                    (flags if arg not in ("--info", "-i") or "=" not in value else overrides).append(value)
        else:
            overrides.append(arg)
    return flags + overrides


# Hydra's modes: it takes one of them per call
MODES = {"-r": "--run", "--run": "--run", "-m": "--multirun", "--multirun": "--multirun", "-c": "--cfg",
         "--cfg": "--cfg", "-i": "--info", "--info": "--info"}


def mode_clash(args: list[str]) -> str | None:
    """The one-line complaint when args ask Hydra for two modes at once (`-m --cfg job`), else None."""
    modes = list(dict.fromkeys(MODES[a] for a in args if a in MODES))
    if len(modes) < 2:
        return None
    hint = " (--cfg job prints the config of a single run: drop -m to see it)" \
        if {"--multirun", "--cfg"} <= set(modes) else ""
    return f"{' and '.join(modes)} cannot be combined; give one of them{hint}"


def bad_key(args: list[str], most: int = 255) -> str | None:
    """The complaint about an override without a key (`=3`) or with a key longer than a file name may be
    (Hydra looks for a config group of that name on disk, and the system refuses the name), else None."""
    for arg in args:
        key = arg.partition("=")[0]
        if "=" in arg and not arg.startswith("-") and not key.lstrip("+~"):
            return f"{arg} has no key: give group=option or group.key=value"
        if "=" in arg and len(key) > most:
            return (f"{key[:40]}... ({len(key)} characters) is not a key of the config: keys and group names "
                    f"are at most {most} characters; give group=option or group.key=value")
    return None


# groups whose options add up rather than exclude each other
ADDITIVE_GROUPS = ("callbacks",)


def additive_lists(args: list[str]) -> list[str]:
    """`callbacks=default,ema` -> `callbacks=[default,ema]` (both, in one run); with -m a comma list stays a sweep."""
    if any(a in ("-m", "--multirun") for a in args):
        return args
    out = []
    for arg in args:
        key, _, value = arg.partition("=")
        out.append(f"{key}=[{value}]" if key in ADDITIVE_GROUPS and "," in value and value[:1] != "[" else arg)
    return out


# keys whose value holds KEY=VALUE conditions, which Hydra's grammar takes only quoted
CONDITIONS = ("where",)


def quoted_conditions(args: list[str]) -> list[str]:
    """`where=model=cnn` -> `where="model=cnn"`: the value reaches the command as one string."""
    out = []
    for arg in args:
        key, _, value = arg.partition("=")
        plain = value and value[0] not in "'\"[" and "=" in value and '"' not in value
        out.append(f'{key}="{value}"' if key in CONDITIONS and plain else arg)
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
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
    clash = mode_clash(rest) or bad_key(rest)
    if clash:
        print(f"dlopt {command}: {clash}", file=sys.stderr)
        return 2
    args = quoted_conditions(additive_lists(flags_first(rest)))
    script = sys.argv[0]  # the console script, or dlopt/__main__.py under `python -m dlopt`
    sys.argv = [f"dlopt {command}", *args]  # Hydra parses sys.argv
    try:
        importlib.import_module(COMMANDS[command][0]).main(argv=[script, command, *args])
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
