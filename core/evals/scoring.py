"""What downstream tasks ask of a live model: the log-likelihood of a continuation after a
context, and greedy text up to a stop string. The built-in multiple-choice scorer
(choice_tasks.py) and the lm-evaluation-harness adapter (harness.py) both ask through here.

Text becomes ids as lm-evaluation-harness makes them for a causal model (`encode_pair`),
with BOS first as in training. Under torchrun the requests are split across ranks and every
rank gets every answer back; under FSDP each rank runs as many forwards as the others (the
blocks gather their shards in their forward, a collective), padding with a repeat.

    scorer = LikelihoodScorer(model, tokenizer, device, ranks)
    [(log_likelihood, is_greedy)] = scorer.score([scorer.encode_pair("The sky is", " blue")])
"""

from __future__ import annotations

import contextlib
import torch

from ..model.device import autocast_context
from ..model.generation import SamplingSettings, generate
from ..train.distributed import Distributed

TokenPair = tuple[list[int], list[int]]  # (context ids, continuation ids)


class LikelihoodScorer:
    def __init__(self, model: torch.nn.Module, tokenizer, device: torch.device,
                 ranks: Distributed | None = None, batch_size: int = 16):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.ranks = ranks or Distributed()
        self.batch_size = batch_size
        self.seq_len = model.cfg.seq_len

    # -- text to ids ------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """BOS, then the text's ids."""
        return [self.tokenizer.bos_id] + self.tokenizer.encode(text)

    def encode_pair(self, context: str, continuation: str) -> TokenPair:
        """lm-evaluation-harness's rule: the context's trailing spaces move to the
        continuation, the whole text is encoded, and the continuation is what follows the
        context's own ids (so a word split across the join is scored as the model sees it)."""
        if not context:
            return [self.tokenizer.bos_id], self.tokenizer.encode(continuation)
        stripped = context.rstrip()
        continuation = context[len(stripped):] + continuation
        whole, head = self.encode(stripped + continuation), self.encode(stripped)
        return head, whole[len(head):]

    # -- scoring ----------------------------------------------------------------------------

    @torch.no_grad()
    def score(self, pairs: list[TokenPair]) -> list[tuple[float, bool]]:
        """(summed log-likelihood of the continuation, whether greedy decoding would give
        exactly it) per pair. The model sees the newest `seq_len` ids of context +
        continuation."""
        # Longest first, so a batch's rows are of about one length (little padding).
        order = sorted(range(len(pairs)), key=lambda i: -sum(map(len, pairs[i])))
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        mine, sharded = [], self.ranks.active and self.ranks.strategy == "fsdp"
        with self._model_for_scoring():
            for index in self._my_share(len(batches)):
                if index is None and not sharded:
                    continue  # this rank's share is done; no collective in a replica's forward
                rows = batches[0 if index is None else index]  # None: a repeat to match FSDP
                results = self._score_rows([pairs[i] for i in rows])
                if index is not None:
                    mine.extend(zip(rows, results))
        return self._gathered(mine, len(pairs), "scoring task requests")

    def _score_rows(self, rows: list[TokenPair]) -> list[tuple[float, bool]]:
        """One forward over right-padded rows; the output layer and softmax only at the
        continuations' positions (a (rows, positions, vocabulary) tensor of log-probabilities
        would be gigabytes at a real context and vocabulary)."""
        windows = [(context + continuation)[-(self.seq_len + 1):] for context, continuation
                   in rows]
        inputs = torch.zeros((len(rows), max(len(w) for w in windows) - 1), dtype=torch.long)
        wanted, where = [], []  # each row's continuation ids, and the positions predicting them
        for row, (window, (_, continuation)) in enumerate(zip(windows, rows)):
            end = len(window) - 1
            inputs[row, :end] = torch.tensor(window[:-1])
            wanted.append(continuation[-end:])  # a continuation longer than the model sees
            where.extend((row, position) for position in range(end - len(wanted[-1]), end))
        if not where:  # only empty continuations: nothing to score
            return [(0.0, True)] * len(rows)
        row_index, position_index = torch.tensor(where).T.to(self.device)
        with autocast_context(self.device):
            hidden = self.model.hidden_states(inputs.to(self.device))[row_index, position_index]
            log_probs = torch.log_softmax(self.model.head(hidden).float(), dim=-1).cpu()
        out, start = [], 0
        for ids in wanted:
            picked, target = log_probs[start:start + len(ids)], torch.tensor(ids)
            start += len(ids)
            out.append((float(picked.gather(1, target[:, None]).sum()),
                        bool((picked.argmax(-1) == target).all())))
        return out

    # -- generation -------------------------------------------------------------------------

    def generate_until(self, contexts: list[str], until: list[list[str]],
                       max_new_tokens: list[int]) -> list[str]:
        """Greedy text after each context, at most its `max_new_tokens`, cut before the
        first of its stop strings. Every rank generates every request under FSDP (the number
        of forwards follows the text); otherwise each rank its share."""
        sharded = self.ranks.active and self.ranks.strategy == "fsdp"
        share = range(len(contexts)) if sharded else self._my_share(len(contexts))
        mine = []
        with self._model_for_scoring():
            for index in share:
                if index is not None:
                    settings = SamplingSettings(max_new_tokens=max_new_tokens[index],
                                                temperature=0.0, stop_id=self.tokenizer.eos_id)
                    mine.append((index, self._generate_one(contexts[index], until[index],
                                                           settings)))
        return [text for _, text in sorted(mine)] if sharded else \
            self._gathered(mine, len(contexts), "generating task answers")

    def _generate_one(self, context: str, stops: list[str], settings) -> str:
        """The new ids decoded alone, as the harness's `hf` model decodes them (SentencePiece
        drops the space a text starts with), so a task scores alike on both."""
        room = max(1, self.seq_len - settings.max_new_tokens)
        prompt = self.encode(context)[-room:]

        def stop_when(new_ids: list[int]) -> bool:
            text = self.tokenizer.decode(new_ids)
            return any(s in text for s in stops)

        new_ids = generate(self.model, prompt, settings, stop_when=stop_when if stops else None)
        return cut_at_stops(self.tokenizer.decode(new_ids), stops)

    # -- ranks ------------------------------------------------------------------------------

    def _my_share(self, count: int):
        """Indices of this rank's share of `count` items, round by round; None in a round
        where this rank has none left but the others do (a forward to match theirs)."""
        world, rank = self.ranks.world_size, self.ranks.rank
        for start in range(0, count, world):
            index = start + rank
            yield index if index < count else None

    def _gathered(self, mine: list[tuple[int, object]], count: int, what: str) -> list:
        """Every rank's (index, result) pairs, in order, on every rank."""
        if self.ranks.active:
            mine = [pair for share in self.ranks.share(mine, what) for pair in share]
        results = dict(mine)
        return [results[i] for i in range(count)]

    @contextlib.contextmanager
    def _model_for_scoring(self):
        """The model in eval mode, its root parameters whole under FSDP."""
        was_training = self.model.training
        self.model.eval()
        try:
            with self.ranks.unsharded(self.model):
                yield
        finally:
            self.model.train(was_training)


def cut_at_stops(text: str, stops: list[str]) -> str:
    """`text` up to the first occurrence of any stop string."""
    cut = min((text.find(s) for s in stops if s and s in text), default=len(text))
    return text[:cut]

