"""Time to a target on the CPU quickstart: `run.stop_at` over several seeds, the median and
spread of the steps, tokens and seconds each took.

    python bench/time_to_target.py --target "eval_loss <= 5.3"
    python bench/time_to_target.py --target "eval_loss <= 5.3" --set optimizer.name=muon \\
        --set muon.lr=0.005

Every run is `slimcore run examples/quickstart.yaml` in this process, the dashboard and
TensorBoard off, held-out loss every 10 steps (the target is met at an evaluation), stopped
by `run.stop_at`. The seconds are the training's, from the first step's start to the end of
the step that reached the target (the history's timestamps), on a machine doing nothing else.
"""

from __future__ import annotations

import argparse
import statistics

from common import quickstart_history


def time_to_target(target: str, seed: int, settings: list[str]) -> dict | None:
    """{step, tokens, seconds} of one run to `target`; None when run.steps came first."""
    from slimcore import Target, seconds_to

    history = quickstart_history([
        "eval.interval=10", "samples.every=100000", "intervals.checkpoint=100000",
        f"run.stop_at={target}", f"run.seed={seed}", *settings])
    hit = Target.parse(target).first_reached(history)
    if hit is None:
        return None
    return {"step": hit["step"], "tokens": hit["tokens_seen"],
            "seconds": seconds_to(history, hit)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="eval_loss <= 5.3")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337, 1, 2])
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE", help="a config override for every run")
    args = parser.parse_args()
    runs = {seed: time_to_target(args.target, seed, args.settings) for seed in args.seeds}
    print(f"time to {args.target} on the quickstart {' '.join(args.settings)}")
    for seed, result in runs.items():
        print(f"  seed {seed}: " + ("not reached in run.steps" if result is None else
                                    f"step {result['step']}, {result['tokens']:,} tokens, "
                                    f"{result['seconds']:.1f} s"))
    reached = [r for r in runs.values() if r is not None]
    if reached:
        for key, form in (("step", ",.0f"), ("tokens", ",.0f"), ("seconds", ".1f")):
            values = [r[key] for r in reached]
            print(f"  {key}: median {statistics.median(values):{form}} (min "
                  f"{min(values):{form}}, max {max(values):{form}}; {len(reached)} of "
                  f"{len(runs)} seeds reached it)")


if __name__ == "__main__":
    main()
