"""The native kernels against the PyTorch reference (core/model/ops.py TorchOps): the C build on
CPU tensors everywhere; the CUDA build on CUDA tensors where a GPU is present (the `cuda`
cases, skipped otherwise); the CUDA sources compiled with nvcc wherever nvcc is present.

Tolerances: float32 inputs within 1e-5 relative / 1e-5 absolute of PyTorch (the same float32
arithmetic in another order); bfloat16 inputs within 2e-2 / 2e-2 (one bf16 rounding of the
output, 8 bits of mantissa, against PyTorch's bf16 arithmetic), except where stated.
"""

import shutil
import subprocess

import pytest
import torch

from conftest import run_in_process
from slimcore import UserError
from slimcore.native import loader as native
from slimcore.model.gpt import rotary_tables
from slimcore.model.native_ops import NativeOps, cross_entropy_
from slimcore.model.ops import TorchOps

TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}
DTYPES = [torch.float32, torch.bfloat16]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here"))]


def grads(outputs, inputs, upstream):
    return torch.autograd.grad(outputs, inputs, upstream)


def leaf(*shape, dtype=torch.float32, scale=1.0, seed=0, device="cpu"):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=generator) * scale).to(device, dtype).requires_grad_()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,vocab", [(1, 7), (37, 1001), (64, 4096), (5, 32000), (5, 32003)])
def test_output_loss_matches_pytorch(rows, vocab, dtype, device):
    hidden = leaf(rows, 24, dtype=dtype, device=device)
    weight = leaf(vocab, 24, dtype=dtype, seed=1, device=device)
    targets = torch.randint(0, vocab, (rows,), generator=torch.Generator().manual_seed(2))
    targets = targets.to(device)
    if rows > 2:
        targets[1] = -100  # ignored: counts toward nothing
    reference, native_result = TorchOps.output_loss(hidden, weight, targets), \
        NativeOps.output_loss(hidden, weight, targets)
    assert torch.equal(native_result[2], reference[2])
    # Argmax ties are rare in random data; bf16 logits may round two maxima together.
    assert abs(int(native_result[1]) - int(reference[1])) <= (0 if dtype == torch.float32 else 1)
    torch.testing.assert_close(native_result[0], reference[0].float(),
                               rtol=1e-5 if dtype == torch.float32 else 2e-2, atol=1e-3)
    upstream = torch.tensor(0.37, device=device)
    # The hidden state's gradient sums over the whole vocabulary: float32 within 1e-4.
    tolerance = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else TOLERANCE[dtype]
    for got, want in zip(grads(native_result[0], (hidden, weight), upstream),
                         grads(reference[0], (hidden, weight), upstream)):
        torch.testing.assert_close(got, want, **tolerance)


@pytest.mark.parametrize("device", DEVICES)
def test_cross_entropy_counts_the_first_maximum_and_poisons_nothing(device):
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 1.0, 0.0], [0.0, 0.0, 0.0, 9.0]],
                          device=device)
    targets = torch.tensor([1, 1, -100], device=device)
    reference = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    work = logits.clone()
    loss, correct = cross_entropy_(work, targets, -100, True)
    assert int(correct) == 1  # row 0: argmax is index 1 (first of the tie); row 1: index 0
    torch.testing.assert_close(loss, reference)
    expected_grad = torch.softmax(logits, -1) - \
        torch.nn.functional.one_hot(targets.clamp(0), 4).float()
    expected_grad[2] = 0.0  # an ignored row has no gradient
    torch.testing.assert_close(work, expected_grad)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_write_every_element_of_poisoned_buffers(dtype, device):
    """Output buffers full of NaN beforehand: any element a kernel skips stays NaN."""
    ffi, lib = native.library(device)
    code = 0 if dtype == torch.float32 else 1
    rows, vocab = 9, 1003

    def on(t):
        return t.to(device)

    def call(status, name):  # the default stream (NULL), then wait for it
        native.check(status, name, device)
        if device == "cuda":
            torch.cuda.synchronize()

    logits = on(torch.randn(rows, vocab).to(dtype))
    grad = torch.full_like(logits, float("nan"))
    loss = on(torch.full((rows,), float("nan")))
    targets = on(torch.randint(0, vocab, (rows,)))
    correct = on(torch.zeros((), dtype=torch.int64))
    p = lambda t, c="void *": ffi.cast(c, t.data_ptr())  # noqa: E731
    call(lib.slimcore_cross_entropy(p(logits), p(grad), code, p(targets, "int64_t *"), rows,
                                    vocab, -100, p(loss, "float *"), p(correct, "int64_t *"),
                                    ffi.NULL), "ce")
    assert not grad.isnan().any() and not loss.isnan().any()
    x, weight = on(torch.randn(rows, 37).to(dtype)), on(torch.randn(37))
    y, rstd = torch.full_like(x, float("nan")), on(torch.full((rows,), float("nan")))
    call(lib.slimcore_rms_norm_forward(p(x), p(weight, "float *"), p(y), p(rstd, "float *"),
                                       code, rows, 37, 1e-5, ffi.NULL), "rms")
    assert not y.isnan().any() and not rstd.isnan().any()
    gate_up = on(torch.randn(rows, 2 * 11).to(dtype))
    out = on(torch.full((rows, 11), float("nan")).to(dtype))
    call(lib.slimcore_swiglu_forward(p(gate_up), p(out), code, rows, 11, ffi.NULL), "swiglu")
    assert not out.isnan().any()
    # dweight is accumulated into, as the header says: a second call doubles it.
    dy, dx, dweight = torch.randn_like(x), torch.full_like(x, float("nan")), on(torch.zeros(37))
    for _ in range(2):
        call(lib.slimcore_rms_norm_backward(p(dy), p(x), p(weight, "float *"),
                                            p(rstd, "float *"), p(dx), p(dweight, "float *"),
                                            code, rows, 37, ffi.NULL), "rms_bwd")
    assert not dx.isnan().any()
    once = (dy.float() * x.float() * rstd[:, None]).sum(0)
    torch.testing.assert_close(dweight, 2 * once, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (2, 4, 17)])
@pytest.mark.parametrize("width", [1, 33, 256, 1536])
def test_rms_norm_matches_pytorch(shape, width, dtype, device):
    x = leaf(*shape, width, dtype=dtype, scale=3.0, device=device)
    weight = leaf(width, seed=1, device=device)
    reference, got = TorchOps.rms_norm(x, weight, 1e-5), NativeOps.rms_norm(x, weight, 1e-5)
    torch.testing.assert_close(got, reference, **TOLERANCE[dtype])
    upstream = leaf(*reference.shape, seed=2).detach().to(device, dtype)
    dx, dweight = zip(grads(got, (x, weight), upstream), grads(reference, (x, weight), upstream))
    torch.testing.assert_close(*dx, **TOLERANCE[dtype])
    # dweight sums dy * x_hat over every row, in another order than PyTorch's: float32 terms
    # of about 3 lose ~1e-6 each (1.1e-5 seen over 8 rows), bf16 rounding of dy accumulates.
    torch.testing.assert_close(*dweight, **(dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32
                                            else dict(rtol=5e-2, atol=5e-2)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,heads,positions,head_dim", [(1, 1, 1, 2), (2, 3, 9, 8),
                                                            (1, 2, 33, 14), (2, 12, 64, 128)])
def test_rotary_matches_pytorch(batch, heads, positions, head_dim, dtype, device):
    cos, sin = rotary_tables(64, head_dim, 10000.0)
    cos, sin = cos[:positions].to(device), sin[:positions].to(device)
    x = leaf(batch, heads, positions, head_dim, dtype=dtype, device=device)
    reference, got = TorchOps.rotary(x, cos, sin), NativeOps.rotary(x, cos, sin)
    torch.testing.assert_close(got, reference, **TOLERANCE[dtype])
    upstream = torch.randn(reference.shape).to(device, dtype)
    torch.testing.assert_close(grads(got, x, upstream)[0], grads(reference, x, upstream)[0],
                               **TOLERANCE[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,heads,positions,head_dim", [(1, 1, 1, 2), (3, 4, 17, 8)])
def test_rotary_with_positions_per_row_matches_pytorch(batch, heads, positions, head_dim,
                                                       dtype, device):
    """data.document_mask: each row's positions restart at its documents' starts, so the
    tables are gathered per row (B, 1, T, D/2): the kernel's token-major form."""
    cos, sin = rotary_tables(64, head_dim, 10000.0)
    restart = torch.randint(0, positions, (batch, positions))
    cos, sin = (table[restart].unsqueeze(1).to(device) for table in (cos, sin))
    x = leaf(batch, heads, positions, head_dim, dtype=dtype, device=device)
    reference, got = TorchOps.rotary(x, cos, sin), NativeOps.rotary(x, cos, sin)
    torch.testing.assert_close(got, reference, **TOLERANCE[dtype])
    upstream = torch.randn(reference.shape).to(device, dtype)
    torch.testing.assert_close(grads(got, x, upstream)[0], grads(reference, x, upstream)[0],
                               **TOLERANCE[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,hidden", [(1, 1), (7, 13), (64, 300), (33, 4096)])
def test_swiglu_matches_pytorch(rows, hidden, dtype, device):
    gate_up = leaf(rows, 2 * hidden, dtype=dtype, scale=2.0, device=device)
    reference, got = TorchOps.swiglu(gate_up), NativeOps.swiglu(gate_up)
    torch.testing.assert_close(got, reference, **TOLERANCE[dtype])
    upstream = torch.randn(reference.shape).to(device, dtype)
    torch.testing.assert_close(grads(got, gate_up, upstream)[0],
                               grads(reference, gate_up, upstream)[0], **TOLERANCE[dtype])


@pytest.mark.parametrize("device", DEVICES)
def test_ops_are_well_formed_custom_ops(device):
    """Schema, fake (meta) implementations and autograd registration, as torch.compile,
    autocast and FSDP need them (torch.library.opcheck)."""
    def t(*shape):
        return torch.randn(*shape, device=device, requires_grad=True)
    cos, sin = (table.to(device) for table in rotary_tables(5, 4, 10000.0))
    cases = [
        (torch.ops.slimcore.rms_norm, (t(4, 6), t(6), 1e-5)),
        (torch.ops.slimcore.rotary, (t(2, 5, 4), cos, sin, False, False)),
        (torch.ops.slimcore.rotary, (t(5, 3, 4), cos, sin, True, True)),
        (torch.ops.slimcore.swiglu, (t(3, 8),)),
        (torch.ops.slimcore.cross_entropy_, (torch.randn(3, 10, device=device),
                                             torch.tensor([1, 2, 3], device=device), -100,
                                             True)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


def test_checks_refuse_bad_tensors_and_statuses_are_never_ignored():
    with pytest.raises(ValueError, match="contiguous"):
        torch.ops.slimcore.swiglu(torch.randn(8, 4).t())
    with pytest.raises(TypeError, match="float32 or bfloat16"):
        torch.ops.slimcore.swiglu(torch.randn(3, 4).double())
    with pytest.raises(TypeError, match="expected torch.int64"):
        cross_entropy_(torch.randn(2, 5), torch.tensor([1, 2], dtype=torch.int32), -100, False)
    ffi, lib = native.library("cpu")
    with pytest.raises(RuntimeError, match="native kernel swiglu_forward .cpu. failed: bad "
                                           "argument"):
        native.check(lib.slimcore_swiglu_forward(ffi.NULL, ffi.NULL, 0, 0, 1, ffi.NULL),
                     "swiglu_forward", "cpu")


LLAMA_SHAPE = dict(kv_heads=1, head_dim=24, tie_embeddings=True, rope_scaling="llama3",
                   rope_original_context=8)  # what a continued Llama may have


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [{}, LLAMA_SHAPE], ids=["gpt", "llama"])
def test_one_training_step_native_matches_torch(device, shape):
    """Loss and the gradient of every parameter after one step: native against torch, for
    slimcore's own shape and for a Llama one (multi-query attention, a head width apart
    from width/heads, a tied output layer, Llama 3's rotary scaling)."""
    from slimcore.config.schema import ModelSection
    from slimcore.model.gpt import GPT

    cfg = ModelSection(width=32, layers=2, heads=2, mlp_hidden=48, seq_len=16, **shape)
    torch.manual_seed(0)
    reference = GPT(cfg, 301, TorchOps).to(device)
    native_model = GPT(cfg, 301, NativeOps).to(device)
    native_model.load_state_dict(reference.state_dict())
    inputs = torch.randint(0, 301, (3, 16)).to(device)
    targets = torch.randint(0, 301, (3, 16))
    targets[0, :4] = -100
    targets = targets.to(device)
    results = []
    for model in (reference, native_model):
        loss_sum, correct, count = model(inputs, targets)
        (loss_sum / count).backward()
        results.append((loss_sum, correct, {n: p.grad for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-5)
    assert torch.equal(results[1][1], results[0][1])
    for name, grad in results[0][2].items():
        torch.testing.assert_close(results[1][2][name], grad, rtol=1e-4, atol=1e-6,
                                   msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("device", DEVICES)
def test_the_native_model_compiles_whole_without_a_graph_break(device):
    """`model.backend: native` + `model.compile: true`: what torch.compile sees of a training
    step (the model's forward, from which AOT autograd derives the backward) is one graph with
    no break, and that graph (fullgraph=True, forward and backward through AOT autograd)
    gives the eager model's loss and gradients within 1e-5."""
    from slimcore.config.schema import ModelSection
    from slimcore.model.gpt import GPT

    cfg = ModelSection(width=32, layers=1, heads=2, mlp_hidden=48, seq_len=16)
    torch.manual_seed(0)
    eager = GPT(cfg, 301, NativeOps).to(device)
    inputs = torch.randint(0, 301, (3, 16)).to(device)
    targets = torch.randint(0, 301, (3, 16)).to(device)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(eager)(inputs, targets)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), \
        [str(b.reason) for b in explained.break_reasons]

    compiled_model = GPT(cfg, 301, NativeOps).to(device)
    compiled_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_model, backend="aot_eager", fullgraph=True)
    results = []
    for model, runner in ((eager, eager), (compiled_model, compiled)):
        loss_sum, correct, count = runner(inputs, targets)
        (loss_sum / count).backward()
        results.append((loss_sum, {n: p.grad for n, p in model.named_parameters()}))
    torch._dynamo.reset()
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-5)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, rtol=1e-5, atol=1e-6,
                                   msg=lambda m, n=name: f"{n}: {m}")


def test_under_compile_the_native_backend_keeps_the_kernels_its_table_names():
    from slimcore.model.ops import NATIVE_UNDER_COMPILE, OPS, select_ops

    cpu = torch.device("cpu")
    assert select_ops("native", cpu) is NativeOps  # eager: every kernel native
    compiled = select_ops("native", cpu, compiled=True)
    assert compiled.name == "native"
    for op in OPS:
        want = NativeOps if op in NATIVE_UNDER_COMPILE["cpu"] else TorchOps
        assert getattr(compiled, op) is getattr(want, op), op
    assert select_ops("auto", cpu, compiled=True) is TorchOps  # auto on the CPU: all inductor


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_one_bf16_autocast_step_native_matches_torch_on_cuda():
    """The GPU training path: bf16 autocast. Both sides round to bf16 in different places,
    so the loss agrees within 1e-2 relative and each gradient points the same way (cosine
    similarity >= 0.99) with a norm within 5%."""
    from slimcore.config.schema import ModelSection
    from slimcore.model.gpt import GPT

    cfg = ModelSection(width=128, layers=2, heads=2, mlp_hidden=256, seq_len=64)
    torch.manual_seed(0)
    reference = GPT(cfg, 1000, TorchOps).cuda()
    native_model = GPT(cfg, 1000, NativeOps).cuda()
    native_model.load_state_dict(reference.state_dict())
    inputs = torch.randint(0, 1000, (4, 64), device="cuda")
    targets = torch.randint(0, 1000, (4, 64), device="cuda")
    results = []
    for model in (reference, native_model):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss_sum, correct, count = model(inputs, targets)
        (loss_sum / count).backward()
        results.append((loss_sum / count, {n: p.grad for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-2, atol=0)
    for name, grad in results[0][1].items():
        got = results[1][1][name].flatten().float()
        cosine = torch.nn.functional.cosine_similarity(got, grad.flatten().float(), dim=0)
        assert cosine >= 0.99, f"{name}: cosine {cosine:.4f}"
        assert abs(got.norm() / grad.float().norm() - 1) < 0.05, name


@pytest.mark.parametrize("device", DEVICES)
def test_a_run_with_the_native_backend(write_config, device):
    status, _ = run_in_process(write_config({"run": {"steps": 3, "device": device},
                                             "model": {"backend": "native"}}))
    assert status == "completed"


def test_missing_compiler_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", "no-such-cc")
    monkeypatch.setenv("SLIMCORE_CACHE_DIR", str(tmp_path))
    with pytest.raises(UserError, match="native cpu kernels need a C compiler .* 'no-such-cc' "
                                        "is not on PATH; install it, or set model.backend: torch"):
        native.build("cpu")


def test_build_native_command(cli):
    result = cli("build-native")
    assert result.returncode == 0, result.stderr
    assert "native cpu:" in result.stdout and result.stdout.strip().endswith(".so")


def test_the_header_is_the_whole_abi():
    """Every function a library's header declares is defined by its builds: the kernels' by
    the C and CUDA builds (the shared host code, the ABI revision, through the .inc file both
    include), the word table's by its own C file."""
    import re

    def inlined(name: str) -> str:
        text = (native.sources() / name).read_text()
        return re.sub(r'^#include "(slimcore_\w+\.inc)"', lambda m: inlined(m.group(1)), text,
                      flags=re.M)

    counts = {}
    for kind in ("cpu", "cuda", "words"):
        declared = set(re.findall(r"\b(slimcore_\w+)\(", native.cdef_text(kind)))
        defined = set(re.findall(r"^(?:int |int64_t |void |const char \*|slimcore_words \*)"
                                 r"(slimcore_\w+)\(", inlined(native.KINDS[kind][1]), re.M))
        assert defined == declared, kind
        counts[kind] = len(declared)
    assert counts == {"cpu": 8, "cuda": 8, "words": 6}


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed here")
def test_cuda_sources_compile_with_nvcc(monkeypatch, tmp_path):
    monkeypatch.setenv("SLIMCORE_CACHE_DIR", str(tmp_path))
    path = native.build("cuda")
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(path)], capture_output=True,
                             text=True).stdout
    for name in ("slimcore_cross_entropy", "slimcore_rms_norm_backward", "slimcore_rotary",
                 "slimcore_swiglu_backward"):
        assert name in symbols


def test_every_status_the_abi_declares_has_its_own_message():
    """A failure path returns a status, and the status says what happened (not 'unknown')."""
    import re

    ffi, lib = native.library("cpu")
    header = (native.sources() / native.HEADER_NAME).read_text()
    enum = header.split("enum slimcore_status {", 1)[1].split("};", 1)[0]
    codes = [int(value) for value in re.findall(r"SLIMCORE_\w+ = (\d+)", enum)]
    assert codes == list(range(len(codes))) and len(codes) >= 4
    messages = [ffi.string(lib.slimcore_status_string(code)).decode() for code in codes]
    assert "unknown status" not in messages and len(set(messages)) == len(codes)
    assert ffi.string(lib.slimcore_status_string(len(codes))).decode() == "unknown status"
