#!/usr/bin/env bash
# The CUDA checks of a lent GPU machine, each under its own time limit:
#   1. the CUDA tests (projector, trainer precision/compile/checkpoints);
#   2. bench/train_speed.py at 128^3: steps/s of fast and paper in fp32, tf32, bf16 (+ compiled fp32);
#   3. bench/recon_quality.py at 128^3 x 100 (nanorod), fast and paper, each in its fastest setting;
#   4. one-GPU data-parallel training (torchrun, NCCL) of a 32^3 session through `recon train`;
#   5. bench/recon_quality.py at 64^3 x 100, fast, nanoshell and nanorod: what many GPU steps give.
# Phases: all (1-5, in that order), quick (1 and 2, ~3 min), quality (3, then 1, then 2: time to SSIM 0.95
# at 128^3 first, for a 15-minute lease), paper (1, 4 eager, then 3 with paper first and evaluations every
# 3000 steps: one command of ~9 minutes, for a lease whose speed table is already known).
# DEVICE=cpu (default cuda) runs the same commands on the CPU: a dry run of the script at small sizes.
# SET_PAPER=FIELD=VALUE changes one setting of the paper preset in step 3 (e.g. upsample=nearest, the
# variant that first beat SIRT at 32^3 on the CPU: the run the next lease should make).
# Without a speed table from this run, steps 3-5 use each preset's fastest setting on the H200 of
# 2026-11-28 (docs/benchmarks/gpu.md "DIP-STER on a GPU"): fast fp32 compiled, paper tf32 compiled.
# Results go to $OUT (default /tmp/gpu_check). Packages the machine lacks are installed from .whl/ when
# present (see /work/.library/device/README.md).
# Usage: bash bench/gpu_check.sh [all|quick|quality] [MINUTES_128_FAST] [MINUTES_64] [MINUTES_128_PAPER]
set -u -o pipefail
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
phase=${1:-all}
m128=${2:-1.0}
m64=${3:-0.6}
m128_paper=${4:-$m128}
device=${DEVICE:-cuda}
size128=${SIZE128:-128}  # the large volume's edge (a dry run on the CPU makes it small)
# time limits of the quality steps: the training budget plus session generation, SIRT and evaluations
limit() { python3 -c "print(int(60 * $1 + $2))"; }
export PYTHONUNBUFFERED=1
if [ -d .whl ] && [ "$device" = cuda ]; then  # wheels for the lent machine's Python (3.12)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
work=/tmp/tiltstream_gpu
mkdir -p "$work"
log() { echo "== $(date +%T) $*" | tee -a "$out/steps.log"; }

log "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" \
  | tee -a "$out/gpu.txt"

tests() {
  log "1 CUDA tests"
  timeout 80 python3 -m pytest -q -p no:cacheprovider -rfEs tests/recon/test_projector.py \
    tests/recon/test_trainer_precision.py 2>&1 | tee "$out/pytest_cuda.log" | tail -15
}

speed() {  # $1: extra rows_per_frame values to time (comma-separated, may be empty)
  log "2 training speed at 128^3"
  timeout 130 python3 bench/train_speed.py --device cuda --size 128 --presets fast,paper \
    --precisions fp32,tf32,bf16 --compiled fp32 --rows "$1" --warmup 20 --steps 80 --repeats 3 2>&1 \
    | tee "$out/train_speed.md"
}

# fastest (precision, compiled) per preset from this run's table; the H200's when it is missing
best() {
  python3 - "$1" "$out/train_speed.md" <<'PY'
import sys
preset, path = sys.argv[1], sys.argv[2]
rows, header = [], None
try:
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "preset":  # columns by name: the table has grown columns before
            header = {name: i for i, name in enumerate(cells)}
        elif header and len(cells) == len(header) and cells[0] == preset:
            rows.append((float(cells[header["steps/s"]]), cells[header["precision"]],
                         cells[header["compiled"]] != "no"))
except OSError:
    pass
rate, precision, compiled = max(rows) if rows else (0.0, "tf32" if preset == "paper" else "fp32", True)
print(f"--precision {precision}" + (" --compile" if compiled else ""))
PY
}

quality128() {  # $1: presets in order (default "fast paper"); $2: steps between evaluations (default 2000/1000)
  for preset in ${1:-fast paper}; do
    minutes=$([ "$preset" = fast ] && echo "$m128" || echo "$m128_paper")
    every=${2:-$([ "$preset" = fast ] && echo 2000 || echo 1000)}
    opts=$(best "$preset")
    [ "$preset" = paper ] && [ -n "${SET_PAPER:-}" ] && opts="$opts --set $SET_PAPER"
    log "3 quality ${size128}^3 x 100 nanorod, $preset $opts, $minutes min"
    timeout "$(limit "$minutes" 150)" python3 bench/recon_quality.py --device "$device" $opts --phantoms nanorod \
      --size "$size128" --count 100 --minutes "$minutes" --eval-every "$every" --presets "$preset" --eval-times 10 \
      --workers 12 --docs "$out/q128_$preset" --work "$work" 2>&1 | tee "$out/q128_$preset.log" \
      | grep -v "^ *$" | tail -25
  done
}

torchrun() {  # $1: "eager" leaves out torch.compile (its warm-up is most of a 1000-step run)
  log "4 one-GPU torchrun recon train (NCCL)"
  timeout 60 python3 -m tiltstream sim tiltseries --out "$work/rod32" --phantom nanorod --size 32 --count 60 \
    --device "$device" > /dev/null 2>&1
  opts=$(best fast)
  [ "${1:-}" = eager ] && opts=${opts% --compile}
  rm -rf "$work/run32"
  timeout 60 python3 -m torch.distributed.run --standalone --nproc_per_node=1 -m tiltstream recon train \
    --session "$work/rod32" --out "$work/run32" --device "$device" --steps 1000 --eval-every 250 $opts 2>&1 \
    | tail -8 | tee "$out/torchrun.log"
}

quality64() {
  log "5 quality 64^3 x 100, fast, many steps"
  timeout "$(limit "$m64" 120)" python3 bench/recon_quality.py --device "$device" $(best fast) \
    --phantoms nanoshell,nanorod --size 64 --count 100 --minutes "$m64" --eval-every 4000 --presets fast \
    --eval-times 20 --workers 12 --docs "$out/q64" --work "$work" 2>&1 | tee "$out/q64.log" \
    | grep -v "^ *$" | tail -25
}

case "$phase" in
  quick) tests; speed 8,16 ;;
  quality) quality128; tests; speed "" ;;
  paper) tests; torchrun eager; quality128 "paper fast" 3000 ;;
  all) tests; speed 8,16; quality128; torchrun; quality64 ;;
  *) echo "gpu_check.sh: phase '$phase' is not one of all, quick, quality, paper" >&2; exit 2 ;;
esac
log "done"
