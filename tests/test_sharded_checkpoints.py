"""The sharded checkpointer under torchrun (gloo, CPU): each rank writes and reads its own
share; a set resumes on another world size; a damaged shard is named and the set before it
used, on every rank; two "nodes" on 127.0.0.1; rank 0 no longer gathers the model to save.
One-process behaviour is in plugins/checkpointers/tests/test_sharded.py."""

import os
import socket
import subprocess
import sys

import pytest

from conftest import REPO, run_in_process
from test_distributed import (corpus, history, peaks_of_a_job,  # noqa: F401
                              sigterm_after_step, torchrun)

pytestmark = pytest.mark.slow  # every test here runs torchrun jobs: the slow tier


def settings_for(corpus, folder, **changes):
    settings = {"run": {"steps": 4}, "intervals": {"checkpoint": 2},
                "data": {"source": "sample", "batch_size": 2},
                "corpus": {"path": str(corpus), "shuffle_buffer": 0},
                "tokenizer": {"vocab_size": 300, "train_documents": 100},
                "checkpoint": {"checkpointer": "sharded"},
                "distributed": {"strategy": "fsdp"}, "output": {"dir": str(folder)}}
    return {**settings, **changes}


def test_a_sharded_set_resumes_on_two_one_and_four_ranks(write_config, tmp_path, corpus):
    """Saved by 2 FSDP ranks (each writing its own file, about half of the bytes); resumed
    at 2 ranks bit for bit; under DDP on 2, and at 1 and 4 ranks (each rank reading its new
    share of both files), as one process trains the same global batch, to float32's
    reduction order."""
    straight_dir = tmp_path / "straight"
    job = torchrun(write_config(settings_for(corpus, straight_dir), "straight"))
    assert job.returncode == 0, job.stderr[-3000:]
    straight = history(straight_dir)
    saved = straight_dir / "checkpoints" / "sharded_step_2"
    shares = [(saved / f"__{rank}_0.distcp").stat().st_size for rank in (0, 1)]
    assert min(shares) > 0.3 * sum(shares), shares  # each rank wrote its own part

    again = tmp_path / "again"
    job = torchrun(write_config(settings_for(corpus, again), "again"), "--resume", str(saved))
    assert job.returncode == 0, job.stderr[-3000:]
    assert [history(again)[s]["loss"] for s in (3, 4)] == \
        [straight[s]["loss"] for s in (3, 4)]

    # The FSDP set resumes under DDP too (each rank reading the whole of each tensor).
    ddp = tmp_path / "ddp"
    job = torchrun(write_config(settings_for(corpus, ddp, distributed={"strategy": "ddp"}),
                                "ddp"), "--resume", str(saved))
    assert job.returncode == 0, job.stderr[-3000:]
    assert [history(ddp)[s]["loss"] for s in (3, 4)] == pytest.approx(
        [straight[s]["loss"] for s in (3, 4)], rel=1e-5)

    alone = tmp_path / "alone"
    run_in_process(write_config(settings_for(
        corpus, alone, distributed=None, data={"source": "sample", "batch_size": 4}), "alone"),
        resume=str(saved))
    four = tmp_path / "four"
    job = torchrun(write_config(settings_for(
        corpus, four, data={"source": "sample", "batch_size": 1}), "four"),
        "--resume", str(saved), launcher=("--nproc-per-node", "4"))
    assert job.returncode == 0, job.stderr[-3000:]
    assert "saved by 2 ranks and this job has 4" in job.stderr
    for resumed in (history(alone), history(four)):
        assert sorted(resumed) == [3, 4]
        assert [resumed[s]["loss"] for s in (3, 4)] == pytest.approx(
            [straight[s]["loss"] for s in (3, 4)], rel=1e-5)


def test_a_damaged_shard_is_named_and_every_rank_takes_the_set_before(write_config,
                                                                      tmp_path, corpus):
    folder = tmp_path / "run"
    config = write_config(settings_for(corpus, folder))
    job = torchrun(config)
    assert job.returncode == 0, job.stderr[-3000:]
    straight = history(folder)
    damaged = folder / "checkpoints" / "sharded_step_4" / "__1_0.distcp"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    job = torchrun(config, "--resume", "auto", "--steps", "6")
    assert job.returncode == 0, job.stderr[-3000:]
    assert f"{damaged} fails its sha256 check (damaged); falling back" in job.stderr
    assert job.stdout.count("resume: continuing from step 2") == 2  # both ranks
    assert [history(folder)[s]["loss"] for s in (3, 4)] == \
        [straight[s]["loss"] for s in (3, 4)]


def test_two_nodes_save_and_resume_a_sharded_set(write_config, tmp_path, corpus):
    """Two torchrun "nodes" on 127.0.0.1, one rank each, static rendezvous: each node's rank
    writes its own file into the shared folder; the job resumes from it as one of
    `--standalone` does."""
    folder = tmp_path / "nodes"
    config = write_config(settings_for(corpus, folder))

    def nodes(*args):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        started = [subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank",
             str(node), "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port",
             str(port), "-m", "slimcore", "run", str(config), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env={**os.environ, "OMP_NUM_THREADS": "1"}) for node in (0, 1)]
        outcomes = [node.communicate(timeout=240) for node in started]
        for node, (_, stderr) in zip(started, outcomes):
            assert node.returncode == 0, stderr[-3000:]

    nodes()
    straight = history(folder)
    assert {p.name for p in (folder / "checkpoints" / "sharded_step_2").iterdir()} == \
        {".metadata", "__0_0.distcp", "__1_0.distcp", "record.bin"}
    standalone = tmp_path / "standalone"
    job = torchrun(write_config(settings_for(corpus, standalone), "standalone"))
    assert job.returncode == 0, job.stderr[-3000:]
    assert [history(standalone)[s]["loss"] for s in (1, 2, 3, 4)] == \
        [straight[s]["loss"] for s in (1, 2, 3, 4)]
    nodes("--resume", str(folder / "checkpoints" / "sharded_step_2"), "--overwrite")
    assert [history(folder)[s]["loss"] for s in (3, 4)] == \
        [straight[s]["loss"] for s in (3, 4)]


def test_sharded_saves_spare_rank_zero_and_a_resume_then_save_costs_no_more(
        write_config, tmp_path, corpus, monkeypatch):
    """A 14M-parameter model under FSDP saving at steps 2 and 4: with three_file rank 0
    gathers the whole model and optimizer (12 bytes a parameter) to write them; with the
    sharded checkpointer it holds only its own half, so its peak is lower by at least a
    quarter of the whole. A resume then a save peaks as the fresh run does (within 1.3x)."""
    from slimcore.config.schema import ModelSection
    from slimcore.model.gpt import parameter_count

    shape = {"width": 384, "layers": 6, "heads": 6, "mlp_hidden": 1536, "seq_len": 64}
    whole_kib = parameter_count(ModelSection(**shape), 300) * 12 / 1024
    # glibc keeps freed heap memory resident: fixed, the resident peak follows live bytes
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    peaks = {}
    for checkpointer in ("three_file", "sharded"):
        config = write_config(settings_for(
            corpus, tmp_path / checkpointer, model=shape,
            data={"source": "chunk", "batch_size": 2},
            checkpoint={"checkpointer": checkpointer, "async": False}), checkpointer)
        peaks[checkpointer] = peaks_of_a_job(config, tmp_path / f"peaks-{checkpointer}")
    resumed = peaks_of_a_job(config, tmp_path / "peaks-resumed", "--resume",
                             str(tmp_path / "sharded" / "checkpoints" / "sharded_step_2"),
                             "--overwrite")
    print(f"peak KiB per rank: {peaks}, sharded resumed then saved {resumed}")
    assert peaks["sharded"][0] < peaks["three_file"][0] - 0.25 * whole_kib, peaks
    for rank in (0, 1):
        assert resumed[rank] <= 1.3 * peaks["sharded"][rank], (rank, peaks, resumed)


def test_sigterm_to_torchrun_saves_every_ranks_share_and_resumes(write_config, tmp_path,
                                                                 installed_plugins):
    """torchrun forwards SIGTERM: every rank stops after the same step and writes its share
    of the set; `--resume auto` goes on from it."""
    config = write_config({"run": {"steps": 500}, "data": {"source": "counting"},
                           "intervals": {"checkpoint": 1000},
                           "checkpoint": {"checkpointer": "sharded"},
                           "distributed": {"strategy": "fsdp"}})
    returncode, stderr = sigterm_after_step(config, 3, installed_plugins)
    assert returncode == 1, (returncode, stderr[-3000:])  # torchrun's, documented
    sets = list((tmp_path / "out" / "checkpoints").glob("sharded_step_*"))
    assert len(sets) == 1 and {"__0_0.distcp", "__1_0.distcp"} <= \
        {p.name for p in sets[0].iterdir()}, stderr[-3000:]
    step = int(sets[0].name.rsplit("_", 1)[1])
    resumed = torchrun(config, "--resume", "auto", "--steps", str(step + 2),
                       env=installed_plugins)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count(f"resume: continuing from step {step}") == 2
