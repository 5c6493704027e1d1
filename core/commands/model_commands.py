"""The commands that use a trained model: `slimcore generate`, `slimcore eval` and
`slimcore export`. Each takes SOURCE, a checkpoint file or a run folder (its newest intact
checkpoint), read by trained.py.

    slimcore generate runs/quickstart --prompt "The state of the Union is" --temperature 0
    slimcore eval runs/quickstart --data more_text.jsonl --json
    slimcore export runs/quickstart --format hf --output quickstart-hf
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch

from ..config.schema import ConfigError, apply_override, declared_sections
from ..contracts.errors import UserError
from ..model.generation import SamplingSettings, continuation_text, generate
from ..contracts.run import Run, resolve_device
from ..commands.trained import TrainedModel, load_trained, saved_config

EXPORT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                 "float16": torch.float16}


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    source_help = "a checkpoint (checkpoint_step_N.bin) or a run folder (its newest checkpoint)"
    checkpointer_help = ("the checkpointer plugin that reads it (default: the one the run "
                         "folder's config names, else three_file)")

    gen = sub.add_parser("generate", parents=[common], help="continue prompts with a checkpoint",
                         description="Continue each prompt with the model of SOURCE, streaming "
                                     "the text to stdout as it is generated.")
    gen.add_argument("source", metavar="SOURCE", help=source_help)
    gen.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                     help="a prompt (repeatable); without --prompt or --prompt-file, one "
                          "prompt per line of standard input")
    gen.add_argument("--prompt-file", metavar="FILE", help="one prompt per line")
    gen.add_argument("--max-new-tokens", type=int, default=128, metavar="N",
                     help="tokens to generate per prompt (default 128)")
    gen.add_argument("--temperature", type=float, default=0.8, metavar="T",
                     help="0: greedy; higher: more varied (default 0.8)")
    gen.add_argument("--top-k", type=int, default=50, metavar="K",
                     help="sample among the K most likely tokens; 0: all (default 50)")
    gen.add_argument("--top-p", type=float, default=1.0, metavar="P",
                     help="sample among the most likely tokens holding mass P; 1: all "
                          "(default 1)")
    gen.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    gen.add_argument("--ignore-eos", action="store_true",
                     help="go on past the end-of-document token instead of stopping there")
    gen.add_argument("--no-cache", action="store_true",
                     help="recompute the whole context for every token (slow; for checks)")
    gen.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    gen.add_argument("--json", action="store_true",
                     help="print one JSON record per prompt instead of streaming text")
    gen.add_argument("--checkpointer", metavar="NAME", help=checkpointer_help)
    gen.set_defaults(handler=command_generate)

    ev = sub.add_parser("eval", parents=[common], help="score a checkpoint on held-out text",
                        description="Loss, perplexity and next-token accuracy of the model of "
                                    "SOURCE on the held-out data of its run, or on --data.")
    ev.add_argument("source", metavar="SOURCE", help=source_help)
    ev.add_argument("--data", metavar="PATH",
                    help="score on this corpus instead (any path corpus.path takes; it sets "
                         "corpus.eval_path, which the bundled sources read)")
    ev.add_argument("--batches", type=int, metavar="N",
                    help="micro-batches to score (default: the run's eval.batches)")
    ev.add_argument("--set", dest="assignments", action="append", default=[],
                    metavar="KEY=VALUE", help="change a key of the run's config for the "
                                              "evaluation, e.g. data.batch_size=8")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    ev.add_argument("--json", action="store_true", help="print the result as one JSON object")
    ev.add_argument("--checkpointer", metavar="NAME", help=checkpointer_help)
    ev.set_defaults(handler=command_eval)

    ex = sub.add_parser("export", parents=[common], help="write a checkpoint in another format",
                        description="Write the model and tokenizer of SOURCE into a new folder "
                                    "in an export format (plugins add formats; `hf`: a "
                                    "Hugging Face LlamaForCausalLM folder).")
    ex.add_argument("source", metavar="SOURCE", help=source_help)
    ex.add_argument("--format", required=True, metavar="NAME",
                    help="the export format (installed: see `slimcore plugins`; hf ships)")
    ex.add_argument("--output", required=True, metavar="DIR",
                    help="a folder that does not exist yet, or is empty")
    ex.add_argument("--dtype", choices=sorted(EXPORT_DTYPES), default="float32",
                    help="the weights' type in the export (default float32, as trained)")
    ex.add_argument("--checkpointer", metavar="NAME", help=checkpointer_help)
    ex.set_defaults(handler=command_export)


# -- generate -------------------------------------------------------------------------------


def command_generate(args) -> int:
    settings = SamplingSettings(max_new_tokens=args.max_new_tokens,
                                temperature=args.temperature, top_k=args.top_k,
                                top_p=args.top_p)
    problems = settings.problems()
    if problems:
        name, problem = problems[0]
        raise UserError(f"--{name.replace('_', '-')}: {problem}")
    prompts = read_prompts(args)
    device = resolve_device(args.device)
    with quiet_stdout(args.json):
        trained = load_trained(args.source, args.plugin_manager, device, args.checkpointer)
    tokenizer = trained.tokenizer
    if not args.ignore_eos:
        settings = dataclasses.replace(settings, stop_id=tokenizer.eos_id)
    print(f"generate: {trained.description}", file=sys.stderr)
    generator = torch.Generator().manual_seed(args.seed)
    for i, prompt in enumerate(prompts):
        prompt_ids = [tokenizer.bos_id] + tokenizer.encode(prompt)
        stream = None if args.json else TextStream(tokenizer, prompt_ids)
        if stream is not None:
            print(("\n" if i else "") + prompt, end="", flush=True)
        started = time.perf_counter()
        new_ids = generate(trained.model, prompt_ids, settings, generator,
                           use_cache=not args.no_cache,
                           on_token=stream.add if stream is not None else None)
        seconds = time.perf_counter() - started
        text = continuation_text(tokenizer, prompt_ids, new_ids)
        if stream is not None:
            stream.finish(text)
        else:
            print(json.dumps({
                "prompt": prompt, "text": text, "prompt_tokens": len(prompt_ids),
                "new_tokens": len(new_ids), "ids": new_ids,
                "stopped": stop_reason(new_ids, settings),
                "seconds": round(seconds, 4)}), flush=True)
    return 0


def stop_reason(new_ids: list[int], settings: SamplingSettings) -> str:
    """Why generation ended: every token asked for came; or EOS came (or, rarely, a diverged
    model's logits stopped being finite: generate() ends on both alike); or, with EOS
    ignored, only the latter."""
    if len(new_ids) == settings.max_new_tokens:
        return "max_new_tokens"
    return "eos" if settings.stop_id is not None else "non_finite_logits"


def read_prompts(args) -> list[str]:
    prompts = list(args.prompt)
    if args.prompt_file:
        try:
            text = Path(args.prompt_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"--prompt-file: cannot read {args.prompt_file} "
                            f"({getattr(e, 'strerror', None) or e}); give a UTF-8 text file, "
                            "one prompt per line") from None
        prompts += [line for line in text.splitlines() if line.strip()]
    elif not prompts:
        if sys.stdin is None or sys.stdin.isatty():
            raise UserError("generate: no prompt; give --prompt TEXT, --prompt-file FILE, or "
                            "prompts on standard input (one per line)")
        prompts = [line for line in sys.stdin.read().splitlines() if line.strip()]
    if not prompts:
        raise UserError("generate: the prompts given are all empty; give at least one with "
                        "text (--prompt TEXT)")
    return prompts


class TextStream:
    """Prints a continuation as its tokens come. Text is held back while it ends in an
    incomplete UTF-8 character (byte-fallback tokens arrive a byte at a time)."""

    def __init__(self, tokenizer, prompt_ids: list[int]):
        self.tokenizer, self.prompt_ids = tokenizer, prompt_ids
        self.head = tokenizer.decode(prompt_ids)  # once, not at every token
        self.ids: list[int] = []
        self.printed = ""

    def add(self, token_id: int) -> None:
        self.ids.append(token_id)
        text = continuation_text(self.tokenizer, self.prompt_ids, self.ids, self.head)
        if not text.endswith("\ufffd"):
            self._show(text)

    def finish(self, text: str) -> None:
        self._show(text)
        print(flush=True)

    def _show(self, text: str) -> None:
        if text.startswith(self.printed):
            sys.stdout.write(text[len(self.printed):])
            sys.stdout.flush()
            self.printed = text


@contextlib.contextmanager
def quiet_stdout(quiet: bool):
    """With --json, stdout carries JSON only: what loading prints goes to stderr."""
    if not quiet:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


# -- eval -----------------------------------------------------------------------------------


def command_eval(args) -> int:
    from ..train.evaluation import evaluate
    from ..train.loop import autocast_context

    if args.batches is not None and args.batches < 1:
        raise UserError(f"--batches: must be at least 1, got {args.batches}")
    device = resolve_device(args.device)
    pm = args.plugin_manager
    with quiet_stdout(args.json):
        trained = load_trained(args.source, pm, device, args.checkpointer)
        run = evaluation_run(trained, args, device)
        source = run.config.data.source
        pm.check_selectable(source, "data source", "data.source")
        batches = pm.hook.validation_batches(source=source, run=run,
                                             count=run.config.eval.batches)
    if batches is None:
        raise UserError(f"eval: data source '{source}' offers no held-out data; give "
                        "--set data.source=NAME of one that does")
    if not batches:
        raise UserError(f"eval: data source '{source}' gave no batch from "
                        f"{args.data or 'the held-out data'}; give more text (a batch is "
                        f"{run.config.data.batch_size} sequences of {run.config.model.seq_len} "
                        "tokens)")
    bar = progress_bar(len(batches))
    loss, accuracy = evaluate(trained.model, batches, device, autocast_context(device),
                              on_batch=bar.update)
    bar.close()
    tokens = sum(batch.target_count for batch in batches)
    result = {"checkpoint": trained.checkpoint.path, "step": trained.checkpoint.step,
              "data": args.data or "held-out", "source": source, "batches": len(batches),
              "tokens": tokens, "loss": loss, "perplexity": math.exp(min(loss, 700.0)),
              "accuracy": accuracy}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"eval: {result['checkpoint']} (step {result['step']}) on {len(batches)} batches "
              f"({tokens:,} tokens) of {args.data or 'the held-out data'}: loss {loss:.4f}, "
              f"perplexity {result['perplexity']:,.2f}, accuracy {accuracy:.4f}")
    return 0


def evaluation_run(trained: TrainedModel, args, device: torch.device) -> Run:
    """The run as the checkpoint recorded it, pointed at the data to score."""
    pm = args.plugin_manager
    raw = json.loads(json.dumps(trained.checkpoint.config))  # a copy to change
    sections = declared_sections(pm)
    overrides = []
    if args.data:
        if "corpus" not in sections:
            raise UserError("--data: sets corpus.eval_path, and no installed plugin reads a "
                            "corpus section; point your data source at the data with --set")
        overrides.append(("--data", "corpus.eval_path", args.data))
    if args.batches is not None:
        overrides.append(("--batches", "eval.batches", args.batches))
    for origin, key, value in overrides:
        section, _, name = key.partition(".")
        raw.setdefault(section, {})[name] = value
    for assignment in args.assignments:
        apply_override(raw, assignment)
    source = f"{trained.checkpoint.path} (its config)" + (" with --set" if args.assignments
                                                          else "")
    try:
        config = saved_config(raw, pm, source)
    except ConfigError as e:
        for origin, key, _ in overrides:
            if e.key == key:
                raise ConfigError(e.key, e.detail, origin) from None
        raise
    return Run(config=config, output_dir=trained.folder, device=device, plugins=pm,
               tokenizer=trained.tokenizer, model=trained.model,
               run_id=trained.checkpoint.run_id)


def progress_bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="batch", desc="eval", file=sys.stderr,
                disable=not sys.stderr.isatty(), leave=False)


# -- export ---------------------------------------------------------------------------------


def command_export(args) -> int:
    pm = args.plugin_manager
    output = Path(args.output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UserError(f"--output: {output} exists and is not an empty folder; give a new "
                        "folder (nothing was written)")
    pm.check_selectable(args.format, "export format", "--format")
    trained = load_trained(args.source, pm, torch.device("cpu"), args.checkpointer)
    checkpoint = trained.checkpoint
    if checkpoint.tokenizer_model is None:  # an older record: the tokenizer found beside it
        checkpoint = dataclasses.replace(checkpoint, tokenizer_model=trained.tokenizer.model_proto)
    # Written aside and renamed when whole: a failed export leaves no half folder behind.
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
        written = pm.hook.export_model(format=args.format, checkpoint=checkpoint,
                                       output=partial, dtype=EXPORT_DTYPES[args.dtype])
        if written is None:
            raise pm.unknown_selection(args.format, "export format", "--format")
        if output.exists():
            output.rmdir()
        partial.rename(output)
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise UserError(f"--output: cannot write {output} ({e.strerror or e}); give a folder "
                        "you can write to") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    files = sorted(p.name for p in output.iterdir())
    print(f"export: {checkpoint.path} (step {checkpoint.step}) -> {output}, format "
          f"{args.format}: {written}; {', '.join(files)}")
    return 0
