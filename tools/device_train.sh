#!/usr/bin/env bash
# Continue training the bundled models on the lent GPU machine, all at once, within one device call.
#
#   device run, carry ["data/photos-f3w"], timeout_s 600:
#     bash tools/device_train.sh 8 64c 64c:tf32    # the runs training.md §6 recommends now
#
# Each argument after MINUTES is a run: a bundled model name, optionally followed by ":key=value" pairs that are
# passed on as "--key value" (":key" alone as "--key", e.g. 64c:mixed-precision for bfloat16 convolutions) after
# the defaults below (so they override them); the run is named after the whole
# spec (64c:lr=5e-5 trains in runs/64c-lr-5e-5-gpu and comes back as l3ic-64c-lr-5e-5.safetensors). At most
# three runs: each returns its weights and its log, and $OUT returns at most 8 files.
# The runs train side by side on the one GPU (one process each, each allowed a share of its memory): the network
# is small, and on an H200 three runs of batch 32 made 19-20 steps/s each (session 15), two 64c runs 29-30 steps/s
# of batch 32 and 16-16.5 of batch 64 (session 17), about 2,000 patches/s in all each time, the GPU busy 99 %
# (training.md §6). Each trains for MINUTES in its run folder, started from the bundled weights (--init-from) on
# the first call and resumed exactly on later calls while the machine stays warm (runs/ is kept there between
# calls). The call took MINUTES + 1.5 minutes in session 17 (570 s for 8; the machine's start 40 s more): MINUTES 8
# fits a 600 s call. A task that draws a GPU has 15 minutes of device time in all, machine start included: one
# such call fits, and the ~4.5 minutes left allow one short single-run call after it (session 17, training.md §8.16).
# The host cuts the patches in worker processes, the cores shared out among the runs (--data-workers); the batches
# are the same for any number of workers. One process cuts ~815 patches/s on the device's host (session 17), so
# the GPU, not the host, limits the runs; --tf32 (TensorFloat-32 convolutions in the training step) is what should
# raise the rate. Before the runs, tools/bench_data.py measures what the host cuts (~15 s).
#
# The weights come back in $OUT (about 10 MB each) with each run's log; put them in place here with
# tools/bundle_checkpoint.py. Every minute the best weights so far are copied there too, so that a call cut off at
# its limit still returns them. The device image has jax (CUDA), flax and optax. Wheels carried in .whl/ are
# installed first when present, and a smoke test (one training step of the 16c) falls back to the image's own
# packages when they fail: this project's flax 0.12.8 does not import under the image's jax 0.11.2 (training.md
# §6), so carry none with that image. Training needs no C build, so the tree is used as it is.
#
# DATA is the photo set (default data/photos-f3w). The working tree and the carried paths must come to 64 MiB,
# and the tree alone is ~34 MB (the bundled weights), so a set downscaled 3x in WebP (25 MB) is what fits:
#   python tools/make_dataset.py --factor 3 --format webp --out data/photos-f3w
# The patch scales are read from the set's manifest so that the patches are those of the CPU runs whatever the
# factor: crops of 4-8x the patch side in source pixels (--scale-min 2 --scale-max 4 on the 2x set, training.md
# §8.5), detail-weighted (--detail 8, measured on the resized patch, so independent of the factor).
# The runs use the identity quantizer gradient, as every stage of the bundled weights since session 3 did
# (training.md §8.3), batch 64 at peak lr 5e-5 (session 17: batch 64 beat batch 32 in the same minutes, and a
# second stage at 5e-5 improved on the first at 1e-4; 2e-4 at batch 32 diverged for the 64c, training.md §6), and a
# cosine over SCHEDULE_STEPS (default 8000, about what 8 minutes hold for two float32 runs of batch 64) that then
# holds 5 % of the peak until MINUTES run out.
# EXTRA_TRAIN_ARGS is appended to every run's command.
set -uo pipefail
minutes=${1:?usage: device_train.sh MINUTES MODEL[:key=value...]...}
shift
[ $# -gt 0 ] || { echo "usage: device_train.sh MINUTES MODEL[:key=value...]..." >&2; exit 2; }
[ $# -le 3 ] || { echo "at most 3 runs: \$OUT returns at most 8 files (2 a run)" >&2; exit 2; }
data=${DATA:-data/photos-f3w}
[ -d "$data" ] || { echo "$data is missing: build it and name it in carry" >&2; exit 2; }
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 3
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# Each process may take this share of the GPU's memory (JAX would otherwise reserve 75 % for the first one).
export XLA_PYTHON_CLIENT_MEM_FRACTION=$(python3 -c "print(round(0.9 / $#, 3))")
# One training step of the 16c first (about half a minute): if the carried flax and optax do not work with the
# image's jax, fall back to the image's own rather than lose the call.
smoke() {
  rm -rf /tmp/smoke-run
  python3 -c "import jax, flax, optax; print('devices:', jax.devices(), 'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__)" \
    && python3 -m l3ic_jax.train --n-features 16 --data "$data" --out /tmp/smoke-run --init-from 16c --batch-size 2 \
      --max-steps 1 --val-every 1000 --log-every 1 --data-workers 1 >/tmp/smoke.log 2>&1 \
    || { tail -n 20 /tmp/smoke.log 2>/dev/null; return 1; }
}
if ! smoke; then
  case "$PYTHONPATH" in */tmp/site*) ;; *) exit 3 ;; esac
  echo "the carried wheels failed: using the image's flax and optax" >&2
  export PYTHONPATH="$PWD"
  smoke || exit 3
fi
scales=$(python3 -c 'import json, sys; f = json.load(open(sys.argv[1] + "/manifest.json"))["factor"]
assert f <= 4, f"the set is downscaled {f}x; at most 4x keeps the patches of the CPU runs"
print(f"--scale-min {4 / f:.6g} --scale-max {8 / f:.6g}")' "$data") || exit 2
cores=$(nproc)
workers=$(( (cores - $#) / $# )); [ "$workers" -ge 1 ] || workers=1; [ "$workers" -le 8 ] || workers=8
echo "data $data ($scales), $# runs, $workers data workers each"
bench_workers=1; [ "$workers" -le 1 ] || bench_workers="1,$workers"
python3 tools/bench_data.py --data "$data" --workers "$bench_workers" --seconds 3 $scales || echo "bench_data failed (ignored)" >&2
out=${OUT:-.}
pids=() labels=()
for spec in "$@"; do
  model=${spec%%:*}
  label=$(printf '%s' "$spec" | tr ':=,' '---')
  extra=()
  if [ "$spec" != "$model" ]; then
    IFS=: read -ra pairs <<<"${spec#*:}"
    for kv in "${pairs[@]}"; do
      if [[ "$kv" == *=* ]]; then extra+=("--${kv%%=*}" "${kv#*=}"); else extra+=("--$kv"); fi  # a bare flag
    done
  fi
  run="runs/${label}-gpu"
  mkdir -p "$run"
  # Continue with the objective the bundled model was last trained with, read from its provenance: the entropy
  # weight (the 32c's and the 64c's differ from 250, training.md §8.9-§8.16) and the optional distortion terms (the
  # 64c's low-pass and MS-SSIM terms, §8.18-§8.19); the defaults would move a model's operating point back.
  objective=$(python3 -c 'import sys; from l3ic_jax import checkpoint as c
h = c.load(c.resolve(sys.argv[1]))[1]["provenance"].get("hyperparameters", {})
keys = {"entropy_weight": 250.0, "ssim_weight": 0.0, "ms_ssim_weight": 0.0, "lowpass_weight": 0.0, "lowpass_factor": 8}
print(" ".join("--" + k.replace("_", "-") + " " + format(h.get(k, d), "g") for k, d in keys.items()))' "$model") \
    || { echo "cannot read the bundled $model" >&2; exit 3; }
  echo "run $label: $model, $objective ${extra[*]}"
  python3 -m l3ic_jax.train --n-features "${model%c}" --data "$data" --out "$run" \
    --init-from "$model" $objective $scales --detail 8 \
    --quantizer-gradient identity --batch-size 64 --lr 5e-5 --warmup-steps 200 --schedule-steps "${SCHEDULE_STEPS:-8000}" \
    --val-every 500 --ckpt-every-s 60 --log-every 250 --data-workers "$workers" --max-minutes "$minutes" \
    "${extra[@]}" ${EXTRA_TRAIN_ARGS:-} >"$run/stdout.log" 2>&1 &
  pids+=($!) labels+=("$label")
done
# Every minute, the best weights so far to $OUT (through a temporary name, so that no half-copied file comes back).
(
  while sleep 60; do
    for label in "${labels[@]}"; do
      f="runs/${label}-gpu/best.safetensors"
      [ -f "$f" ] && cp "$f" "$out/.partial" && mv "$out/.partial" "$out/l3ic-${label}.safetensors"
    done
  done
) &
copier=$!
status=0
for i in "${!pids[@]}"; do
  label=${labels[$i]}
  if ! wait "${pids[$i]}"; then
    echo "training $label failed:" >&2
    status=4
  fi
  tail -n 6 "runs/${label}-gpu/stdout.log"
  cp "runs/${label}-gpu/log.jsonl" "$out/log-${label}.jsonl" 2>/dev/null
done
kill "$copier" 2>/dev/null; wait "$copier" 2>/dev/null; rm -f "$out/.partial"
exports=()
for label in "${labels[@]}"; do
  python3 -m l3ic_jax.train export "runs/${label}-gpu" "$out/l3ic-${label}.safetensors" &
  exports+=($!)
done
for pid in "${exports[@]}"; do wait "$pid" || status=4; done
exit $status
