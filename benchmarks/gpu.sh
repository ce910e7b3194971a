#!/usr/bin/env bash
# The GPU column: every benchmark with --device cuda, the CUDA tests, a DAVIS score and a short
# real training run. `benchmarks/report.py --gpu OUT` reads OUT/log.txt (all that this prints),
# OUT/davis-model.json and OUT/train-paper-metrics.csv; each step's own output is also kept as
# OUT/<step>.txt and OUT/<step>.err.
#
#     benchmarks/gpu.sh DATA OUT
#
# DATA holds davis2016-dev/ (any subset of its sequences, with dog) and train-videos/ (any
# videos), laid out as docs/data.md says. A step that fails or runs past STEP_TIMEOUT seconds (default
# 240) leaves its stderr in OUT/<step>.err and the script goes on. DEVICE (default cuda) lets
# the plumbing be checked on a machine without a GPU.
set -u
data=$1
out=$2
device=${DEVICE:-cuda}
limit=${STEP_TIMEOUT:-240}
py=${PYTHON:-python3}
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1

step() {
    local name=$1
    shift
    echo "== $name: $*"
    local start=$SECONDS
    timeout "$limit" "$@" >"$out/$name.txt" 2>"$out/$name.err"
    echo "== $name: exit $?, $((SECONDS - start)) s"
    cat "$out/$name.txt"
    tail -n 5 "$out/$name.err"
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
    "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    nproc | sed 's/$/ CPU cores/'
} >"$out/machine.txt"
cat "$out/machine.txt"
davis=$data/davis2016-dev
step tests "$py" -m pytest -p no:cacheprovider -q -rs tests/test_cuda.py
step bench_tracking "$py" benchmarks/bench_tracking.py --device "$device" --davis "$davis" \
    --radii 12,8,4
step bench_copy "$py" benchmarks/bench_copy.py --device "$device" --davis "$davis" \
    --radius 12 --tile 8,16 --budget 1048576,8388608,33554432
step reference_propagation "$py" benchmarks/reference_propagation.py --device "$device" \
    --davis "$davis"
step reference_propagation-fp32 "$py" benchmarks/reference_propagation.py --device "$device" \
    --davis "$davis" --set precision=fp32
step bench_train "$py" benchmarks/bench_train.py --device "$device" \
    --videos "$data/train-videos" --items 50
step davis "$py" -m colortrack -q bench davis --root "$davis" --method model \
    --device "$device" --out "$out/davis-model" --json "$out/davis-model.json"
step train "$py" -m colortrack -q train "$data/train-videos" --preset paper --device "$device" \
    --out "$out/train-run" --steps 300 --set workers=12 --set cache_short_side=256 \
    --set log_every=50 --set checkpoint_every=300 --set preview_every=300
cat "$out/train-run/metrics.csv" >"$out/train-paper-metrics.csv" 2>/dev/null
step bench_memory "$py" benchmarks/bench_memory.py --device "$device" --lengths 100,1000,5000
