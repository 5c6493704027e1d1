"""`slimcore eval SOURCE`: loss, perplexity, bits per byte and next-token accuracy of a trained
model on the held-out data of its run's source, or on other data (`--data`, which the source
declares); with `--task`, downstream tasks' scores instead (evals/).

    slimcore eval runs/quickstart --data more_text.jsonl --json
    slimcore eval runs/quickstart --task tasks/capitals.jsonl --task harness:arc_easy
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys

from ..config.yaml_text import apply_override
from ..config.schema import EvalSection, EvalsSection
from ..contracts.errors import ConfigError, UserError
from .arguments import setting_flag
from ..host.roles import validation_batches, validation_components
from ..evals.suite import TaskSuite
from ..model.device import autocast_context, resolve_device
from ..text.token_bytes import TokenBytes
from ..train.evaluation import component_losses, evaluate
from .generate import quiet_stdout
from .trained import CHECKPOINTER_HELP, SOURCE_HELP, TrainedModel, load_trained, saved_config


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    ev = sub.add_parser("eval", parents=[common], help="score a checkpoint on held-out text",
                        description="Loss, perplexity and next-token accuracy of the model of "
                                    "SOURCE on the held-out data of its run, or on --data.")
    ev.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    ev.add_argument("--data", metavar="PATH",
                    help="score on this data instead (it sets the key the run's data source "
                         "declares for other held-out data)")
    ev.add_argument("--batches", type=setting_flag(EvalSection, "batches"), metavar="N",
                    help="micro-batches to score (default: the run's eval.batches)")
    ev.add_argument("--set", dest="assignments", action="append", default=[],
                    metavar="KEY=VALUE", help="change a key of the run's config for the "
                                              "evaluation, e.g. data.batch_size=8")
    ev.add_argument("--task", dest="tasks", action="append", default=[], metavar="TASK",
                    help="score a downstream task instead: a JSON-lines multiple-choice file, "
                         "or harness:NAME (lm-evaluation-harness); repeat for more")
    ev.add_argument("--limit", type=setting_flag(EvalsSection, "limit"), metavar="N",
                    help="questions per task (default: the run's evals.limit; 0: all)")
    ev.add_argument("--harness-dir", metavar="DIR",
                    help="a folder of local lm-evaluation-harness task YAMLs")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    ev.add_argument("--json", action="store_true", help="print the result as one JSON object")
    ev.add_argument("--checkpointer", metavar="NAME", help=CHECKPOINTER_HELP)
    ev.set_defaults(handler=command_eval)


def command_eval(args) -> int:
    if args.tasks:
        return command_eval_tasks(args)
    device = resolve_device(args.device)
    plugins = args.plugin_manager
    with quiet_stdout(args.json):
        trained = load_trained(args.source, plugins, device, args.checkpointer)
        config = evaluation_config(trained, args)
        batches = validation_batches(plugins, config, trained.tokenizer, config.eval.batches,
                                     "eval")
        # a mixing source's components, each on its own held-out data (not with --data)
        components = None if args.data else validation_components(
            plugins, config, trained.tokenizer, config.eval.batches)
    bar = progress_bar(len(batches))
    token_bytes, masked = TokenBytes(trained.tokenizer, device), config.data.document_mask
    loss, accuracy, bpb = evaluate(trained.model, batches, device, autocast_context(device),
                                   token_bytes, on_batch=bar.update, document_mask=masked)
    bar.close()
    components = component_losses(trained.model, components, device, token_bytes, masked)
    tokens = sum(batch.target_count for batch in batches)
    result = {"checkpoint": trained.checkpoint.path, "step": trained.checkpoint.step,
              "data": args.data or "held-out", "source": config.data.source,
              "batches": len(batches), "tokens": tokens, "loss": loss,
              "perplexity": math.exp(min(loss, 700.0)), "bits_per_byte": bpb,
              "accuracy": accuracy}
    if components:
        result["components"] = components
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"eval: {result['checkpoint']} (step {result['step']}) on {len(batches)} batches "
          f"({tokens:,} tokens) of {args.data or 'the held-out data'}: loss {loss:.4f}, "
          f"perplexity {result['perplexity']:,.2f}, "
          + (f"bits per byte {bpb:.4f}, " if bpb is not None else "")
          + f"accuracy {accuracy:.4f}")
    for name, component_loss in (components or {}).items():
        print(f"  {name}: loss {component_loss:.4f}")
    return 0


def command_eval_tasks(args) -> int:
    """`slimcore eval SOURCE --task T ...`: the tasks' scores on the checkpoint's model."""
    device = resolve_device(args.device)
    with quiet_stdout(args.json):
        trained = load_trained(args.source, args.plugin_manager, device, args.checkpointer)
        section = dataclasses.replace(
            trained.config.evals, tasks=args.tasks, harness_dir=args.harness_dir,
            limit=trained.config.evals.limit if args.limit is None else args.limit)
        suite = TaskSuite(section, key="--task")
        scores = suite.score(trained.model, trained.tokenizer, device)
    if args.json:
        print(json.dumps({"checkpoint": trained.checkpoint.path,
                          "step": trained.checkpoint.step, "tasks": scores}))
        return 0
    print(f"eval: {trained.checkpoint.path} (step {trained.checkpoint.step})")
    for task, metrics in scores.items():
        print(f"  {task}: " + ", ".join(f"{metric} {value:.4f}"
                                       for metric, value in metrics.items()))
    return 0


def evaluation_config(trained: TrainedModel, args):
    """The config the checkpoint recorded, pointed at the data to score: `--data` sets the
    key the data source declares for other held-out data (`eval_data_key`)."""
    plugins = args.plugin_manager
    raw = json.loads(json.dumps(trained.checkpoint.config))  # a copy to change
    overrides = []
    if args.data:
        name = (raw.get("data") or {}).get("source") or trained.config.data.source
        key = plugins.lookup("data source", name).eval_data_key
        if key is None:
            raise UserError(f"--data: data source '{name}' takes no other held-out data (it "
                            "declares no eval_data_key); point it elsewhere with --set")
        overrides.append(("--data", key, args.data))
    if args.batches is not None:
        overrides.append(("--batches", "eval.batches", args.batches))
    for _, key, value in overrides:
        section, _, name = key.partition(".")
        raw.setdefault(section, {})[name] = value
    for assignment in args.assignments:
        apply_override(raw, assignment)
    source = f"{trained.checkpoint.path} (its config)" + (" with --set" if args.assignments
                                                          else "")
    try:
        return saved_config(raw, plugins, source)
    except ConfigError as e:
        for origin, key, _ in overrides:
            if e.key == key:
                raise ConfigError(e.key, e.detail, origin) from None
        raise


def progress_bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="batch", desc="eval", file=sys.stderr,
                disable=not sys.stderr.isatty(), leave=False)
