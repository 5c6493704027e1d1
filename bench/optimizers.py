"""Muon against AdamW on the CPU quickstart: each at its own best learning rate, several seeds,
the same tokens; held-out loss against steps and wall time, and the step time of each.

    python bench/optimizers.py --out /tmp/optimizers.json              sweep, seeds, report
    python bench/optimizers.py --out /tmp/optimizers.json --step-time  the step time alone

Every run is `slimcore run examples/quickstart.yaml` in this process (the dashboard and
TensorBoard off, held-out loss every 25 steps). The sweep (seed 1337) picks AdamW's
`optimizer.lr`, then Muon's `muon.lr` with its AdamW side at AdamW's best rate; the seeds
then run at those rates. Muon's target: AdamW's median final held-out loss, reached in at
most 75% of AdamW's steps. The step time is measured apart, runs of the two alternating, on
a machine doing nothing else (the sweep's wall times are as loaded as the machine was).
Results are saved to --out after every run: an interrupted bench goes on where it stopped,
and a finished one only prints its report again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from common import quickstart_history

SETTINGS = ["eval.interval=25", "samples.every=100000", "intervals.checkpoint=100000"]
RATES = {"adamw": [1e-3, 2e-3, 4e-3], "muon": [0.0025, 0.005, 0.01, 0.02, 0.04]}
TARGET_SHARE = 0.75  # of AdamW's steps


def train(optimizer: str, rate: float, seed: int, adamw_rate: float, steps: int | None = None
          ) -> list[dict]:
    """One quickstart run; its metrics records."""
    key = "optimizer.lr" if optimizer == "adamw" else "muon.lr"
    overrides = [*SETTINGS, f"optimizer.name={optimizer}", f"optimizer.lr={adamw_rate}",
                 f"{key}={rate}", f"run.seed={seed}"]
    if steps:
        overrides += [f"run.steps={steps}", "eval.interval=100000"]
    return quickstart_history(overrides)


def final_eval(records: list[dict]) -> float:
    return [r["eval_loss"] for r in records if r.get("eval_loss") is not None][-1]


class Results:
    def __init__(self, path: Path):
        self.path = path
        self.runs = json.loads(path.read_text()) if path.exists() else {}

    def get(self, optimizer, rate, seed, adamw_rate) -> list[dict]:
        key = f"{optimizer} lr={rate} seed={seed} adamw_lr={adamw_rate}"
        if key not in self.runs:
            print(f"training {key}", file=sys.stderr, flush=True)
            self.runs[key] = train(optimizer, rate, seed, adamw_rate)
            self.path.write_text(json.dumps(self.runs))
        return self.runs[key]


def sweep(results: Results) -> dict[str, tuple[float, float]]:
    """{optimizer: (its best rate, the AdamW rate it ran with)} at seed 1337."""
    adamw = min(RATES["adamw"], key=lambda r: final_eval(results.get("adamw", r, 1337, r)))
    muon = min(RATES["muon"], key=lambda r: final_eval(results.get("muon", r, 1337, adamw)))
    return {"adamw": (adamw, adamw), "muon": (muon, adamw)}


def steps_to(records: list[dict], target: float) -> tuple[int | None, float | None]:
    """The first evaluated step at or below `target`, and the training time to it."""
    elapsed = 0.0
    for r in records:
        elapsed += r["step_time_s"]
        if r.get("eval_loss") is not None and r["eval_loss"] <= target:
            return r["step"], elapsed
    return None, None


def report(results: Results, seeds: list[int]) -> None:
    best = sweep(results)
    print("sweep (seed 1337): final held-out loss by rate")
    for optimizer, rates in RATES.items():
        adamw_rate = best["muon"][1] if optimizer == "muon" else None
        row = [f"{r:g}: {final_eval(results.get(optimizer, r, 1337, adamw_rate or r)):.4f}"
               for r in rates]
        print(f"  {optimizer:5s} " + "  ".join(row) + f"   best {best[optimizer][0]:g}")
    runs = {name: [results.get(name, rate, seed, adamw) for seed in seeds]
            for name, (rate, adamw) in best.items()}
    finals = {name: [final_eval(r) for r in rs] for name, rs in runs.items()}
    for name, values in finals.items():
        print(f"{name:5s} final held-out loss over seeds {seeds}: median "
              f"{statistics.median(values):.4f} (min {min(values):.4f}, max {max(values):.4f})")
    target = statistics.median(finals["adamw"])
    adamw_steps = runs["adamw"][0][-1]["step"]
    adamw_time = statistics.median(sum(r["step_time_s"] for r in rs) for rs in runs["adamw"])
    reached = [steps_to(rs, target) for rs in runs["muon"]]
    print(f"muon to AdamW's median final loss {target:.4f}: steps {[s for s, _ in reached]} "
          f"of AdamW's {adamw_steps}")
    if all(s is not None for s, _ in reached):
        share = statistics.median(s for s, _ in reached) / adamw_steps
        time_share = statistics.median(t for _, t in reached) / adamw_time
        print(f"  median share of AdamW's steps {share:.2f} (target at most {TARGET_SHARE}), "
              f"of its training time {time_share:.2f} (as loaded as the machine was)")
    print_curves(runs)
    if "step_time" in results.runs:
        print_step_time(results.runs["step_time"])


def print_curves(runs: dict[str, list[list[dict]]]) -> None:
    print("held-out loss (median over seeds) by step, and the median training time to it (s)")
    steps = [r["step"] for r in runs["adamw"][0] if r.get("eval_loss") is not None]
    print("  step  " + "  ".join(f"{name:>16s}" for name in runs))
    for step in steps:
        cells = []
        for rs in runs.values():
            loss = statistics.median(r["eval_loss"] for records in rs for r in records
                                     if r["step"] == step)
            time = statistics.median(sum(r["step_time_s"] for r in records[:step])
                                     for records in rs)
            cells.append(f"{loss:8.4f} {time:6.1f}s")
        print(f"  {step:4d}  " + "  ".join(f"{c:>16s}" for c in cells))


def measure_step_time(results: Results, rounds: int) -> None:
    best = sweep(results)
    times = {name: [] for name in best}
    for _ in range(rounds):
        for name, (rate, adamw) in best.items():  # alternating: drift hits both alike
            records = train(name, rate, 1337, adamw, steps=60)
            times[name] += [r["step_time_s"] for r in records[10:]]
    results.runs["step_time"] = {name: statistics.median(t) for name, t in times.items()}
    results.path.write_text(json.dumps(results.runs))


def print_step_time(step_time: dict[str, float]) -> None:
    ratio = step_time["muon"] / step_time["adamw"]
    print(f"step time (median, steps 11-60, runs alternating): adamw "
          f"{step_time['adamw'] * 1e3:.1f} ms, muon {step_time['muon'] * 1e3:.1f} ms: muon/adamw "
          f"{ratio:.3f} (target at most 1.05)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the runs, saved as JSON")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337, 1, 2])
    parser.add_argument("--step-time", action="store_true", help="measure the step time")
    parser.add_argument("--rounds", type=int, default=3, help="step-time runs of each")
    args = parser.parse_args()
    results = Results(args.out)
    if args.step_time:
        measure_step_time(results, args.rounds)
    report(results, args.seeds)


if __name__ == "__main__":
    main()
