"""What downstream tasks cost: the quickstart trained, then one scoring at the default
`evals` settings (200 questions a task) timed against the training it interrupts, and
slimcore's lm-evaluation-harness adapter beside the harness's own `hf` model on the
exported folder (the peer), on the same local task.

    python bench/evals.py              # the quickstart's 300 steps (about 3 minutes on 2 cores)
    python bench/evals.py --steps 100

Prints the share of training time the default cadence (every evals.interval steps) costs,
and the adapter's time over the peer's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import QUICKSTART, QUIET  # noqa: E402
from slimcore.commands.cli import main as slimcore_main  # noqa: E402
from slimcore.commands.trained import load_trained  # noqa: E402
from slimcore.config.schema import EvalsSection  # noqa: E402
from slimcore.evals.suite import TaskSuite  # noqa: E402
from slimcore.host.manager import SlimcorePluginManager  # noqa: E402
from slimcore.testing import run_config_file  # noqa: E402
from word_order import write_harness_task, write_order_task  # noqa: E402

def timed(work, repeats: int) -> float:
    """The median wall time of `work()` over `repeats` calls."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        work()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    defaults = EvalsSection()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        data = write_order_task(folder / "order.jsonl", count=defaults.limit)
        write_harness_task(folder / "tasks", data)
        run, _ = run_config_file(QUICKSTART, overrides=[
            f"run.steps={args.steps}", f"output.dir={folder / 'run'}", "samples.prompts=[]"],
            disabled=QUIET)
        assert run.status == "completed", run.status
        step_time = statistics.median(
            m["step_time_s"] for m in run.prior_metrics or history(folder / "run"))
        pm = SlimcorePluginManager()
        pm.discover()
        trained = load_trained(str(folder / "run"), pm, torch.device("cpu"))
        device = torch.device("cpu")
        builtin = TaskSuite(EvalsSection(tasks=[str(data)]))
        harness = TaskSuite(EvalsSection(tasks=["harness:word_order"],
                                         harness_dir=str(folder / "tasks")))
        ours_builtin = timed(lambda: builtin.score(trained.model, trained.tokenizer, device),
                             args.repeats)
        ours_harness = timed(lambda: harness.score(trained.model, trained.tokenizer, device),
                             args.repeats)
        theirs = peer_seconds(trained, folder, harness, args.repeats)
    report(args, step_time, defaults, ours_builtin, ours_harness, theirs)


def history(folder: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in
            (folder / "history" / "metrics.jsonl").read_text().splitlines()]


def peer_seconds(trained, folder: Path, harness: TaskSuite, repeats: int) -> float:
    """lm-evaluation-harness's `hf` model on the exported folder, the same task."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    exported = folder / "hf"
    assert slimcore_main(["export", str(folder / "run"), "--format", "hf",
                          "--output", str(exported)]) == 0
    model = HFLM(pretrained=str(exported), dtype="float32", device="cpu",
                 batch_size=EvalsSection().batch_size, add_bos_token=True)
    return timed(lambda: lm_eval.simple_evaluate(
        model=model, tasks=["word_order"], task_manager=harness.manager, bootstrap_iters=0,
        limit=EvalsSection().limit, random_seed=None, numpy_random_seed=None,
        torch_random_seed=None), repeats)


def report(args, step_time, defaults, builtin, adapter, peer) -> None:
    interval_time = defaults.interval * step_time
    print(textwrap.dedent(f"""\
        quickstart, {args.steps} steps: median step {step_time * 1000:.1f} ms; the default
        cadence scores every {defaults.interval} steps ({interval_time:.0f} s of training)
        one task of {defaults.limit} questions x 4 choices, batch {defaults.batch_size}:
          built-in scorer            {builtin:6.2f} s  {builtin / interval_time:6.2%} of training
          harness task, adapter      {adapter:6.2f} s  {adapter / interval_time:6.2%} of training
          harness task, hf on export {peer:6.2f} s  (adapter / hf: {adapter / peer:.2f}x)"""))


if __name__ == "__main__":
    main()
