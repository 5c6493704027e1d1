"""corpus.mixture: components drawn by weight, their shares measured, a resume exact
mid-mixture, weights of 0, a component that runs out."""

import json

import pytest
import torch
import zstandard

from slimcore import UserError
from slimcore.config.schema import TokenizerSection
from slimcore.testing import make_run as run_for
from slimcore.text.tokenizer import train_or_reuse
from slimcore_datasources.chunk import ChunkSource
from slimcore_datasources.corpus import heldout_documents, training_documents
from slimcore_datasources.mixture import MixedDocuments
from slimcore_datasources.sample import SampleSource

WORDS = {"web": "the web says hello and more", "book": "a long chapter of a novel goes on",
         "code": "def main return value"}


def documents(kind, count, start=0):
    # lengths vary (1 to 12 repeats), so shares by characters differ from shares by count
    return [f"{kind} {i}: " + " ".join([WORDS[kind]] * (i % 12 + 1))
            for i in range(start, start + count)]


def write_corpus(folder, kind, shards=3, per_shard=20, set_name=None):
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        lines = [json.dumps({"text": text, "meta": {"redpajama_set_name": set_name or kind}})
                 for text in documents(kind, per_shard, s * per_shard)]
        (folder / f"{kind}_{s}.jsonl.zst").write_bytes(
            zstandard.ZstdCompressor().compress("\n".join(lines).encode()))
    return folder


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    return {kind: write_corpus(root / kind, kind) for kind in WORDS}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = [t for kind in WORDS for t in documents(kind, 30)]
    return train_or_reuse(TokenizerSection(vocab_size=320,
                                           cache_dir=str(tmp_path_factory.mktemp("tok"))),
                          texts, log=lambda _: None)


def make_run(tokenizer, mixture, exhausted="repeat", eval_interval=0, batch_size=2,
             seq_len=15, shuffle_buffer=4):
    raw = {"model": {"width": 16, "heads": 2, "seq_len": seq_len},
           "data": {"batch_size": batch_size}, "eval": {"interval": eval_interval},
           "corpus": {"path": "unused-unless-a-component-omits-its-own",
                      "shuffle_buffer": shuffle_buffer, "mixture": mixture,
                      "mixture_exhausted": exhausted},
           "chunk": {"tokens_per_chunk": 64}}
    return run_for(raw, tokenizer=tokenizer)


def component(path, weight, **more):
    return {"path": str(path), "weight": weight, **more}


def drawn(stream, count):
    """(component, text) of the first `count` documents."""
    out = []
    for text in stream:
        out.append((stream.last_component, text))
        if len(out) == count:
            break
    return out


def test_components_are_drawn_by_weight_of_their_text(tokenizer, corpora):
    """Weights 3 : 1 : 0: at every point, each component's characters are within one
    document of its share (the greedy rule); a weight of 0 is never read, even where its
    path does not exist."""
    run = make_run(tokenizer, {"web": component(corpora["web"], 3),
                               "book": component(corpora["book"], 1),
                               "none": component("/no/such/corpus", 0)})
    stream = training_documents(run)
    assert isinstance(stream, MixedDocuments) and set(stream.streams) == {"web", "book"}
    chars = {"web": 0, "book": 0}
    longest = 0
    for name, text in drawn(stream, 300):
        assert text.startswith(name)  # each document comes from the component named
        chars[name] += len(text)
        longest = max(longest, len(text))
        total = sum(chars.values())
        assert abs(chars["web"] - 0.75 * total) <= longest
    assert abs(chars["web"] / sum(chars.values()) - 0.75) < 0.01


def test_set_names_of_one_corpus_are_components(tokenizer, tmp_path):
    """SlimPajama's case: the components are set names within one corpus's shards."""
    shared = tmp_path / "shared"
    write_corpus(shared, "web", set_name="RedPajamaCommonCrawl")
    write_corpus(shared, "book", set_name="RedPajamaBook")
    run = make_run(tokenizer, {"cc": {"set_names": ["RedPajamaCommonCrawl"], "weight": 1},
                               "books": {"set_names": ["RedPajamaBook"], "weight": 1}})
    run.config.section("corpus").path = str(shared)
    seen = drawn(training_documents(run), 60)
    assert {name for name, _ in seen} == {"cc", "books"}
    assert all(text.startswith("web" if name == "cc" else "book") for name, text in seen)


def test_the_chunk_source_reports_each_components_share_of_the_tokens(tokenizer, corpora):
    run = make_run(tokenizer, {"web": component(corpora["web"], 1),
                               "code": component(corpora["code"], 1)})
    source = ChunkSource(run)
    assert source.data_shares() is None  # nothing drawn yet
    for _ in range(60):
        next(source)
    shares = source.data_shares()
    tokens = {name: count for name, (_, count)
              in source.state_dict()["documents"]["measured"].items()}
    source.close()
    assert set(shares) == {"web", "code"} and sum(shares.values()) == pytest.approx(1)
    assert shares["web"] == pytest.approx(tokens["web"] / sum(tokens.values()))
    # equal shares of the text; code's words are fewer tokens a character, so its token
    # share is below a half, but not far
    assert 0.3 < shares["code"] < 0.6


@pytest.mark.parametrize("kind", ["chunk", "sample"])
def test_a_resume_mid_mixture_continues_exactly(tokenizer, corpora, kind):
    from test_sources import through_checkpoint_format

    source_class = {"chunk": ChunkSource, "sample": SampleSource}[kind]
    run = make_run(tokenizer, {"web": component(corpora["web"], 2),
                               "book": component(corpora["book"], 1),
                               "code": component(corpora["code"], 1)})
    straight = source_class(run)
    reference = [next(straight) for _ in range(90)]
    straight.close()
    for n in (3, 41):  # within the first pass of every component, and past it
        first = source_class(run)
        for _ in range(n):
            next(first)
        state = through_checkpoint_format(first.state_dict())
        shares = first.data_shares()
        first.close()
        resumed = source_class(run)
        resumed.load_state_dict(state)
        assert resumed.data_shares() == shares
        for expected in reference[n:n + 30]:
            assert torch.equal(next(resumed).inputs, expected.inputs)
        resumed.close()


def test_new_weights_at_a_resume_mix_from_there_and_new_data_is_refused(tokenizer, corpora):
    run = make_run(tokenizer, {"web": component(corpora["web"], 1),
                               "book": component(corpora["book"], 1)})
    web_alone = [t for n, t in drawn(training_documents(run), 200) if n == "web"]
    first = training_documents(run)
    head = drawn(first, 30)
    state = json.loads(json.dumps(first.state_dict()))
    # book's weight up 9x: from the resume on, book takes about 90% of the text
    run = make_run(tokenizer, {"web": component(corpora["web"], 1),
                               "book": component(corpora["book"], 9)})
    again = training_documents(run)
    again.load_state_dict(state)
    after = drawn(again, 100)
    book = sum(len(t) for n, t in after if n == "book") / sum(len(t) for _, t in after)
    assert 0.85 < book < 0.95
    # each component goes on where it was: web's documents continue its own sequence
    web = [t for n, t in head + after if n == "web"]
    assert web == web_alone[:len(web)]
    moved = make_run(tokenizer, {"web": component(corpora["code"], 1),
                                 "book": component(corpora["book"], 1)})
    with pytest.raises(UserError, match="corpus.mixture.web reads .* now and .* in the "
                                        "checkpoint; a component's data cannot change"):
        training_documents(moved).load_state_dict(state)


def test_a_component_that_runs_out_repeats_or_stops(tokenizer, corpora, tmp_path):
    small = write_corpus(tmp_path / "small", "code", shards=1, per_shard=5)
    mixture = {"web": component(corpora["web"], 1), "code": component(small, 1)}
    repeated = drawn(training_documents(make_run(tokenizer, mixture)), 200)
    code = [t for n, t in repeated if n == "code"]
    assert len(code) > 5 and len(set(code)) == 5  # its own epochs
    stopped = list(training_documents(make_run(tokenizer, mixture, exhausted="stop")))
    assert sum(1 for t in stopped if t.startswith("code")) == 5
    assert len(stopped) < 40  # the mixture ended with its smallest component


def test_held_out_documents_mix_each_components_last_shard(tokenizer, corpora):
    run = make_run(tokenizer, {"web": component(corpora["web"], 1),
                               "book": component(corpora["book"], 1)}, eval_interval=5)
    held = list(heldout_documents(run))
    trained = {t for _, t in drawn(training_documents(run), 150)}
    assert {t.split()[0] for t in held} == {"web", "book"}
    # the last shard of each (documents 40 to 59) is held out, and never trained on
    assert all(int(t.split(":")[0].split()[1]) >= 40 for t in held)
    assert not set(held) & trained


def test_bad_mixtures_are_one_line(tokenizer, corpora):
    with pytest.raises(UserError, match="corpus.mixture: every component has weight 0"):
        training_documents(make_run(tokenizer, {"web": component(corpora["web"], 0)}))
    with pytest.raises(UserError, match="corpus.mixture.web.weight: must be at least 0"):
        make_run(tokenizer, {"web": component(corpora["web"], -1)})
    with pytest.raises(UserError, match="corpus.mixture.web.wieght: unknown key .did you "
                                        "mean 'weight'"):
        make_run(tokenizer, {"web": {"path": str(corpora["web"]), "wieght": 1}})
    many = {f"c{i}": component(corpora["web"], 1) for i in range(1000)}
    with pytest.raises(UserError, match="corpus.mixture: 1,000 components; at most 256"):
        training_documents(make_run(tokenizer, many))
    with pytest.raises(UserError, match="corpus.mixture.web.path: .*/nowhere"):
        list(training_documents(make_run(tokenizer, {"web": component("/nowhere", 1)})))


def test_a_mixed_run_resumes_exactly_and_shows_its_mix(write_config, corpora, tmp_path):
    """A 6-step run of a 2 : 1 mixture saved at step 3 and resumed: steps 4 to 6 as the
    straight run's, bit for bit, with the same shares; every step's `data_shares` in the
    history, drawn by the `mixture` chart, `data/share/NAME` for the trackers; each
    component's held-out loss at the evaluation step."""
    from conftest import run_cli, run_in_process, steps_of
    from slimcore import ChartData, installed_charts
    from slimcore.testing import draw_chart
    from slimcore_visualizers.tracker_thread import scalars

    settings = {"run": {"steps": 6}, "intervals": {"checkpoint": 3}, "eval": {"interval": 6},
                "tokenizer": {"vocab_size": 320},
                "corpus": {"mixture": {"web": component(corpora["web"], 2),
                                       "book": component(corpora["book"], 1)}},
                }

    def history(name, resume=None):
        folder = tmp_path / name
        config = write_config({**settings, "output": {"dir": str(folder)}}, name)
        status, _ = run_in_process(config, resume=resume, disabled=("tensorboard",))
        assert status == "completed"
        return steps_of(folder)

    straight = history("straight")
    again = history("again", resume=str(tmp_path / "straight" / "checkpoints" /
                                        "checkpoint_step_3.bin"))
    assert [again[s]["loss"] for s in (4, 5, 6)] == [straight[s]["loss"] for s in (4, 5, 6)]
    assert [again[s]["data_shares"] for s in (4, 5, 6)] == \
        [straight[s]["data_shares"] for s in (4, 5, 6)]
    shares = straight[6]["data_shares"]
    assert set(shares) == {"web", "book"} and sum(shares.values()) == pytest.approx(1)
    assert 0.55 < shares["web"] < 0.8  # 2/3 of the text; tokens a character differ a little
    assert scalars(straight[6])["data/share/book"] == shares["book"]
    # the held-out loss of each component at the evaluation step, beside the whole's
    losses = straight[6]["eval_component_losses"]
    assert set(losses) == {"web", "book"} and straight[5]["eval_component_losses"] is None
    assert all(0 < loss < 10 for loss in losses.values()) and losses["web"] != losses["book"]
    assert again[6]["eval_component_losses"] == losses
    assert scalars(straight[6])["eval/loss/web"] == losses["web"]
    # `slimcore eval` of the run reports the same losses
    scored = run_cli("eval", str(tmp_path / "straight"), "--json")
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert json.loads(scored.stdout)["components"] == pytest.approx(losses, rel=1e-5)
    chart = installed_charts({"mixture"})[0]
    data = ChartData(metrics=[straight[s] for s in sorted(straight)])
    assert draw_chart(chart, data, tmp_path / "mixture.png").stat().st_size > 0
