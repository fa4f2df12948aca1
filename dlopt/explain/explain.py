"""A saved run explained: its network rebuilt from its checkpoint (dlopt.training.run.rebuild), `explain.samples`
samples of a split attributed by each method, the deletion curves and the optional randomization check, and the
files: explain.json, attributions.npz, attributions.png, importance.png, faithfulness.png, and the pictures in
TensorBoard."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from omegaconf import DictConfig

from dlopt import threads
from dlopt.errors import UserError, naming
from dlopt.explain import faithfulness as faith
from dlopt.explain.features import Features, baseline, default_patch, features, pick
from dlopt.explain.methods import Settings, attribute, permutation
from dlopt.explain.plot import attributions_figure, faithfulness_figure, importance_figure
from dlopt.saved_run import SavedRun
from dlopt.training import report
from dlopt.training.run import rebuild

log = logging.getLogger(__name__)

BACKGROUND = 32  # training inputs gradient_shap draws its baselines from
TOP = 5  # features named per method in explain.json and the log


@dataclass
class Explanation:
    values: torch.Tensor  # (N, features)
    seconds: float
    curve: torch.Tensor  # (N, len(FRACTIONS)): the deletion curve
    sd: Optional[torch.Tensor] = None  # permutation: sd over repeats, per feature
    randomization: Optional[float] = None


def tensors(loader) -> tuple[torch.Tensor, torch.Tensor]:
    """A split's inputs and labels, whole, on the CPU."""
    batches = list(loader)
    return torch.cat([x for x, _ in batches]).cpu().float(), torch.cat([y for _, y in batches]).cpu()


def probabilities(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's class probabilities: what every method explains."""
    return lambda inputs: torch.softmax(model(inputs), dim=1)


def targets(option: Any, labels: torch.Tensor, predicted: torch.Tensor, classes: list[str]) -> torch.Tensor:
    """The class each sample is explained for: `predicted`, the true `label`, or one class by number."""
    if option == "predicted":
        return predicted
    if option == "label":
        return labels
    if not 0 <= option < len(classes):
        shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
        raise UserError(f"explain.target={option} is not a class of this run: give predicted, label or a class number "
                        f"from 0 to {len(classes) - 1} ({shown})")
    return torch.full_like(labels, option)


def explain(cfg: DictConfig, saved: SavedRun, run_dir: Path, allowed: frozenset[str]) -> dict[str, Any]:
    used = threads.use(cfg.threads, quiet=True)  # said in the 'explaining' line
    run_cfg, data, module = rebuild(saved, allowed)
    module.eval()
    options = cfg.explain
    settings = Settings(options.steps, options.evaluations, options.repeats, options.batch_size, cfg.seed)
    x_all, y_all = tensors(data.split_batches(cfg.split))
    if options.samples > len(y_all):
        raise UserError(f"explain.samples={options.samples} is more than the {len(y_all)} samples of the {cfg.split} "
                        f"split; give at most {len(y_all)}")
    feats = features(data.in_shape, options.patch, data.columns)
    index = pick(y_all, options.samples, options.sample_seed)
    x, y = x_all[index], y_all[index]

    forward = probabilities(module)
    with torch.no_grad():
        probs = forward(x)
    target = targets(options.target, y, probs.argmax(1), data.classes)
    x_train, _ = tensors(data.split_batches("train"))
    base = baseline(options.baseline, x, x_train, feats.kind, options.patch or default_patch(data.in_shape))
    background = x_train[:BACKGROUND]
    what = {"image": "patches of the image", "signal": "segments of the signal", "table": "columns of the table"}
    log.info("explaining %d %s samples of %s (%d features: %s; %s baseline, target %s) with %s; %d thread(s)",
             len(x), cfg.split, saved.named, feats.count, what[feats.kind], options.baseline, options.target,
             ", ".join(cfg.method), used)

    def run(method: str, model: torch.nn.Module) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if method == "permutation":
            mean, sd = permutation(model, x_all, y_all, feats, settings)
            return mean.expand(len(x), -1).clone(), sd
        return attribute(method, probabilities(model), x, target, feats, base, background, settings,
                         model.input_scale), None

    explained: dict[str, Explanation] = {}
    for method in cfg.method:
        start = time.perf_counter()
        values, sd = run(method, module)
        seconds = time.perf_counter() - start
        curve = faith.deletion(forward, x, target, values.argsort(1, descending=True), feats, base, options.batch_size)
        explained[method] = Explanation(values, seconds, curve, sd)
        if options.randomization:
            twin_values, _ = run(method, faith.randomized(module, cfg.seed))
            explained[method].randomization = faith.rank_correlation(values, twin_values)
    random_curve = torch.stack([faith.deletion(forward, x, target, order, feats, base, options.batch_size)
                                for order in faith.random_orders(len(x), feats.count, cfg.seed)]).mean(0)

    informative = run_cfg.data.get("informative") if str(run_cfg.data.get("_target_", "")).endswith(".synthetic") \
        else None
    summary = _summary(cfg, saved, run_cfg, data.classes, feats, explained, random_curve, informative, len(x))
    _log(summary)
    _write(run_dir, x, y, probs, target, feats, explained, random_curve, data.classes, summary)
    return summary


def _summary(cfg, saved, run_cfg, classes, feats: Features, explained: dict[str, Explanation],
             random_curve: torch.Tensor, informative: Optional[int], n: int) -> dict[str, Any]:
    random_area = faith.area(random_curve)
    relevant = faith.truth(feats, informative) if informative else None
    methods = {}
    for method, e in explained.items():
        importance = e.values.abs().mean(0) if method != "permutation" else e.values[0]
        top = importance.argsort(descending=True)[:TOP].tolist()
        area = faith.area(e.curve)
        methods[method] = {
            "seconds_per_sample": e.seconds / n,
            "top_features": [{"name": feats.names[i], "importance": float(importance[i]),
                              **({"sd": float(e.sd[i])} if e.sd is not None else {})} for i in top],
            "deletion_auc": area,
            "random_auc": random_area,
            "beats_random": area < random_area,
            **({"randomization_rank_corr": e.randomization} if e.randomization is not None else {}),
            **({"precision_at_k": faith.precision_at_k(importance, relevant)} if relevant else {}),
        }
    return {
        "run": saved.named, "checkpoint": str(saved.checkpoint.resolve()), "split": cfg.split, "samples": n,
        "seed": cfg.seed, "target": cfg.explain.target, "baseline": cfg.explain.baseline, "kind": feats.kind,
        "features": feats.names, "classes": classes, "model": run_cfg.model.get("_target_"),
        **({"informative_features": [feats.names[i] for i in relevant]} if relevant else {}),
        "methods": methods,
    }


def _write(run_dir: Path, x, y, probs, target, feats: Features, explained: dict[str, Explanation],
           random_curve: torch.Tensor, classes: list[str], summary: dict[str, Any]) -> None:
    arrays = {"inputs": x, "labels": y, "probabilities": probs, "targets": target, "feature_mask": feats.mask[0],
              "fractions": faith.FRACTIONS, "random_deletion": random_curve}
    for method, e in explained.items():
        arrays[method] = e.values
        arrays[f"{method}_deletion"] = e.curve
        if e.sd is not None:
            arrays[f"{method}_sd"] = e.sd
    numbers = {k: v.detach().cpu().numpy() for k, v in arrays.items()}
    report.write_npz({"feature_names": np.array(feats.names), **numbers}, run_dir / "attributions.npz")
    predicted = probs.argmax(1)
    captions = [f"true {classes[int(t)]}, predicted {classes[int(p)]} ({float(probs[i, p]):.2f})"
                for i, (t, p) in enumerate(zip(y, predicted))]
    values = {m: e.values for m, e in explained.items()}
    areas = {**{m: summary["methods"][m]["deletion_auc"] for m in explained}, "random": faith.area(random_curve)}
    figures = {
        "attributions": attributions_figure(x, captions, values, feats),
        "importance": importance_figure(values, {m: e.sd for m, e in explained.items() if e.sd is not None}, target,
                                        classes, feats),
        "faithfulness": faithfulness_figure(faith.FRACTIONS, {m: e.curve for m, e in explained.items()}, random_curve,
                                            areas),
    }
    from torch.utils.tensorboard import SummaryWriter

    plt = report.pyplot()
    with naming(run_dir / "tensorboard"):
        writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        for name, fig in figures.items():  # drawn once, for the PNG and for TensorBoard
            fig.set_dpi(100)
            fig.canvas.draw()
            pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3]
            plt.close(fig)
            with naming(run_dir / f"{name}.png"):
                plt.imsave(run_dir / f"{name}.png", pixels)
            writer.add_image(f"explain/{name}", pixels, dataformats="HWC")
        writer.close()
    report.write_json(summary, run_dir / "explain.json")


def _log(summary: dict[str, Any]) -> None:
    lines = [f"{'method':<22}{'s/sample':>9}  {'deletion AUC':>12} {'(random)':>9}  top features"]
    for method, m in summary["methods"].items():
        extra = "".join(f"  {k}={m[k]:.2f}" for k in ("precision_at_k", "randomization_rank_corr") if k in m)
        lines.append(f"{method:<22}{m['seconds_per_sample']:>9.3f}  {m['deletion_auc']:>12.3f} {m['random_auc']:>9.3f}"
                     f"  {', '.join(t['name'] for t in m['top_features'][:3])}{extra}")
    log.info("explanations (deletion AUC below random: the attribution points at what the model uses)\n%s",
             "\n".join(lines))
