#!/usr/bin/env bash
# Continue training the bundled models on the lent GPU machine, all at once, within one device call.
#
#   device run, carry ["data/photos-webp", ".whl"]:  bash tools/device_train.sh 8 16c 32c 64c
#
# The models train side by side on the one GPU (one process each, each allowed a share of its memory): the
# network is small, so a single run leaves most of an H100 idle, and three runs in parallel finish three times the
# work of three runs in a row in the same 10-minute call. Each trains for MINUTES in runs/<name>-gpu, started from
# the bundled weights (--init-from) on the first call and resumed exactly on later calls while the machine stays
# warm (runs/ is kept there between calls). Keep MINUTES + about 1.5 (start-up, compilation, export) under 10.
# A task that draws a GPU now has 15 minutes of device time in all, machine start included: one call of
# `device_train.sh 8 ...` is what fits. Each run cuts its patches with 4 threads (--data-workers), so that the
# host keeps up with the GPU; the batches are the same as with one.
#
# The exported weights come back in $OUT (about 10 MB each) with each run's log; put them in place here with
# tools/bundle_checkpoint.py. The device image has jax (CUDA) and numpy; wheels carried in .whl/ (this project's
# flax and optax versions, see docs/training.md §6) are installed first so the code runs on the versions it was
# tested with. Training needs no C build, so the tree is used as it is.
# The patches are detail-weighted to Kodak's texture level (--scale-min 2 --scale-max 4 --detail 8, training.md
# §8.5). A batch of 32 then takes ~75 ms of one core to cut (measured on the 2-core Xeon), ~20 ms on the 4
# threads; if the log shows the GPU runs starved, drop --detail there (0 costs ~25 ms of a core).
# The runs use the identity quantizer gradient, as every stage of the bundled weights since session 3 did
# (training.md §8.3); EXTRA_TRAIN_ARGS is appended to each training command and overrides this (e.g.
# "--quantizer-gradient soft", the original's).
# Build the carried data set here first: python tools/make_dataset.py --format webp --out data/photos-webp
set -uo pipefail
minutes=${1:?usage: device_train.sh MINUTES MODEL...}
shift
[ $# -gt 0 ] || { echo "usage: device_train.sh MINUTES MODEL..." >&2; exit 2; }
[ -d data/photos-webp ] || { echo "data/photos-webp is missing: build it and name it in carry" >&2; exit 2; }
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 3
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# Each process may take this share of the GPU's memory (JAX would otherwise reserve 75 % for the first one).
export XLA_PYTHON_CLIENT_MEM_FRACTION=$(python3 -c "print(round(0.9 / $#, 3))")
python3 -c "import jax, flax, optax; print('devices:', jax.devices(), 'jax', jax.__version__, 'flax', flax.__version__)" \
  || exit 3
out=${OUT:-.}
pids=()
for model in "$@"; do
  mkdir -p "runs/${model}-gpu"
  # Continue at the entropy weight the bundled model was last trained with, read from its provenance (the 32c's
  # and the 64c's differ from 250, training.md §8.9-§8.13): the default 250 would move a model's operating point back.
  entropy_weight=$(python3 -c 'import sys; from l3ic_jax import checkpoint as c
print(c.load(c.resolve(sys.argv[1]))[1]["provenance"].get("hyperparameters", {}).get("entropy_weight", 250.0))' "$model") \
    || { echo "cannot read the bundled $model" >&2; exit 3; }
  python3 -m l3ic_jax.train --n-features "${model%c}" --data data/photos-webp --out "runs/${model}-gpu" \
    --init-from "$model" --entropy-weight "$entropy_weight" --scale-min 2 --scale-max 4 --detail 8 \
    --quantizer-gradient identity --batch-size 32 --lr 2e-4 --warmup-steps 200 --schedule-steps 20000 \
    --val-every 500 --ckpt-every-s 60 --log-every 100 --data-workers 4 --max-minutes "$minutes" ${EXTRA_TRAIN_ARGS:-} \
    >"runs/${model}-gpu/stdout.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  model=${@:$((i + 1)):1}
  if ! wait "${pids[$i]}"; then
    echo "training $model failed:" >&2
    status=4
  fi
  tail -n 5 "runs/${model}-gpu/stdout.log"
  cp "runs/${model}-gpu/log.jsonl" "$out/log-${model}.jsonl" 2>/dev/null
  python3 -m l3ic_jax.train export "runs/${model}-gpu" "$out/l3ic-${model}.safetensors" || status=4
done
exit $status
