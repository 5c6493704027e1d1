"""lm-evaluation-harness on the live model: `SlimcoreLM` is the harness's model interface
(loglikelihood, loglikelihood_rolling, generate_until) answered by a LikelihoodScorer, so
any of its tasks runs in the training loop and from `slimcore eval --task harness:NAME`.

The harness is an optional extra (`pip install 'slimcore[harness]'`); nothing here imports
it until a harness task is asked for. The harness sees one process: the scorer splits each
batch of requests across the job's ranks itself and hands every rank all the answers.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys

from ..config.suggest import suggest
from ..contracts.errors import UserError
from .scoring import LikelihoodScorer

INSTALL_HINT = "pip install 'slimcore[harness]' (lm-evaluation-harness)"


def require_harness(key: str):
    """The lm_eval module, or one line saying how to install it."""
    try:
        import lm_eval
    except ImportError:
        raise UserError(f"{key}: harness tasks need lm-evaluation-harness, which is not "
                        f"installed: {INSTALL_HINT}") from None
    return lm_eval


def task_manager(include_path: str | None):
    """The harness's index of tasks, with the task YAMLs of `include_path` added."""
    from lm_eval.tasks import TaskManager

    with quiet_harness():
        return TaskManager(include_path=include_path)


def check_task_names(manager, names: list[str], key: str) -> None:
    known = set(manager.all_tasks)
    for name in names:
        if name not in known:
            raise UserError(f"{key}: lm-evaluation-harness has no task '{name}'"
                            f"{suggest(name, known)}; a local task's YAML goes in the folder of "
                            "evals.harness_dir (slimcore eval: --harness-dir)")


def evaluate_harness_tasks(scorer: LikelihoodScorer, names: list[str], manager,
                           limit: int) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} from the harness's own evaluation of `names`."""
    from lm_eval import simple_evaluate

    with quiet_harness(), no_git_lookup():
        # No seeds: the harness would reseed the training's global generators.
        results = simple_evaluate(model=SlimcoreLM(scorer), tasks=names, task_manager=manager,
                                  limit=limit or None, bootstrap_iters=0, log_samples=False,
                                  random_seed=None, numpy_random_seed=None,
                                  torch_random_seed=None)
    return {name: metrics_of(results["results"].get(name, {})) for name in names}


def metrics_of(task_result: dict) -> dict[str, float]:
    """The harness's "acc,none" keys as plain metric names (a filter other than none kept
    as metric_filter); standard errors and aliases left out."""
    out = {}
    for key, value in task_result.items():
        metric, _, filtered = key.partition(",")
        if "stderr" in metric or metric in NOT_METRICS or isinstance(value, bool) \
                or not isinstance(value, (int, float)):
            continue
        out[metric if filtered in ("", "none") else f"{metric}_{filtered}"] = float(value)
    return out


NOT_METRICS = {"sample_len", "name", "alias"}


@contextlib.contextmanager
def no_git_lookup():
    """The harness records the git commit of the working folder by running `git describe`,
    which prints "fatal: not a git repository" into the training log from anywhere else;
    slimcore's record of the run is its own, so the lookup is skipped while it scores."""
    import lm_eval.evaluator as evaluator

    lookup = evaluator.get_git_commit_hash
    evaluator.get_git_commit_hash = lambda: None
    try:
        yield
    finally:
        evaluator.get_git_commit_hash = lookup


class quiet_harness:
    """The harness's INFO logging off while it works (its warnings stay)."""

    def __enter__(self):
        self.logger = logging.getLogger("lm_eval")
        self.level = self.logger.level
        self.logger.setLevel(logging.WARNING)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


@functools.cache
def _lm_class():
    from lm_eval.api.model import TemplateLM
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    class SlimcoreLM(TemplateLM):
        """The harness's model interface over a live slimcore model."""

        def __init__(self, scorer: LikelihoodScorer):
            super().__init__()
            self.scorer = scorer
            self.warned_sampling = False

        @property
        def eot_token_id(self) -> int:
            return self.scorer.tokenizer.eos_id

        @property
        def prefix_token_id(self) -> int:
            return self.scorer.tokenizer.bos_id  # documents start with BOS in training

        @property
        def max_length(self) -> int:
            return self.scorer.seq_len

        def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs):
            ids = self.scorer.tokenizer.encode(string)
            return ids if add_special_tokens is False else [self.prefix_token_id] + ids

        def tok_decode(self, ids, **kwargs) -> str:
            return self.scorer.tokenizer.decode(list(ids))

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return self.scorer.score([self.scorer.encode_pair(*r.args) for r in requests])

        def _loglikelihood_tokens(self, requests, **kwargs):
            return self.scorer.score([(context, continuation)
                                      for _, context, continuation in requests])

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            """Each text's whole log-likelihood after BOS, in windows of the model's length
            (each token predicted once, with as much context as fits)."""
            owners, pairs = [], []
            for number, request in enumerate(requests):
                windows = get_rolling_token_windows(
                    token_list=self.tok_encode(request.args[0], add_special_tokens=False),
                    prefix_token=self.prefix_token_id, max_seq_len=self.max_length,
                    context_len=1)
                for window in map(make_disjoint_window, windows):
                    owners.append(number)
                    pairs.append(window)
            totals = [0.0] * len(requests)
            for owner, (ll, _) in zip(owners, self.scorer.score(pairs)):
                totals[owner] += ll
            return totals

        def generate_until(self, requests, disable_tqdm: bool = False):
            contexts, stops, lengths = [], [], []
            for context, settings in (r.args for r in requests):
                until = settings.get("until") or []
                stops.append([until] if isinstance(until, str) else list(until))
                contexts.append(context)
                # each request's own limit (the harness's default 256), within the model's
                lengths.append(max(1, min(int(settings.get("max_gen_toks", 256)),
                                          self.max_length - 1)))
                self._note_sampling(settings)
            return self.scorer.generate_until(contexts, stops, lengths)

        def _note_sampling(self, settings: dict) -> None:
            if settings.get("do_sample") and not self.warned_sampling:
                self.warned_sampling = True
                print("slimcore: note: a harness task asks for sampled generation; the "
                      "adapter generates greedily", file=sys.stderr)

    return SlimcoreLM


def SlimcoreLM(scorer: LikelihoodScorer):
    """A harness LM over `scorer` (the class is made on first use: the harness is optional)."""
    return _lm_class()(scorer)
