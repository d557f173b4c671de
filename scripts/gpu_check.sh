#!/usr/bin/env bash
# GPU check of the full-scale path, in under 8 minutes on one GPU (issue 7):
#   1. torchrun with one process: a short tokenizer training (NCCL, torch.compile of the blocks),
#      then a resume of the same run to more steps;
#   2. notebooks 20, 21, 22 headless with papermill at a reduced step count on synthetic 256² data
#      (presets/gpu_check.yaml: the full preset's detok_BB and MAR_base on the shapes data);
#   3. the speed benchmark: detok_BB at 256² (official recipe vs ours, with MFU), then each generator
#      at base size while the time budget lasts.
# Everything (logs, executed notebooks, figures, JSON, summary.md) goes to $OUT (default
# runs/gpu_check). Parts run under their own time limits; a failed part does not stop the others;
# the exit code is non-zero when any part failed.
#
#   bash scripts/gpu_check.sh                 # from anywhere; uses .venv/bin/python or python3
#   OUT=/tmp/check BUDGET_S=420 bash scripts/gpu_check.sh
#   CHECK_SIZE=cpu bash scripts/gpu_check.sh  # the same steps at smoke sizes on the CPU (tests the script)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/runs/gpu_check}"
BUDGET_S="${BUDGET_S:-450}"          # stop starting optional parts after this many seconds
CHECK_SIZE="${CHECK_SIZE:-gpu}"
mkdir -p "$OUT/logs" "$OUT/nb"
OUT="$(cd "$OUT" && pwd)"
START=$(date +%s)
STATUS="$OUT/status.tsv"
: > "$STATUS"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg TOKENIZERS_PARALLELISM=false

elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET_S - $(elapsed) )); }
# a part's time limit: what it asks for, but never far past the budget
lim() { local l=$(( $(left) + 30 )); [ "$l" -lt 30 ] && l=30; [ "$1" -lt "$l" ] && echo "$1" || echo "$l"; }
log() { echo "[gpu_check $(elapsed)s] $*" | tee -a "$OUT/logs/gpu_check.log"; }

# ---------------------------------------------------------------- python
PY=""
for cand in "$ROOT/.venv/bin/python" "$(command -v python3 || true)" "$(command -v python || true)"; do
  if [ -n "$cand" ] && [ -x "$cand" ] && "$cand" -c "import torch" >/dev/null 2>&1; then PY="$cand"; break; fi
done
if [ -z "$PY" ]; then echo "gpu_check: no python with torch found (.venv/bin/python, python3, python)" >&2; exit 2; fi
if ! "$PY" -c "import ldetok_lite.cli, papermill, torch_fidelity, safetensors, timm, einops, lpips, torchdiffeq" \
     >/dev/null 2>&1; then
  log "installing the package and its dependencies (pip install -e .)"
  "$PY" -m pip install -q -e "$ROOT" >"$OUT/logs/pip.log" 2>&1 || log "pip install failed (see logs/pip.log); continuing"
fi
KERNEL=python3
if [ "$CHECK_SIZE" != cpu ] && "$PY" -m ipykernel install --user --name ldetok-gpu-check --display-name "ldetok gpu_check" \
     >/dev/null 2>&1; then KERNEL=ldetok-gpu-check; fi
{
  echo "python: $PY"
  "$PY" -c "import torch, sys; print('torch', torch.__version__, '| cuda', torch.version.cuda, '| devices', \
torch.cuda.device_count(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
} | tee "$OUT/env.txt"

# part NAME LIMIT_S CMD... : run one part with a time limit, log and status
part() {
  local name="$1" limit; limit=$(lim "$2"); shift 2
  local t0=$(date +%s)
  log "start $name (limit ${limit}s)"
  timeout --signal=TERM --kill-after=20 "$limit" "$@" >"$OUT/logs/$name.log" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  local st=ok; [ $rc -ne 0 ] && st="FAILED(rc=$rc)"; [ $rc -eq 124 ] && st="TIMEOUT"
  printf '%s\t%s\t%ss\n' "$name" "$st" "$dt" >> "$STATUS"
  log "end $name: $st in ${dt}s"
  tail -n 3 "$OUT/logs/$name.log" | sed 's/^/    /'
  return $rc
}

# sizes: the real check on a GPU, or smoke sizes on the CPU to test this script
NB_EXTRA=(); TR_EXTRA=(); BENCH_TOK=(--models detok_BB --img 256 --tok-batch 64 --steps 15 --warmup 5)
BENCH_GEN=(--models DiT_base,SiT_base,LightningDiT_base,MAR_base,RandomAR_base,RasterAR_base --gen-batch 128)
if [ "$CHECK_SIZE" = cpu ]; then
  NB_EXTRA=(-p preset smoke -p img_size 32 -p steps 4 -p batch_size 16 -p num_images 32 -p device cpu)
  TR_EXTRA=(--device cpu)
  BENCH_TOK=(--device cpu --models detok_tiny --img 32 --tok-batch 16 --steps 3 --warmup 1)
  BENCH_GEN=(--device cpu --models DiT_tiny,MAR_tiny --img 32 --latent-size 8 --latent-channels 8 --num-classes 10
             --gen-batch 16)
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
fi

# ---------------------------------------------------------------- 1. torchrun, one process
TR="$OUT/torchrun1"
rm -rf "$TR"
part torchrun_train 120 "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m ldetok_lite.cli \
  train tokenizer --preset smoke --out "$TR" --set tokenizer_train.steps=20 --set tokenizer_train.ckpt_every=10 \
  --set tokenizer_train.log_every=5 --set tokenizer_train.compile=$([ "$CHECK_SIZE" = cpu ] && echo False || echo True) \
  "${TR_EXTRA[@]}"
part torchrun_resume 90 "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m ldetok_lite.cli \
  train tokenizer --preset smoke --out "$TR" --set tokenizer_train.steps=30 --set tokenizer_train.ckpt_every=10 \
  --set tokenizer_train.log_every=5 --set tokenizer_train.compile=$([ "$CHECK_SIZE" = cpu ] && echo False || echo True) \
  "${TR_EXTRA[@]}"

# ---------------------------------------------------------------- 2. notebooks 20-22
for nb in 20_full_tokenizer 21_full_generator 22_full_evaluation; do
  part "nb_$nb" 200 "$PY" -m papermill "notebooks/$nb.ipynb" "$OUT/nb/$nb.ipynb" -k "$KERNEL" --log-output \
    -f presets/gpu_check.yaml -p out_dir "$OUT/nb/${nb%%_*}" -p cache_dir "$OUT/cache" "${NB_EXTRA[@]}"
done

# ---------------------------------------------------------------- 3. speed benchmark
part bench_tokenizer 120 "$PY" -m ldetok_lite.cli bench speed "${BENCH_TOK[@]}" --json "$OUT/bench_tokenizer.json"
if [ "$(left)" -gt 150 ]; then
  part bench_generators 180 "$PY" -m ldetok_lite.cli bench speed "${BENCH_GEN[@]}" --steps 10 --warmup 3 \
    --compile "$([ "$CHECK_SIZE" = cpu ] && echo off || echo on)" --json "$OUT/bench_generators.json"
elif [ "$(left)" -gt 60 ]; then
  part bench_generators_eager 90 "$PY" -m ldetok_lite.cli bench speed "${BENCH_GEN[@]}" --steps 8 --warmup 2 \
    --compile off --json "$OUT/bench_generators.json"
else
  printf 'bench_generators\tSKIPPED(budget)\t0s\n' >> "$STATUS"
fi

# ---------------------------------------------------------------- summary
"$PY" - "$OUT" <<'PYEOF' > "$OUT/summary.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("# gpu_check summary\n")
print("```\n" + (out / "env.txt").read_text().strip() + "\n```\n")
print("| part | status | time |\n|---|---|---|")
for line in (out / "status.tsv").read_text().splitlines():
    print("| " + " | ".join(line.split("\t")) + " |")
for name in ("bench_tokenizer", "bench_generators"):
    p = out / f"{name}.json"
    if not p.is_file():
        continue
    res = json.loads(p.read_text())
    print(f"\n## {name} ({res['device']}, compile {res['compile']}, peak {res['peak_flops']})\n")
    print("| model | mode | batch | ms/step | img/s | GFLOP/img | MFU | mem GiB |\n|---|---|---|---|---|---|---|---|")
    for r in res["rows"]:
        if "error" in r:
            print(f"| {r['model']} | {r['mode']} | error: {r['error'][:80]} | | | | | |")
            continue
        m = "n/a" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%"
        print(f"| {r['model']} | {r['mode']} | {r['batch']} | {r['ms_per_step']:.1f} | {r['img_per_s']:.1f} | "
              f"{r['gflop_per_img']:.1f} | {m} | {r.get('max_mem_GiB', 0):.1f} |")
    for k, v in res["speedup"].items():
        print(f"\nspeed-up {k}: x{v:.2f}")
print("\n## notebooks\n")
for nb in ("20", "21", "22"):
    s = out / "nb" / nb / "summary.json"
    if s.is_file():
        d = json.loads(s.read_text())
        keep = {k: d[k] for k in ("elapsed_s", "rfid", "psnr", "ssim", "best_cfg", "gfid", "inception_score",
                                  "psnr_examples", "steps", "tokenizer_dir", "generator_dir") if k in d}
        print(f"- {nb}: {json.dumps(keep)}")
    else:
        print(f"- {nb}: no summary.json")
tr = out / "torchrun1" / "metrics.jsonl"
if tr.is_file():
    rows = [json.loads(l) for l in tr.read_text().splitlines() if l.strip()]
    print(f"\n## torchrun (1 process)\n\nlast rows: {rows[-2:]}")
print("\n## figures\n")
for p in sorted(out.rglob("*.png")):
    if "checkpoints" not in p.parts:
        print(f"- {p.relative_to(out)}")
PYEOF
log "summary: $OUT/summary.md (total $(elapsed)s)"
cat "$OUT/summary.md"
if grep -qE 'FAILED|TIMEOUT' "$STATUS"; then exit 1; fi
exit 0
