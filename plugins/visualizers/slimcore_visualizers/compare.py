"""Plugin `compare`: `slimcore compare RUN_DIR [RUN_DIR ...] [--output PNG] [--target T]`.

Overlays the runs' loss, bits per byte, accuracy and throughput (each with its moving average) from the
history every run writes (`history/metrics.jsonl`, whatever plugins were on; json_export's
`training_viz/metrics_history.json` where a folder lacks it) in one PNG; the held-out evaluations are points in the
run's color on the loss and accuracy panels. The PNG's metadata says what it drew (`Runs`,
`Evaluations`: points per run). With a target (`--target "eval_loss <= 4.9"`, or each run's
own `run.stop_at`), it prints each run's steps, tokens and time to it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import yaml
from slimcore import (ChartData, RunPaths, Target, UserError, hookimpl, seconds_to,
                      setting_flag, write_atomically)

from .dashboard import DashboardConfig
from .files import metrics_history

# (metric, axis label, scale, its evaluation metric)
PANELS = (("loss", "cross-entropy (nats/token)", 1.0, "eval_loss"),
          ("bits_per_byte", "bits per byte (across tokenizers)", 1.0, "eval_bits_per_byte"),
          ("accuracy", "accuracy (%)", 100.0, "eval_accuracy"),
          ("tokens_per_second", "tokens/s", 1.0, None))


@hookimpl
def register_commands(subparsers):
    parser = subparsers.add_parser("compare", help="overlay runs' loss, accuracy, throughput")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="output folders of runs")
    parser.add_argument("--output", default="comparison.png", help="the PNG to write")
    parser.add_argument("--moving-average", type=setting_flag(DashboardConfig, "moving_average"),
                        default=50, metavar="STEPS", help="steps in the smoothed curves")
    parser.add_argument("--target", metavar="'METRIC <= VALUE'",
                        help="print each run's steps, tokens and time to this target "
                             "(default: each run's run.stop_at)")
    parser.set_defaults(handler=command_compare)


def read_history(run_dir: Path) -> list[dict]:
    """Every step of the run in `run_dir`: the core's history, or where a folder lacks it
    (one copied without it), json_export's file."""
    log, exported = RunPaths(run_dir).metrics_log, metrics_history(run_dir)
    if log.is_file():
        history = read_log(log)
    elif exported.is_file():
        try:
            history = json.loads(exported.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"compare: {exported} is not valid JSON ({e})") from None
    else:
        raise UserError(f"compare: {log} and {exported} not found; give output folders of "
                        "runs")
    if not history:
        raise UserError(f"compare: {log if log.is_file() else exported} holds no steps yet")
    return history


def read_log(path: Path) -> list[dict]:
    """The records of a JSON-lines history; a last line cut short by a kill is dropped."""
    history, lines = [], path.read_text(errors="replace").splitlines()
    for number, line in enumerate(lines, 1):
        try:
            history.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number < len(lines):
                raise UserError(f"compare: {path}, line {number} is not valid JSON ({e})"
                                ) from None
    return history


def command_compare(args) -> int:
    runs = {Path(r).name or str(r): read_history(Path(r)) for r in args.runs}
    targets = {name: target_of(Path(r), args.target) for name, r in zip(runs, args.runs)}
    draw_comparison(args, runs)
    for line in time_to_target(runs, targets):
        print(line)
    return 0


def target_of(run_dir: Path, given: str | None) -> Target | None:
    """`--target`, else the run's own run.stop_at (from its config.yaml), else None."""
    text = given
    if text is None:
        try:
            recorded = yaml.safe_load(RunPaths(run_dir).config.read_text())
            text = recorded["run"]["stop_at"]
        except (OSError, yaml.YAMLError, TypeError, KeyError):
            return None
    if not isinstance(text, str):
        return None
    try:
        return Target.parse(text)
    except ValueError as e:
        if given is None:
            return None  # a config.yaml edited by hand: no target, as if none were set
        raise UserError(f"compare: --target: {e}") from None


def time_to_target(runs: dict[str, list[dict]], targets: dict[str, Target | None]) -> list[str]:
    """A line per run with a target: the first step that reached it, the tokens seen and the
    wall time from the first step's start (as the history's timestamps say), or its best."""
    lines = []
    for name, history in runs.items():
        target = targets[name]
        if target is None:
            continue
        hit = target.first_reached(history)
        if hit is None:
            measured = [r[target.metric] for r in history
                        if isinstance(r.get(target.metric), (int, float))]
            best = (min if target.op == "<=" else max)(measured) if measured else None
            lines.append(f"{name}: {target} not reached" + (
                f" (best {target.metric} {best:.4f})" if best is not None else ""))
            continue
        lines.append(f"{name}: {target} at step {hit['step']}, {hit['tokens_seen']:,} tokens, "
                     f"{seconds_to(history, hit):.1f} s")
    return lines


def draw_comparison(args, runs: dict[str, list[dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from .charts import moving_average

    sns.set_theme(style="whitegrid")
    figure, axes = plt.subplots(1, len(PANELS), figsize=(6 * len(PANELS), 4.5),
                                layout="constrained")
    evaluations = {name: 0 for name in runs}
    for (key, label, scale, eval_key), ax in zip(PANELS, axes):
        for index, (name, history) in enumerate(runs.items()):
            data = ChartData(metrics=history)
            steps, values = data.series(key)
            color = f"C{index}"
            ax.plot(steps, values * scale, color=color, alpha=0.25, linewidth=1)
            ax.plot(steps, moving_average(values * scale, args.moving_average), color=color,
                    linewidth=2, label=name)
            if eval_key:
                eval_steps, eval_values = data.series(eval_key)
                keep = np.isfinite(eval_values)
                if keep.any():
                    ax.scatter(eval_steps[keep], eval_values[keep] * scale, color=color,
                               edgecolors="black", linewidths=0.6, s=28, zorder=3,
                               label=f"{name} (evaluation)")
                    evaluations[name] = int(keep.sum())
        if key == "tokens_per_second":
            ax.set_ylim(bottom=0)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.set_title(label.split(" (")[0].capitalize())
        ax.legend(fontsize=8)
    count = f"{len(runs)} run" + ("s" if len(runs) > 1 else "")
    figure.suptitle(f"{count} ({args.moving_average}-step averages bold)")
    output = Path(args.output)
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=100,
                   metadata={"Runs": json.dumps(list(runs)),
                             "Evaluations": json.dumps(evaluations)})
    plt.close(figure)
    write_atomically(output, png.getvalue())  # a place it cannot write is one line
    print(f"wrote {output}")
