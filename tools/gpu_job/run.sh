#!/usr/bin/env bash
# The whole GPU job in one device call (docs/training.md, "Training on a GPU server"):
#
#   bash tools/gpu_job/run.sh .gpu          # device call: carry [".gpu"], timeout_s 600
#
# .gpu is the folder tools/gpu_job/stage.py wrote (wheels.tar.xz, data.tar, STAGE.json). In order, each step
# timestamped: python -V and the machine; offline install of the staged wheels for this Python into $JOB_WORK/site
# (pip --no-index --no-deps --target, on PYTHONPATH: the machine's own JAX stays in use); versions; KERAS_BACKEND=jax;
# a tiny smoke train on synthetic photographs; the throughput bench at 512 px; a training run on the staged data
# sized to the wall-clock time left; results packed into $OUT (files < 16 MiB, MANIFEST.sha256). A folder staged
# with --job bench runs a smoke bench and the bench at 256 and 512 px instead, with all the time. Then, here:
#   python tools/gpu_job/jobtool.py unpack <files_at> --run-dir runs/<name>
#
# Environment (all optional): JOB_SECONDS whole-job wall-clock budget (default 540; the call allows 600),
# PYTHON (python3), JOB_WORK (/tmp/gpu_job), BENCH_ARGS, TRAIN_ARGS (replace the defaults below), PACK_SECONDS
# (time kept for packing, 40), OUT (set by the device tool; default ./gpu_job_out).
set -uo pipefail
STAGE=${1:-.gpu}
OUT=${OUT:-$PWD/gpu_job_out}
BUDGET=${JOB_SECONDS:-540}
PY=${PYTHON:-python3}
W=${JOB_WORK:-/tmp/gpu_job}
KEEP=${PACK_SECONDS:-40}
CORES=$(nproc)
TRAIN_ARGS=${TRAIN_ARGS:---preset paper --set name=gpu_paper_s256 --set input_size=256 --set data.workers=$CORES}
T0=$SECONDS
mkdir -p "$OUT" && rm -rf "$W" && mkdir -p "$W" || { echo "cannot create $OUT and $W"; exit 2; }
exec > >(tee "$OUT/job.log") 2>&1
left() { echo $((BUDGET - (SECONDS - T0))); }
step() { echo "=== [$((SECONDS - T0)) s, $(left) s left] $*"; }
pack() {
    step "pack results into $OUT"
    cp "$STAGE/STAGE.json" "$W/" 2>/dev/null
    "$PY" tools/gpu_job/jobtool.py pack "$W" "$OUT" || echo "packing failed: only job.log comes back"
    step "done"
    sleep 1  # let tee flush job.log
}

step "machine"
"$PY" -V
echo "cores: $CORES  host: $(uname -srm)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: none"
[ -f "$STAGE/STAGE.json" ] || { echo "error: $STAGE holds no STAGE.json; run tools/gpu_job/stage.py --out $STAGE first"; exit 2; }
JOB=$("$PY" -c "import json, sys; print(json.load(open(sys.argv[1])).get('job', 'train'))" "$STAGE/STAGE.json")
# train: the bench at 512 px in a third of the time left, then training; bench: the bench alone, at 256 and 512 px.
if [ "$JOB" = bench ]; then SIZES="256 512"; else SIZES=512; fi
BENCH_ARGS=${BENCH_ARGS:---sizes $SIZES --width 1.0 --batch 64 --steps 20 --warmup 2 --rounds 1 --workers $CORES}
echo "job: $JOB (staged at commit $("$PY" -c "import json, sys; print(json.load(open(sys.argv[1]))['commit'])" \
    "$STAGE/STAGE.json"))"

step "offline install of the staged wheels"
"$PY" tools/gpu_job/jobtool.py install "$STAGE" --work "$W" || { echo "install failed: see the sentence above"; exit 2; }
export PYTHONPATH="$W/site${PYTHONPATH:+:$PYTHONPATH}" KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2

step "versions"
"$PY" tools/gpu_job/jobtool.py versions --out "$W/versions.json"

if [ "$JOB" = train ]; then
    step "smoke train (tiny preset, synthetic photographs)"
    if ! { "$PY" -m trainer synth --kaggle "$W/synth" -n 8 --size 224 &&
           timeout 300 "$PY" -m trainer train --preset tiny --set "data.path=$W/synth" --run-dir "$W/smoke"; }; then
        echo "error: the smoke run failed (above); no bench or training"
        pack; exit 3
    fi
    BENCH_S=$(( $(left) / 3 ))
else
    step "smoke bench (tiny network, 64 px)"
    if ! timeout 300 "$PY" bench/bench_train.py --sizes 64 --width 0.0625 --batch 4 --steps 2 --warmup 1 --rounds 1 \
            --workers 1; then
        echo "error: the smoke bench failed (above); no bench"
        pack; exit 3
    fi
    BENCH_S=$(( $(left) - KEEP ))
fi

step "throughput bench: bench/bench_train.py $BENCH_ARGS (at most $BENCH_S s)"
# shellcheck disable=SC2086
timeout -k 10 "$BENCH_S" "$PY" bench/bench_train.py $BENCH_ARGS 2>&1 | tee "$W/bench.txt"
[ "${PIPESTATUS[0]}" = 0 ] || echo "bench stopped (exit ${PIPESTATUS[0]}; limit $BENCH_S s); the job goes on"

if [ "$JOB" = train ] && [ -f "$STAGE/data.tar" ]; then
    step "data"
    "$PY" tools/gpu_job/jobtool.py data "$STAGE" "$W/data" && cp "$W/data/DATA.json" "$W/"
    TRAIN_S=$(( $(left) - KEEP ))
    if [ "$TRAIN_S" -ge 60 ]; then
        BUDGET_MIN=$(awk "BEGIN { printf \"%.2f\", ($TRAIN_S - 30) / 60 }")
        step "train: $TRAIN_ARGS, time_budget_minutes=$BUDGET_MIN, hard stop after $TRAIN_S s"
        # shellcheck disable=SC2086
        timeout -s INT -k 20 "$TRAIN_S" "$PY" -m trainer train $TRAIN_ARGS --set "data.path=$W/data" \
            --set "time_budget_minutes=$BUDGET_MIN" --run-dir "$W/run" 2>&1 | tee "$W/train.log"
        echo "train exit ${PIPESTATUS[0]} (124/130 = stopped at the hard limit; the last finished epoch's files stand)"
    else
        echo "only $TRAIN_S s left before packing: no training run"
    fi
elif [ "$JOB" = train ]; then
    echo "no training run: no data.tar staged"
fi
pack
