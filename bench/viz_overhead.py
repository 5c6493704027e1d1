"""What the charts and exporters cost training: the same run with every observer on (the
dashboard at viz interval 10, JSON, TensorBoard) and with all of them off, side by side in
one process, with the share of dashboard intervals that got their PNG; then the time of a
dashboard render (the first, which lays the figure out, and the next ones, which redraw it).
Target: steps/s with them at least 0.98x without.

    python bench/viz_overhead.py                    # quickstart model, CPU
    python bench/viz_overhead.py --smoke            # the --test model: steps of milliseconds
    python bench/viz_overhead.py --only tensorboard # the TensorBoard exporter alone, on vs off
    python bench/viz_overhead.py --only wandb       # W&B (offline) alone; also --only mlflow
                                                    # (a sqlite store in the run's folder)

Record the figures in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import build_config, fixed_batches, time_run
from slimcore import ChartData
from slimcore.config.resolve import SMOKE_OVERRIDES

SMOKE_MODEL = tuple(o for o in SMOKE_OVERRIDES if o.startswith(("model.", "data.")))
OBSERVERS = ("dashboard", "json_export", "tensorboard")
SEVEN_CHARTS = ("loss", "accuracy", "throughput", "learning_rate", "loss_vs_accuracy",
                "recent_performance", "text_samples")
VIZ_EVERY = 10
# The optional trackers are off unless their section turns them on: with --only, turned on
# with these (the run's folder as {out}); no network.
TRACKERS = {"wandb": ("wandb.enabled=true", "wandb.mode=offline"),
            "mlflow": ("mlflow.enabled=true", "mlflow.tracking_uri=sqlite:///{out}/mlflow.db")}


def time_renders(steps: int, samples: int) -> tuple[float, float]:
    """Seconds for the first dashboard of all seven charts over a `steps`-long history, and
    for the next one (the same figure redrawn)."""
    from slimcore_visualizers import render_worker

    render_worker.sns.set_theme(style="whitegrid")
    charts = render_worker.load_charts(list(SEVEN_CHARTS), list(SEVEN_CHARTS))
    data = ChartData(metrics=[{"step": s, "loss": 8 / (1 + s / 100), "accuracy": s / steps,
                               "learning_rate": 1e-3, "tokens_per_second": 4000.0}
                              for s in range(1, steps + 1)],
                     samples=[{"step": s, "prompt": "The state", "text": "of the Union " * 8}
                              for s in range(samples)])
    with tempfile.TemporaryDirectory() as out:
        renderer = render_worker.Renderer(charts, {"output_dir": out, "columns": 3, "dpi": 100,
                                                   "run_name": "bench", "max_cpu_share": 1.0})
        times = []
        for _ in range(3):
            started = time.perf_counter()
            renderer.render(data, steps)
            times.append(time.perf_counter() - started)
        return times[0], statistics.median(times[1:])


def pngs_per_interval(out: Path, steps: int) -> str:
    drawn = len(list((out / "training_viz").glob("training_step_*.png")))
    return f"{drawn}/{steps // VIZ_EVERY} intervals drawn"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--smoke", action="store_true", help="the tiny --test model")
    parser.add_argument("--only", choices=(*OBSERVERS, *TRACKERS),
                        help="compare this observer alone (the others off) on against off")
    args = parser.parse_args()
    model = SMOKE_MODEL if args.smoke else ()
    config, pm = build_config(args, Path(tempfile.gettempdir()), model)
    tokenizer, batches = fixed_batches(config, pm, args.steps)
    print(f"model: width {config.model.width}, {config.model.layers} layers, seq "
          f"{config.model.seq_len}, batch {config.data.batch_size}; {args.steps} steps, first "
          f"{args.warmup} excluded; charts every {VIZ_EVERY} steps; device {args.device}")
    ratios = []
    for repeat in range(args.repeats):
        rates = {}
        order = ("charts", "plain") if repeat % 2 == 0 else ("plain", "charts")
        for which in order:
            others = tuple(o for o in OBSERVERS if args.only and o != args.only)
            with tempfile.TemporaryDirectory() as out:
                if which == "charts":
                    enable = tuple(o.format(out=out) for o in TRACKERS.get(args.only, ()))
                    every = tuple(f"{o}.every={VIZ_EVERY}" for o in ("dashboard",
                                                                     "json_export")
                                  if o not in others)
                    rates[which] = time_run(args, batches, tokenizer, Path(out),
                                            (*model, *every, *enable), disabled=others)
                    if "dashboard" not in others:
                        drawn = pngs_per_interval(Path(out), args.steps)
                else:
                    rates[which] = time_run(args, batches, tokenizer, Path(out), model,
                                            disabled=OBSERVERS)
        ratios.append(rates["charts"] / rates["plain"])
        on = args.only or "all observers"
        print(f"repeat {repeat + 1}: {on} {rates['charts']:.3f} steps/s, none "
              f"{rates['plain']:.3f} steps/s, ratio {ratios[-1]:.3f}"
              + (f"; dashboard: {drawn}" if not args.only or args.only == "dashboard" else ""))
    print(f"with {args.only or 'all observers'} / without, steps/s: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
    for steps in (300, 10_000) if not args.only else ():
        first, again = time_renders(steps, 40)
        print(f"dashboard render, 7 charts, {steps} steps of history: first {first:.2f} s, "
              f"then {again:.2f} s (the figure redrawn)")


if __name__ == "__main__":
    main()
