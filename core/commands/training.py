"""`slimcore run CONFIG` and `slimcore config CONFIG`: the YAML, `--test`, the flags (the core's
and the plugins' `declare_flags`) and `--set`, resolved into one config; `run` trains it.

    slimcore run examples/quickstart.yaml --steps 600 --resume auto
    slimcore config examples/slimpajama.yaml --test
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from ..config.resolve import resolve_config, smoke_overrides
from ..launch.training import run_training
from ..model.hf_folder import HFFolder


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser,
                flags: dict[str, tuple[str, str]]) -> None:
    run = sub.add_parser("run", parents=[common], help="train as a YAML config says")
    add_config_arguments(run, flags)
    run.set_defaults(handler=command_run, flags=flags)
    config = sub.add_parser("config", parents=[common], help="print the resolved config")
    add_config_arguments(config, flags)
    config.set_defaults(handler=command_config, flags=flags)


def add_config_arguments(parser: argparse.ArgumentParser,
                         flags: dict[str, tuple[str, str]]) -> None:
    parser.add_argument("config", help="the run's YAML file")
    for flag, (key, text) in flags.items():
        # The value is read as YAML and checked by its section, like --set's.
        metavar = key.rsplit(".", 1)[-1].upper()  # STEPS, DIR, MAX_CHUNKS, ...
        parser.add_argument(flag, dest=_dest(flag), metavar=metavar, help=text)
    parser.add_argument("--test", action="store_true", help="smoke run: tiny model, few steps")
    parser.add_argument("--resume", metavar="auto|PATH",
                        help="continue from a checkpoint (a file, or a run folder: its newest "
                             "intact one); auto: this run's newest intact one, if any")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in an output folder that holds an earlier run (it is "
                             "moved to <folder>.replaced-<time>, not deleted)")
    parser.add_argument("--set", dest="assignments", action="append", default=[],
                        metavar="KEY=VALUE", help="set any config key, e.g. model.width=256")


def overrides_from(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The `dotted.key=value` overrides the flags make, in order (--test, the flags, --set),
    and the flag each key came from, for error messages."""
    overrides = smoke_overrides(args.plugin_manager.sections) if args.test else []
    origins = {a.partition("=")[0]: "--test" for a in overrides}
    for flag, (key, _) in args.flags.items():
        value = getattr(args, _dest(flag))
        if value is not None:
            overrides.append(f"{key}={value}")
            origins[key] = flag
    for assignment in args.assignments:
        origins[assignment.partition("=")[0].strip()] = "--set"
    return overrides + args.assignments, origins


def _dest(flag: str) -> str:
    return "flag_" + flag.lstrip("-").replace("-", "_")


def resolved(args: argparse.Namespace):
    """The config the arguments make. A `--test` smoke run goes to a folder of its own
    (runs/<name>-test) unless an output folder is given: it neither mixes with nor is
    refused by the real run's folder, and a smoke run there moves the last one aside."""
    overrides, origins = overrides_from(args)
    config = resolve_config(args.config, overrides, args.plugin_manager, raw=args.raw_config,
                            origins=origins)
    if args.test and config.output.dir is None:
        config.output.dir = str(Path("runs") / f"{config.run.name}-test")
        args.overwrite = args.overwrite or not args.resume
    return config


def command_run(args: argparse.Namespace) -> int:
    config = resolved(args)
    trained = run_training(config, args.plugin_manager, resume=args.resume,
                           overwrite=args.overwrite)
    if trained.stop_signal is not None:
        if config.checkpoint.checkpointer and trained.run.is_main_process:
            print(f"slimcore: stopped; go on with: {resume_command(args.argv)}",
                  file=sys.stderr, flush=True)
        return 128 + trained.stop_signal  # 143 for SIGTERM, as schedulers expect
    return 0


def resume_command(argv: list[str]) -> str:
    """The command line that continues this run: the same, with `--resume auto` (under
    torchrun, a torchrun command of the job's shape)."""
    import shlex

    from ..train.distributed import launched_by_torchrun

    kept, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--resume":
            skip = True
        elif not token.startswith("--resume=") and token != "--overwrite":
            kept.append(token)
    if not launched_by_torchrun():
        return shlex.join(["slimcore", *kept, "--resume", "auto"])
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    nodes = max(1, int(os.environ.get("WORLD_SIZE", "1")) // max(1, per_node))
    launcher = ["--standalone"] if nodes == 1 else ["--nnodes", str(nodes)]
    command = shlex.join(["torchrun", *launcher, "--nproc-per-node", str(per_node), "-m",
                          "slimcore", *kept, "--resume", "auto"])
    return command if nodes == 1 else f"{command} (on every node, with this job's rendezvous " \
        "flags)"


def command_config(args: argparse.Namespace) -> int:
    config = resolved(args)
    if config.model.init_from:  # the shape the run will have: the folder's
        HFFolder.open(config.model.init_from).apply_shape(config)
    print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
    return 0


