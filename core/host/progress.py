"""Built-in plugin `progress`: the console view of a run.

A tqdm bar (step, loss, accuracy, tokens/s, ETA) when stdout is a terminal of known width;
plain log lines every `intervals.log` steps otherwise (a pipe, a file, a terminal that
reports 0 columns), so CI logs and `nohup` files stay readable. The bar appears with the
first step, below what the run printed while starting (the data source's lines); samples
and evaluations are printed above it. Turn it off like any plugin: `-p no:progress`.
"""

from __future__ import annotations

import os
import sys
import time

from .hookspecs import hookimpl

SAMPLE_CHARS = 120  # of a text sample on the console


class ConsoleProgress:
    def __init__(self):
        self.bar = None
        self.started = 0.0
        self.first_step = 0
        self.last = None

    @hookimpl(trylast=True)
    def on_run_start(self, run):
        self.started = time.perf_counter()
        self.total = run.config.run.steps
        self.log_every = max(1, run.config.intervals.log)
        self.use_bar = terminal_width() > 0

    @hookimpl(trylast=True)
    def on_metrics(self, metrics, run):
        if self.last is None:
            self.first_step = metrics.step - 1
            if self.use_bar:  # now: start-up lines (the data source's) came before it
                from tqdm import tqdm

                self.bar = tqdm(total=self.total, initial=self.first_step, unit="step",
                                dynamic_ncols=True, file=sys.stdout)
        self.last = metrics
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"loss {metrics.loss:.3f} acc {percent(metrics.accuracy)} "
                                     f"{metrics.tokens_per_second:,.0f} tok/s", refresh=False)
        elif (metrics.step % self.log_every == 0 or metrics.step == self.total
              or metrics.eval_loss is not None):
            elapsed = time.perf_counter() - self.started
            done = metrics.step - self.first_step
            eta = elapsed / done * (self.total - metrics.step)
            print(f"step {metrics.step}/{self.total} loss {metrics.loss:.4f} "
                  f"acc {percent(metrics.accuracy)}{evaluation(metrics)} "
                  f"lr {metrics.learning_rate:.2e} {metrics.tokens_per_second:,.0f} tok/s "
                  f"eta {eta:.0f}s", flush=True)
        if self.bar is not None and metrics.eval_loss is not None:
            self.bar.write(f"step {metrics.step}:{evaluation(metrics)}")

    @hookimpl(trylast=True)
    def on_text_samples(self, step, samples, run):
        for sample in samples:
            line = f"sample @ {step}: {sample.prompt!r} -> {shortened(sample.text)!r}"
            if self.bar is not None:
                self.bar.write(line)  # above the bar, which is drawn again below
            else:
                print(line, flush=True)

    @hookimpl(trylast=True)
    def on_run_end(self, run, status, error):
        if self.bar is not None:
            self.bar.close()
        if self.last is not None:
            elapsed = time.perf_counter() - self.started
            print(f"run {status} at step {self.last.step}: loss {self.last.loss:.4f}, "
                  f"accuracy {percent(self.last.accuracy)}, {elapsed:.0f}s; outputs in "
                  f"{run.output_dir}", flush=True)


def terminal_width() -> int:
    """Columns of the terminal stdout is, or 0: not a terminal, or one that does not say
    (some report 0 columns: a bar would then draw nothing at all)."""
    if not sys.stdout.isatty():
        return 0
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except OSError:
        return 0


def evaluation(metrics) -> str:
    if metrics.eval_loss is None:
        return ""
    return f" eval_loss {metrics.eval_loss:.4f} eval_acc {percent(metrics.eval_accuracy)}"


def percent(fraction: float) -> str:
    """Accuracy as the charts show it: a percentage."""
    return f"{100 * fraction:.1f}%"


def shortened(text: str, limit: int = SAMPLE_CHARS) -> str:
    """At most `limit` characters, cut at a word's end, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[:cut if cut > limit // 2 else limit].rstrip() + "\u2026"
