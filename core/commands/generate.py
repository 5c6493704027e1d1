"""`slimcore generate SOURCE`: continue prompts with a trained model, streaming the text as it
is generated (or one JSON record per prompt).

    slimcore generate runs/quickstart --prompt "The state of the Union is" --temperature 0
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path

import torch

from ..config.schema import RunSection
from ..contracts.errors import UserError
from ..model.device import resolve_device
from ..model.generation import SamplingSettings, continuation_text, generate
from ..text.clean import clean_text, clean_texts
from .arguments import setting_flag
from .trained import CHECKPOINTER_HELP, SOURCE_HELP, load_trained


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    gen = sub.add_parser("generate", parents=[common], help="continue prompts with a checkpoint",
                         description="Continue each prompt with the model of SOURCE, streaming "
                                     "the text to stdout as it is generated.")
    gen.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    gen.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                     help="a prompt (repeatable); without --prompt or --prompt-file, one "
                          "prompt per line of standard input")
    gen.add_argument("--prompt-file", metavar="FILE", help="one prompt per line")
    sampling = functools.partial(setting_flag, SamplingSettings)
    gen.add_argument("--max-new-tokens", type=sampling("max_new_tokens"), default=128,
                     metavar="N", help="tokens to generate per prompt (default 128)")
    gen.add_argument("--temperature", type=sampling("temperature"), default=0.8, metavar="T",
                     help="0: greedy; higher: more varied (default 0.8)")
    gen.add_argument("--top-k", type=sampling("top_k"), default=50, metavar="K",
                     help="sample among the K most likely tokens; 0: all (default 50)")
    gen.add_argument("--top-p", type=sampling("top_p"), default=1.0, metavar="P",
                     help="sample among the most likely tokens holding mass P; 1: all "
                          "(default 1)")
    gen.add_argument("--seed", type=setting_flag(RunSection, "seed"), default=0,
                     help="seed of the sampling (default 0)")
    gen.add_argument("--ignore-eos", action="store_true",
                     help="go on past the end-of-document token instead of stopping there")
    gen.add_argument("--no-cache", action="store_true",
                     help="recompute the whole context for every token (slow; for checks)")
    gen.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    gen.add_argument("--json", action="store_true",
                     help="print one JSON record per prompt instead of streaming text")
    gen.add_argument("--checkpointer", metavar="NAME", help=CHECKPOINTER_HELP)
    gen.set_defaults(handler=command_generate)


def command_generate(args) -> int:
    settings = SamplingSettings(max_new_tokens=args.max_new_tokens,
                                temperature=args.temperature, top_k=args.top_k,
                                top_p=args.top_p)
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
    # A command line's bytes that are not UTF-8 arrive as lone surrogates: cleaned here, so
    # printing the prompt back cannot fail either.
    prompts = clean_texts(list(args.prompt))
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
        text = _read_stdin()
        prompts = [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise UserError("generate: the prompts given are all empty; give at least one with "
                        "text (--prompt TEXT)")
    return prompts


def _read_stdin() -> str:
    """Standard input as text; what is not UTF-8 becomes U+FFFD (a strict read raised). The
    bytes are decoded here when there are bytes (a text-only stand-in, as a caller embedding
    `main` may set, is cleaned instead)."""
    raw = getattr(sys.stdin, "buffer", None)
    if raw is None:
        return clean_text(sys.stdin.read())
    return raw.read().decode("utf-8", errors="replace")


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


