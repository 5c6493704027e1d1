"""Several corpora read as one, by weight (`corpus.mixture`):

    corpus:
      path: cerebras/SlimPajama-627B
      mixture:
        web:   {weight: 0.6, set_names: [RedPajamaCommonCrawl, RedPajamaC4]}
        books: {weight: 0.1, set_names: [RedPajamaBook]}
        code:  {weight: 0.3, path: /data/code/*.jsonl.zst}

Weights are shares of the tokens the source hands on. Each component is a DocumentStream of
its own (its shards, its readers, its shuffle buffer and its place). The next document comes
from the component furthest below its share of the tokens drawn so far (Megatron's blend
takes the same greedy rule over samples), so the mix never strays from the weights by more
than about one document, with no random draw to resume. A document is drawn before it is
encoded, so its tokens are estimated from its characters at its component's ratio of tokens
to characters so far, which the source reports as it encodes (`note`): code and prose, or a
tokenizer trained mostly on one component, differ by 2x or more. A component that ends
follows `corpus.mixture_exhausted`: `repeat` (its own epochs, the default) or `stop` (the
mixture ends). The position holds every component's, the ratios, and the tokens drawn since
the weights last changed: a resume with other weights keeps each component's place and
mixes by the new weights from there.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

from slimcore import UserError

from .config import MixtureComponent, settings
from .documents import DocumentStream
from .positions import counts

MAX_COMPONENTS = 256


class MixedDocuments:
    """Documents of `streams` ({name: DocumentStream}) drawn by `weights` ({name: weight},
    all above 0). `last_component` names the component of the document last handed on."""

    def __init__(self, streams: dict[str, DocumentStream], weights: dict[str, float],
                 sources: dict[str, list]):
        total = sum(weights.values())
        self.streams, self.sources = streams, sources
        self.weights = {name: weight / total for name, weight in weights.items()}
        self.drawn = dict.fromkeys(streams, 0.0)  # tokens (estimated), since these weights
        # [characters, tokens] encoded, as the source reports them: the ratio the draw
        # estimates by, and each component's share of the tokens (token_shares)
        self.measured = {name: [0, 0] for name in streams}
        self.last_component: str | None = None

    def note(self, name: str, characters: int, tokens: int) -> None:
        """The source encoded `characters` of component `name` into `tokens`."""
        self.measured[name][0] += characters
        self.measured[name][1] += tokens

    def tokens_per_character(self, name: str) -> float:
        # before the first report, about English's with a 32,000-piece vocabulary
        characters, tokens = self.measured[name]
        return (tokens + 1) / (characters + 4)

    def next_component(self) -> str:
        """The component furthest below its share; ties to the larger weight, then name."""
        total = sum(self.drawn.values())
        return max(sorted(self.streams), key=lambda name: (
            self.weights[name] * total - self.drawn[name], self.weights[name]))

    def __iter__(self) -> Iterator[str]:
        with contextlib.ExitStack() as readers:
            iterators = {}
            for name, stream in self.streams.items():
                iterators[name] = iter(stream)
                readers.callback(iterators[name].close)  # each stops its reader threads
            while True:
                name = self.next_component()
                text = next(iterators[name], None)
                if text is None:  # a component of one pass (mixture_exhausted: stop) ended
                    return
                self.drawn[name] += len(text) * self.tokens_per_character(name)
                self.last_component = name
                yield text

    def state_dict(self) -> dict[str, Any]:
        return {"components": {n: s.state_dict() for n, s in self.streams.items()},
                "drawn": dict(self.drawn), "weights": dict(self.weights),
                "measured": {name: list(pair) for name, pair in self.measured.items()},
                "sources": self.sources}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "components" not in state:
            raise UserError("--resume: the checkpoint read one corpus and this run a "
                            "corpus.mixture; resume without corpus.mixture, or start a new run")
        for name, stream in self.streams.items():
            saved = state["sources"].get(name)
            if saved is not None and saved != self.sources[name]:
                raise UserError(f"--resume: corpus.mixture.{name} reads {self.sources[name]} "
                                f"now and {saved} in the checkpoint; a component's data "
                                "cannot change in a resume (its weight can)")
            if state["components"].get(name) is not None:
                stream.load_state_dict(state["components"][name])
            if name in state["measured"]:
                self.measured[name] = counts(state["measured"][name], "the mixture's counts")
        if state["weights"] == self.weights:
            drawn = [state["drawn"].get(name, 0.0) for name in self.streams]
            if not all(isinstance(d, (int, float)) and math.isfinite(d) and d >= 0
                       for d in drawn):
                raise ValueError(f"the mixture's tokens drawn are {drawn}")
            self.drawn = dict(zip(self.streams, map(float, drawn)))


def mixture_of(run, stream_for) -> MixedDocuments | None:
    """The run's mixture, each component's stream made by `stream_for(name, component)`;
    None without corpus.mixture."""
    corpus = settings(run)
    if not corpus.mixture:
        return None
    weights = {name: c.weight for name, c in corpus.mixture.items() if c.weight > 0}
    if len(corpus.mixture) > MAX_COMPONENTS:
        raise UserError(f"corpus.mixture: {len(corpus.mixture):,} components; at most "
                        f"{MAX_COMPONENTS} (each is a stream with reader threads of its own)")
    if not weights:
        raise UserError("corpus.mixture: every component has weight 0; give at least one a "
                        "weight above 0")
    components = {name: corpus.mixture[name] for name in weights}
    sources = {name: component_source(corpus, c) for name, c in components.items()}
    streams = {name: stream_for(name, c) for name, c in components.items()}
    return MixedDocuments(streams, weights, sources)


def component_source(corpus, component: MixtureComponent) -> list:
    """[path, data_files, set_names] a component reads: what its position depends on."""
    path = component.path or corpus.path
    data_files = component.data_files if component.path else \
        (component.data_files or corpus.data_files)
    return [path, data_files, sorted(component.set_names)]


def token_shares(position: dict | None) -> dict[str, float] | None:
    """Each component's share of the tokens encoded so far, from a mixture's position (its
    `measured` counts); None for another stream's position or before any token."""
    measured = (position or {}).get("measured")
    total = sum(tokens for _, tokens in (measured or {}).values())
    return {name: tokens / total for name, (_, tokens) in measured.items()} if total else None
