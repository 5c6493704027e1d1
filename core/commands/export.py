"""`slimcore export SOURCE --format NAME --output DIR`: the trained model in another framework's
layout, written by the export format's plugin into a new hidden folder beside DIR and renamed
when whole (storage.atomic.atomic_folder): a failed or stopped export leaves nothing.

    slimcore export runs/quickstart --format hf --output quickstart-hf
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..contracts.errors import UserError
from ..storage.atomic import atomic_folder
from .trained import CHECKPOINTER_HELP, SOURCE_HELP, load_trained

EXPORT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                 "float16": torch.float16}


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    ex = sub.add_parser("export", parents=[common], help="write a checkpoint in another format",
                        description="Write the model and tokenizer of SOURCE into a new folder "
                                    "in an export format (plugins add formats; `slimcore "
                                    "plugins` lists the installed ones).")
    ex.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    ex.add_argument("--format", required=True, metavar="NAME",
                    help="the export format (installed: see `slimcore plugins`)")
    ex.add_argument("--output", required=True, metavar="DIR",
                    help="a folder that does not exist yet, or is empty")
    ex.add_argument("--dtype", choices=sorted(EXPORT_DTYPES), default="float32",
                    help="the weights' type in the export (default float32, as trained)")
    ex.add_argument("--checkpointer", metavar="NAME", help=CHECKPOINTER_HELP)
    ex.set_defaults(handler=command_export)


def command_export(args) -> int:
    plugins = args.plugin_manager
    output = Path(args.output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UserError(f"--output: {output} exists and is not an empty folder; give a new "
                        "folder (nothing was written)")
    export_format = plugins.lookup("export format", args.format, "--format")
    checkpoint = load_trained(args.source, plugins, torch.device("cpu"),
                              args.checkpointer).checkpoint
    with atomic_folder(output) as partial:
        written = export_format.export(checkpoint, partial, EXPORT_DTYPES[args.dtype])
    files = sorted(p.name for p in output.iterdir())
    print(f"export: {checkpoint.path} (step {checkpoint.step}) -> {output}, format "
          f"{args.format}: {written}; {', '.join(files)}")
    return 0
