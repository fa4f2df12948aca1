"""Symptoms of a badly training network, read from what a run recorded: its per-layer records
(diagnostics.jsonl, see recorder.py) and its per-epoch history (history.json). Torch-free, so that
`dlopt doctor` answers without importing torch; the recorder uses the same rules for its warnings.

Each rule compares one measure with one threshold, a knob of `diagnostics.thresholds` (its default
and where it comes from are in conf/diagnostics/default.yaml). A finding carries the measure, so
that a remedy's run can be compared with the original on the same number.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from dlopt.checks.values import number

SATURATING = ("sigmoid", "tanh")
# thresholds a config's diagnostics.thresholds may lack (one written before they were added): their defaults, as
# conf/diagnostics/default.yaml explains its others. few_steps: Adam moves each weight by about lr per step at most
# (lr x m/sqrt(v), |m/sqrt(v)| <= ~1), so at its usual 1e-3 a weight travels at most ~1 in 1000 steps, the scale of
# what a network learns (a linear model on standardized columns: weights of order 1); on bench/doctor.py the runs
# still learning at their end took 100 to 300 steps, the healthy ones 360 to 1620. falling: the share of the training
# loss's fall made in the last half of the epochs above which it was still falling (a steady fall under a cosine
# schedule leaves ~18% to the last half; on bench/doctor.py healthy runs 0.2% to 5.3%, runs still learning 13% to
# 25%, a linear model on a 178-row table after 60 steps 21%).
LATER_THRESHOLDS = {"few_steps": 1000.0, "falling": 0.1}  # conf/diagnostics/default.yaml's, for runs of an older dlopt


@dataclass
class Finding:
    symptom: str  # a key of REMEDIES in remedies.py, e.g. "vanishing_gradients"
    title: str  # what a person reads, "vanishing gradients"
    evidence: str  # the numbers, layers and epochs
    cause: str  # the likely cause in one sentence
    measure: float  # the symptom's number, compared before and after a remedy
    measure_name: str
    facts: dict[str, Any] = field(default_factory=dict)  # what remedies compute their values from


def _numbers(value: Any) -> bool:
    """A mapping of names to numbers (null for a value that was not finite)."""
    return isinstance(value, dict) and all(v is None or number(v) for v in value.values())


def _well_formed(record: Any) -> bool:
    if not isinstance(record, dict):
        return False
    kind = record.get("kind")
    if kind == "layers":
        return isinstance(record.get("weights", []), list)
    timed = isinstance(record.get("epoch"), int) and isinstance(record.get("step"), int)
    if kind == "step":
        return timed and all(_numbers(record.get(k, {})) for k in ("grad_norm", "weight_norm", "update_ratio")) \
            and (record.get("total_grad_norm") is None or number(record["total_grad_norm"]))
    if kind == "activations":
        return timed and all(_numbers(record.get(k, {})) for k in ("dead", "saturated", "mean", "std"))
    return False


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of diagnostics.jsonl; a last line cut short by a crash ends the list. UserError naming the
    file and line for a line that is no record of dlopt's."""
    from dlopt.errors import UserError

    lines = path.read_text(errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):
                break
            record = None
        if not _well_formed(record):
            raise UserError(f"{path}, line {number}: not a diagnostics record of dlopt train (the file is damaged)")
        records.append(record)
    return records


def median(values) -> float:
    """The median of the finite numbers among `values`; nan when there are none."""
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return statistics.median(values) if values else math.nan


def per_epoch(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One summary per epoch: per layer the median gradient norm and update ratio of its recorded steps,
    the largest total gradient norm, and the activations measured at its end."""
    epochs: dict[int, dict[str, Any]] = {}
    steps: dict[int, list[dict]] = {}
    for record in records:
        if record.get("kind") == "step":
            steps.setdefault(record["epoch"], []).append(record)
        elif record.get("kind") == "activations":
            epochs.setdefault(record["epoch"], {})["activations"] = record
    for epoch, rows in steps.items():
        layers = list(rows[0].get("grad_norm", {}))
        epochs.setdefault(epoch, {}).update(
            grad_norm={k: median(r["grad_norm"].get(k) for r in rows) for k in layers},
            update_ratio={k: median(r.get("update_ratio", {}).get(k) for r in rows) for k in layers},
            total_grad_norm=max((r.get("total_grad_norm", math.nan) for r in rows), default=math.nan),
            grad_norms=[r.get("total_grad_norm") for r in rows], losses=[r.get("loss") for r in rows])
    return [{"epoch": e, **epochs[e]} for e in sorted(epochs)]


def missing_records(records: list[dict[str, Any]], history: list[dict[str, Any]]) -> Optional[str]:
    """What the per-layer records miss of the run's epochs, when they do not start at its first epoch (a resume by an
    older dlopt kept only the records after it; the file may be its header alone); None when they do, or when the run
    recorded none (diagnostics=none)."""
    epochs = [r["epoch"] for r in history if isinstance(r.get("epoch"), int)]
    if not records or not epochs:
        return None
    recorded = sorted({r["epoch"] for r in records if r.get("kind") != "layers"})
    if recorded and recorded[0] <= epochs[0]:
        return None
    return (f"per-layer records cover {_epochs(recorded)} of {epochs[0]}-{epochs[-1]} (an older dlopt kept only those "
            "after a resume)")


def _epochs(numbers: list[int]) -> str:
    if not numbers:
        return "no epoch"
    if len(numbers) > 2 and numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"epochs {numbers[0]}-{numbers[-1]}"
    return ("epoch " if len(numbers) == 1 else "epochs ") + ", ".join(map(str, numbers[:8])) + \
        (", ..." if len(numbers) > 8 else "")


def _present(hits: list[int], total: int, persistent: bool) -> bool:
    """A symptom counts in at least half of the epochs (doctor) or in any epoch (warnings while training)."""
    return bool(hits) and (not persistent or 2 * len(hits) >= total)


def update_ratios(summaries: list[dict[str, Any]]) -> dict[int, float]:
    """Per epoch, the median over layers of each layer's median update/weight ratio (epochs that recorded one)."""
    updates = {s["epoch"]: median(s["update_ratio"].values()) for s in summaries if s.get("update_ratio")}
    return {e: v for e, v in updates.items() if math.isfinite(v)}


def layer_findings(summaries: list[dict[str, Any]], t: dict[str, float], persistent: bool = True) -> list[Finding]:
    """Symptoms in the per-layer records: vanishing and exploding gradients, dead and saturated units,
    updates far larger or smaller than the rule-of-thumb ratio."""
    found = []
    graded = [s for s in summaries if s.get("grad_norm")]
    ratios = {}
    for s in graded:
        norms = [(name, v) for name, v in s["grad_norm"].items() if number(v, finite=True)]
        if len(norms) >= 2 and norms[-1][1] > 0:
            ratios[s["epoch"]] = (norms[0][1] / norms[-1][1], norms[0][0], norms[-1][0])
    low = [e for e, (r, _, _) in ratios.items() if r < t["vanishing"]]
    if _present(low, len(ratios), persistent):
        value = median(r for r, _, _ in ratios.values()) if persistent else ratios[low[0]][0]
        _, first, last = ratios[low[0]]
        found.append(Finding(
            "vanishing_gradients", "vanishing gradients",
            f"|grad| of {first} / {last} = {value:.1e} in {_epochs(low)} (threshold {t['vanishing']:g})",
            "the gradient shrinks on its way back through the layers, so the first layers barely learn",
            value, "first/last gradient ratio"))
    steps = [(s["epoch"], v, loss) for s in graded for v, loss in zip(s.get("grad_norms") or [], s.get("losses") or [])
             if isinstance(v, (int, float))]
    if len(steps) >= 2:
        # each recorded gradient norm against the median of those before it (a jump, not a trend), counted when the
        # loss rose with it: a network leaving a plateau also sees its gradient grow, while its loss falls
        jumps = []
        for i in range(1, len(steps)):
            epoch, value, loss = steps[i]
            before = median(v for _, v, _ in steps[:i])
            lowest = min((earlier for _, _, earlier in steps[:i] if number(earlier)), default=None)
            worse = loss is None or lowest is None or not math.isfinite(loss) or loss > (1 + t["spike"]) * lowest
            ratio = math.inf if not math.isfinite(value) else value / before if before > 0 else 1.0
            jumps.append((epoch, value, ratio if worse else min(ratio, 1.0)))
        grown = sorted({e for e, _, ratio in jumps if ratio > t["exploding"]})
        if grown:  # any epoch: one explosion is enough to wreck a run
            epoch, worst, ratio = max(jumps, key=lambda j: j[2])
            norms = sorted(v for _, v, _ in steps if math.isfinite(v))
            found.append(Finding(
                "exploding_gradients", "exploding gradients",
                f"the gradient norm reached {worst:.3g} in epoch {epoch}, {ratio:.0f}x the median of the steps before "
                f"(threshold {t['exploding']:g}x); jumps in {_epochs(grown)}",
                "a few large steps throw the weights far off",
                ratio, "largest jump of the gradient norm",
                {"p90_grad_norm": norms[int(0.9 * (len(norms) - 1))] if norms else None}))
    acts = [s["activations"] for s in summaries if "activations" in s]
    for kind, threshold, symptom, title, cause in (
            ("dead", t["dead"], "dead_units", "dead units",
             "ReLU units whose input stays negative get no gradient and never recover"),
            ("saturated", t["saturated"], "saturated_units", "saturated units",
             "sigmoid/tanh units pinned near their limits pass almost no gradient")):
        hits = [(a["epoch"], name, v) for a in acts for name, v in a.get(kind, {}).items()
                if number(v) and v > threshold]
        epochs = sorted({e for e, _, _ in hits})
        if _present(epochs, len(acts), persistent):
            last = max((a for a in acts if a["epoch"] == epochs[-1]), key=lambda a: a["epoch"])
            layers = sorted(((v, n) for n, v in last.get(kind, {}).items() if number(v) and v > threshold),
                            reverse=True)
            shown = ", ".join(f"{n} {v:.0%}" for v, n in layers[:4])
            found.append(Finding(symptom, title, f"{kind} fraction {shown} in {_epochs(epochs)} "
                                 f"(threshold {threshold:.0%})", cause, layers[0][0], f"largest {kind} fraction"))
    updates = update_ratios(summaries)
    if updates:
        top = max(updates.values())
        high = [e for e, v in updates.items() if v > t["update_high"]]
        if high:  # any epoch: one epoch of huge steps can kill the units for good
            found.append(Finding(
                "lr_too_high", "learning rate too high",
                f"update/weight ratio {max(updates[e] for e in high):.1e} in {_epochs(high)} (rule of thumb about "
                f"1e-3, threshold {t['update_high']:g})", "each step changes the weights by a large part of their size",
                top, "update/weight ratio", {"update_ratio": top}))
        elif top < t["update_low"]:
            found.append(Finding(
                "lr_too_low", "learning rate too low",
                f"update/weight ratio at most {top:.1e} in every epoch (rule of thumb about 1e-3, threshold "
                f"{t['update_low']:g})", "each step changes the weights by a tiny part of their size",
                top, "update/weight ratio", {"update_ratio": top}))
    return found


def curve_findings(history: list[dict[str, Any]], metrics: dict[str, Any], config: dict[str, Any],
                   classes: Optional[int], t: dict[str, float]) -> list[Finding]:
    """Symptoms in the per-epoch loss and accuracy curves (and how the run stopped)."""
    found = []
    train = [r.get("train/loss") for r in history]
    train_acc = [r.get("train/acc") for r in history]
    finite = [v for v in train if isinstance(v, (int, float)) and math.isfinite(v)]
    reason = str(metrics.get("stop_reason") or metrics.get("error") or "")
    if "became nan" in reason or "became inf" in reason:
        found.append(Finding("lr_too_high", "divergence", f"stopped: {reason}",
                             "the loss blew up to a non-finite value", math.inf, "train/loss", {"diverged": True}))
    elif len(finite) >= 3:
        rises = [i for i in range(1, len(finite)) if finite[i] > finite[i - 1] * (1 + t["spike"])]
        drop = finite[0] - min(finite)
        given_back = (finite[-1] - min(finite)) / drop if drop > 0 else 0.0
        if given_back > t["rising"] or len(rises) * 3 >= len(finite) - 1:
            found.append(Finding(
                "lr_too_high", "loss rising or oscillating",
                f"train/loss {finite[0]:.3g} -> best {min(finite):.3g} -> last {finite[-1]:.3g} (gave back "
                f"{given_back:.0%} of its fall; threshold {t['rising']:.0%}), up by more than {t['spike']:.0%} in "
                f"{len(rises)} of {len(finite) - 1} epochs", "steps overshoot the minimum", given_back,
                "share of the loss's fall given back"))
    if classes and finite and min(finite) > 1.5 * math.log(classes):
        found.append(Finding(
            "lr_too_high", "loss above a uniform guess",
            f"train/loss never came below {min(finite):.3g}, more than 1.5 x ln({classes}) = "
            f"{1.5 * math.log(classes):.3f}, the loss of a uniform guess",
            "the steps threw the network into confident wrong answers", min(finite) / math.log(classes),
            "best train loss / ln(classes)"))
    if classes and finite and min(finite) > t["stuck"] * math.log(classes):
        found.append(Finding(
            "stuck", "loss never left its starting value",
            f"train/loss stayed at {min(finite):.3f} or above; ln({classes}) = {math.log(classes):.3f} is a "
            f"uniform guess (threshold {t['stuck']:g} x ln(classes))",
            "the network predicts no better than chance: no useful gradient reaches the weights",
            min(finite) / math.log(classes), "best train loss / ln(classes)"))
    elif len(finite) >= 3 and (finite[0] - min(finite)) < t["slow"] * finite[0] \
            and not (train_acc and isinstance(train_acc[-1], (int, float)) and train_acc[-1] >= t["underfit"]):
        found.append(Finding(
            "lr_too_low", "loss barely moving",
            f"train/loss {finite[0]:.3g} -> {min(finite):.3g} in {len(finite)} epochs (less than "
            f"{t['slow']:.0%} down)", "steps are too small to make progress",
            min(finite) / finite[0], "best/first train loss"))
    vals = [(r["epoch"], r["val/loss"]) for r in history if isinstance(r.get("val/loss"), (int, float))
            and math.isfinite(r["val/loss"])]
    accs = [a for a in train_acc if isinstance(a, (int, float))]
    val_accs = [r.get("val/acc") for r in history if isinstance(r.get("val/acc"), (int, float))]
    if len(vals) >= 4:
        best_epoch, best = min(vals, key=lambda p: p[1])
        last_epoch, last = vals[-1]
        gap = accs[-1] - val_accs[-1] if accs and val_accs else 0.0
        train_at_best = train[best_epoch - history[0]["epoch"]]
        if last > best * (1 + t["overfit"]) and gap > t["gap"] and finite and finite[-1] < train_at_best:
            found.append(Finding(
                "overfitting", "overfitting",
                f"val/loss {best:.3g} at epoch {best_epoch} rose to {last:.3g} by epoch {last_epoch} while train/loss "
                f"fell; train/acc - val/acc = {gap:.3f} (thresholds: val/loss {t['overfit']:.0%} above its best, a gap "
                f"of {t['gap']:g})",
                "the network memorizes the training split instead of learning what generalizes",
                last / best, "last/best val loss"))
    if len(accs) >= 3 and accs[-1] < t["underfit"]:
        third = max(1, len(accs) // 3)
        found.append(Finding(
            "underfitting", "underfitting",
            f"train/acc only {accs[-1]:.3f} after {len(accs)} epochs (threshold {t['underfit']:g}); "
            f"+{accs[-1] - accs[-1 - third]:.3f} over the last {third}",
            "the network is too small or too constrained for the data, or trains too briefly",
            accs[-1], "train/acc"))
    monitor = str(metrics.get("monitor", config.get("monitor", "val/loss")))
    mode = metrics.get("mode", config.get("mode"))
    series = [r.get(monitor) for r in history if isinstance(r.get(monitor), (int, float))]
    max_epochs = epochs_budget(config)
    stopped_early = metrics.get("stopped_early")
    if len(series) >= 4 and not stopped_early and max_epochs and len(history) >= max_epochs:
        quarter = max(1, len(series) // 4)
        earlier, recent = series[-1 - quarter], series[-1]
        better = (earlier - recent) if mode != "max" else (recent - earlier)
        scale = abs(earlier) or 1.0
        best_index = (series.index(min(series)) if mode != "max" else series.index(max(series)))
        if better > t["converge"] * scale and best_index >= len(series) - 2:
            found.append(Finding(
                "not_converged", "not converged",
                f"{monitor} still improved by {better / scale:.1%} over the last {quarter} epochs and was best at the "
                f"last ones (threshold {t['converge']:.0%}); trainer.max_epochs={max_epochs} ended it",
                "training stopped while the network was still improving", better / scale,
                f"{monitor} change over the last quarter"))
    stopping = ((config.get("callbacks") or {}).get("early_stopping") or {})
    vals_now = [v for _, v in vals]
    flat = bool(vals_now) and vals_now[-1] <= min(vals_now) * (1 + t["overfit"])  # val/loss not getting worse
    if stopped_early and "early stopping" in reason and max_epochs and len(history) < t["eager"] * max_epochs \
            and flat and not any(f.symptom == "overfitting" for f in found):
        found.append(Finding(
            "eager_stopping", "early stopping too eager",
            f"early stopping ended the run after {len(history)} of {max_epochs} epochs (patience "
            f"{stopping.get('patience')}) while val/loss stayed within {t['overfit']:.0%} of its best",
            "a short plateau or noise looked like the end of progress", len(history) / max_epochs,
            "epochs run / max_epochs", {"patience": stopping.get("patience")}))
    return found


# each optimizer's usual learning rates (low, typical, high), keyed by its _target_, from the published defaults and
# recipes: Adam and AdamW 1e-3 (Kingma & Ba's default, PyTorch's too), 3e-4 (Karpathy), 3e-3 at the top; fine-tuning
# recipes go lower (BERT: 2e-5 to 5e-5), within thresholds.lr_range of the bottom. RMSprop 1e-3 (Keras's default) to
# 1e-2 (PyTorch's). SGD, with or without momentum: 0.1 for ResNets at batch 256 (He et al. 2016), dlopt's 0.05,
# 1e-3 for fine-tuning, 0.5 at the top. An optimizer not listed has no usual range here.
USUAL_LR = {"torch.optim.Adam": (1e-4, 1e-3, 3e-3), "torch.optim.AdamW": (1e-4, 1e-3, 3e-3),
            "torch.optim.RMSprop": (1e-4, 1e-3, 1e-2), "torch.optim.SGD": (1e-3, 0.05, 0.5)}


def beyond_usual_lr(config: dict[str, Any]) -> Optional[tuple[float, str]]:
    """How many times optimizer.lr lies beyond its optimizer's usual range (below 1 inside it), and which way the
    range lies from it ("lower" or "higher"); None for an optimizer without a usual range here."""
    optimizer = config.get("optimizer") if isinstance(config.get("optimizer"), dict) else {}
    usual, lr = USUAL_LR.get(str(optimizer.get("_target_"))), optimizer.get("lr")
    if usual is None or not number(lr) or not lr > 0:
        return None
    low, _, high = usual
    return (lr / high, "lower") if lr / high >= low / lr else (low / lr, "higher")


def lr_range_finding(config: dict[str, Any], effects: list[Finding], t: dict[str, float]) -> Optional[Finding]:
    """optimizer.lr more than thresholds.lr_range times beyond its optimizer's usual range, named when the run shows
    what it did (another symptom), of which it is then the cause: an lr far too high wrecks a network in its first
    steps, and the tiny updates of the units it killed no longer show the lr."""
    beyond = beyond_usual_lr(config)
    if beyond is None or not effects or beyond[0] <= t["lr_range"]:
        return None
    factor, direction = beyond
    target = config["optimizer"]["_target_"]
    low, typical, high = USUAL_LR[target]
    name = target.rpartition(".")[2]
    side = "above the top" if direction == "lower" else "below the bottom"
    return Finding(
        "lr_out_of_range", f"learning rate far {'above' if direction == 'lower' else 'below'} {name}'s usual range",
        f"optimizer.lr={config['optimizer']['lr']:g} is {factor:.0f}x {side} of {name}'s usual {low:g} to {high:g} "
        f"(threshold {t['lr_range']:g}x); what it did: {', '.join(f.title for f in effects)}",
        "steps this large wreck the network in its first updates (dead units, a loss thrown far off); what it "
        "recorded after is their aftermath" if direction == "lower" else
        "steps this small barely change the weights in the epochs given",
        factor, f"optimizer.lr beyond {name}'s usual range (x)",
        {"direction": direction, "usual_lr": typical, "usual_range": [low, high], "optimizer": name})


def slow_update_finding(summaries: list[dict[str, Any]], history: list[dict[str, Any]],
                        t: dict[str, float]) -> Optional[Finding]:
    """Updates far below those of healthy runs in every epoch (though above update_low, where nothing moves) in a run
    that did not fit its training split: the learning rate is too low for the epochs given. The largest epoch's ratio
    is judged, so a schedule that drives the last epochs' ratios toward zero does not count."""
    updates = update_ratios(summaries)
    accs = [r["train/acc"] for r in history if number(r.get("train/acc"))]
    if not updates or not accs:
        return None
    top = max(updates.values())
    if not t["update_low"] <= top < t["update_slow"] or accs[-1] >= t["fitted"]:
        return None
    return Finding(
        "lr_too_low", "learning rate too low",
        f"update/weight ratio at most {top:.1e} in every epoch (threshold {t['update_slow']:g}; healthy runs: 3e-3 to "
        f"1.2e-2) while train/acc reached only {accs[-1]:.3f} in {len(accs)} epochs (threshold {t['fitted']:g})",
        "each step changes the weights by a small part of their size: too little to fit in the epochs given",
        top, "update/weight ratio", {"update_ratio": top})


def optimizer_steps(metrics: dict[str, Any]) -> Optional[int]:
    """The optimizer steps a run took (metrics.json's `steps`, Lightning's global_step); None for a run of an older
    dlopt, which did not record them."""
    steps = metrics.get("steps")
    return steps if isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0 else None


def _threshold(t: dict[str, float], key: str) -> float:
    return t.get(key, LATER_THRESHOLDS[key])


def still_improving(history: list[dict[str, Any]], metrics: dict[str, Any], config: dict[str, Any],
                    t: dict[str, float]) -> Optional[str]:
    """How a run was still improving at its last epoch, or None: its monitor best at the last epochs and better by
    more than `converge` over the last quarter (as for not_converged), or, in a run that did not fit its training
    split (train/acc below `fitted`), its training loss at its lowest in the last epochs, down by at least `slow` of
    its first value, with more than `falling` of that fall in the last half of the epochs (a schedule that takes the
    lr to zero slows the end of any run; a converged run made almost all of its fall early) and its monitor within
    `overfit` of its best (more steps would not help a run that overfits)."""
    monitor = str(metrics.get("monitor", config.get("monitor", "val/loss")))
    mode = metrics.get("mode", config.get("mode"))
    series = [(r.get("epoch"), r[monitor]) for r in history if number(r.get(monitor), finite=True)]
    sign = -1 if mode == "max" else 1  # the monitor times sign: lower is better
    values = [sign * v for _, v in series]
    best = values.index(min(values)) if values else None
    if len(values) >= 4:
        quarter = max(1, len(values) // 4)
        better = values[-1 - quarter] - values[-1]
        scale = abs(values[-1 - quarter]) or 1.0
        if better > t["converge"] * scale and best >= len(values) - 2:
            return f"{monitor} still {better / scale:.1%} better over {_last(quarter)}, best at epoch {series[best][0]}"
    losses = [r.get("train/loss") for r in history]
    finite = [v for v in losses if number(v, finite=True)]
    accs = [r["train/acc"] for r in history if number(r.get("train/acc"))]
    worse = bool(values) and values[-1] - values[best] > t["overfit"] * abs(values[best])
    if len(finite) < 4 or len(finite) < len(losses) or (accs and accs[-1] >= t["fitted"]) or worse:
        return None
    half = len(finite) // 2
    fall, recent = finite[0] - finite[-1], finite[-1 - half] - finite[-1]
    lowest = finite.index(min(finite)) >= len(finite) - 2
    if lowest and fall >= t["slow"] * finite[0] and recent > _threshold(t, "falling") * fall:
        return (f"train/loss still falling at the last epoch: {finite[0]:.3g} -> {finite[-1]:.3g}, {recent / fall:.0%} "
                f"of that fall in {_last(half)}" + (f", train/acc {accs[-1]:.3f}" if accs else ""))
    return None


def _last(epochs: int) -> str:
    return "the last epoch" if epochs == 1 else f"the last {epochs} epochs"


def lbfgs(config: dict[str, Any]) -> bool:
    """The run trained with L-BFGS (optimizer=lbfgs): full batch, each step a line search of up to max_iter
    iterations."""
    optimizer = config.get("optimizer") if isinstance(config.get("optimizer"), dict) else {}
    return str(optimizer.get("_target_")) == "torch.optim.LBFGS"


def steps_finding(history: list[dict[str, Any]], metrics: dict[str, Any], config: dict[str, Any],
                  t: dict[str, float]) -> Optional[Finding]:
    """Too few optimizer steps: a run that reached trainer.max_epochs (not stopped early, pruned or diverged) still
    improving (still_improving) after fewer than `few_steps` optimizer steps in all. Not for a run that did not record
    its steps (an older dlopt), nor for L-BFGS, whose every step is a whole line search over the full batch."""
    steps, epochs = optimizer_steps(metrics), epochs_budget(config)
    if steps is None or not epochs or steps >= _threshold(t, "few_steps") or len(history) < epochs or lbfgs(config):
        return None
    if metrics.get("stopped_early") or metrics.get("pruned") or metrics.get("error") or metrics.get("dev_run") \
            or metrics.get("overfit_batches"):
        return None
    how = still_improving(history, metrics, config, t)
    if how is None:
        return None
    ran = len(history)
    per = steps / ran
    batches = metrics.get("batches_per_epoch")
    return Finding(
        "too_few_steps", "too few optimizer steps",
        f"{steps} steps in {ran} epochs ({per:.3g} per epoch; threshold {_threshold(t, 'few_steps'):g} steps) and "
        f"{how}",
        "each step moves the weights only a little (Adam: by about lr each), so a few steps leave them near where "
        "they started: the run ended while still learning",
        float(steps), "optimizer steps",
        {"steps": steps, "epochs": ran, "steps_per_epoch": per, "target_steps": _threshold(t, "few_steps"),
         "batches_per_epoch": batches if number(batches) else None,
         "passes_per_epoch": metrics.get("passes_per_epoch") if number(metrics.get("passes_per_epoch")) else None})


CAUSES = ("lr_out_of_range", "too_few_steps", "lr_too_high", "exploding_gradients", "vanishing_gradients",
          "dead_units", "saturated_units", "stuck", "lr_too_low")
# too few optimizer steps before the learning rate's and the model's symptoms it may explain; an lr far outside its
# optimizer's range before it (more steps at lr 1e-6 would need a thousand times as many)
ORDER = ("lr_out_of_range", "too_few_steps", "lr_too_high", "exploding_gradients", "vanishing_gradients", "dead_units",
         "saturated_units", "lr_too_low", "stuck", "underfitting", "overfitting", "not_converged", "eager_stopping")
# which way a symptom moves the learning rate, strongest evidence first: an lr far outside its optimizer's range
# explains the rest; then steps measured too large or a loss thrown off; then what large steps leave behind (units
# they killed pass no gradient, so the updates that follow are tiny and say nothing of the lr); then tiny updates
LEANINGS = (("lr_out_of_range", None), ("lr_too_high", "lower"), ("exploding_gradients", "lower"),
            ("dead_units", "lower"), ("lr_too_low", "higher"), ("stuck", "higher"))


def lr_direction(findings: list[Finding]) -> tuple[Optional[str], Optional[Finding]]:
    """The one way ("lower" or "higher") the learning rate should move given all the symptoms, and the finding that
    decides it; (None, None) when no symptom speaks of the learning rate."""
    for symptom, direction in LEANINGS:
        for finding in findings:
            if finding.symptom == symptom:
                return direction or finding.facts["direction"], finding
    return None, None


def _leaning(finding: Finding) -> Optional[str]:
    """The direction a finding that is about the learning rate alone asks for."""
    return {"lr_too_high": "lower", "lr_too_low": "higher"}.get(finding.symptom, finding.facts.get("direction"))


def _explained_by_steps(finding: Finding) -> bool:
    """A finding of the curves that too few optimizer steps explain: a loss that never left its starting value or
    barely moved, a monitor still improving at max_epochs. Not the update/weight ratio, which judges each step's
    size whatever their number."""
    return finding.symptom in ("stuck", "not_converged") or \
        (finding.symptom == "lr_too_low" and "update_ratio" not in finding.facts)


def diagnose(records: list[dict[str, Any]], history: list[dict[str, Any]], metrics: dict[str, Any],
             config: dict[str, Any], t: dict[str, float]) -> list[Finding]:
    """Every symptom of a run, most fundamental first (a learning rate that wrecks training before the
    curves' symptoms, which it may cause); one finding per symptom, and one direction for the learning rate:
    a finding asking for the other one is set aside, as the aftermath of the one that decides."""
    summaries = per_epoch(records)
    findings = layer_findings(summaries, t) + curve_findings(history, metrics, config, _classes(records, metrics), t)
    slow = slow_update_finding(summaries, history, t)
    findings += [slow] if slow else []
    out_of_range = lr_range_finding(config, findings, t)
    findings += [out_of_range] if out_of_range else []
    few = steps_finding(history, metrics, config, t)  # not among what an lr far outside its range did
    findings += [few] if few else []
    if lbfgs(config):  # its line search sizes each step (no update once converged), and its plateau is convergence
        findings = [f for f in findings if f.symptom != "eager_stopping" and
                    not (f.symptom in ("lr_too_low", "lr_too_high") and "update_ratio" in f.facts)]
    if any(f.symptom in CAUSES for f in findings):  # low train accuracy is then their effect, not the model's size
        findings = [f for f in findings if f.symptom != "underfitting"]
    unique: dict[str, Finding] = {}
    for finding in sorted(findings, key=lambda f: ORDER.index(f.symptom)):
        if finding.symptom in unique:  # e.g. a large update ratio and a diverged loss: one symptom, both numbers
            first = unique[finding.symptom]
            first.evidence += f"; {finding.title}: {finding.evidence}"
            first.facts.update(finding.facts)
        else:
            unique[finding.symptom] = finding
    if "too_few_steps" in unique:
        unique = _few_steps_first(unique)
    direction, root = lr_direction(list(unique.values()))
    kept = []
    for finding in unique.values():
        if _leaning(finding) in (None, direction):
            kept.append(finding)
        else:
            root.evidence += f"; set aside: {finding.title} ({finding.measure_name} {finding.measure:.2g}), its aftermath"
    return kept


def _few_steps_first(unique: dict[str, Finding]) -> dict[str, Finding]:
    """With too few optimizer steps, the findings they explain are set aside (they would ask for a larger lr or a
    bigger model), unless an lr far outside its range explains them better; updates measured far below healthy
    ones (lr_too_low with an update ratio) keep their lr and go just before it: a larger lr costs no time, more
    steps do."""
    few = unique["too_few_steps"]
    kept = {}
    for symptom, finding in unique.items():
        if finding is not few and _explained_by_steps(finding) and \
                ("lr_out_of_range" not in unique or symptom == "not_converged"):
            few.evidence += f"; set aside: {finding.title} ({finding.measure_name} {finding.measure:.2g}), explained " \
                            "by the few steps"
        else:
            kept[symptom] = finding
    slow = kept.get("lr_too_low")
    if slow is None or "update_ratio" not in slow.facts:
        return kept
    order = [s for s in kept if s != "lr_too_low"]
    order.insert(order.index("too_few_steps"), "lr_too_low")
    return {s: kept[s] for s in order}


# per symptom, thresholds past which it always shows: its measure in a run where it is not a symptom
_ALWAYS = {"vanishing_gradients": {"vanishing": math.inf}, "exploding_gradients": {"exploding": 0.0},
           "dead_units": {"dead": -1.0}, "saturated_units": {"saturated": -1.0}, "lr_too_high": {"update_high": -1.0},
           "lr_too_low": {"update_low": math.inf, "slow": math.inf, "underfit": math.inf}, "stuck": {"stuck": 0.0},
           "underfitting": {"underfit": math.inf}, "overfitting": {"overfit": -1.0, "gap": -math.inf},
           "not_converged": {"converge": -math.inf}, "eager_stopping": {"eager": math.inf}}


def measure(symptom: str, records: list[dict[str, Any]], history: list[dict[str, Any]], metrics: dict[str, Any],
            config: dict[str, Any], t: dict[str, float]) -> Optional[float]:
    """The symptom's measure in a run whether or not it crosses its threshold (None when the run lacks the
    records), so that a remedy's run is compared with the original on the same number."""
    if symptom == "lr_out_of_range":
        beyond = beyond_usual_lr(config)
        return beyond[0] if beyond else None
    if symptom == "too_few_steps":
        steps = optimizer_steps(metrics)
        return float(steps) if steps is not None else None
    lenient = {**t, **_ALWAYS[symptom]}
    if symptom == "lr_too_low":
        lenient["update_high"] = math.inf
    found = [f for f in layer_findings(per_epoch(records), lenient) +
             curve_findings(history, metrics, config, _classes(records, metrics), lenient) if f.symptom == symptom]
    return found[0].measure if found else None


def epochs_budget(config: dict[str, Any]) -> Optional[int]:
    """trainer.max_epochs of a run's config, None when it is not a positive integer (-1: unlimited)."""
    epochs = (config.get("trainer") or {}).get("max_epochs") if isinstance(config.get("trainer"), dict) else None
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0 else None


def _classes(records: list[dict[str, Any]], metrics: dict[str, Any]) -> Optional[int]:
    header = next((r for r in records if r.get("kind") == "layers"), {})
    classes = metrics.get("classes") or header.get("classes")
    return classes if isinstance(classes, int) and classes >= 2 else None
