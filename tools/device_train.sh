#!/usr/bin/env bash
# Continue training the bundled models on the lent GPU machine, within one device call (10 minutes at most).
#
#   device run, carry ["data/photos-webp"]:  bash tools/device_train.sh 3 16c 32c 64c
#
# Each model trains for MINUTES in runs/<name>-gpu, started from the bundled weights (--init-from) on the first call
# and resumed exactly on later calls while the machine stays warm (runs/ is kept there between calls). The exported
# weights come back in $OUT (about 10 MB each); put them in place here with tools/bundle_checkpoint.py. The device
# image has jax (CUDA), flax, optax and safetensors; training needs no C build, so the tree is used as it is.
# Build the carried data set here first: python tools/make_dataset.py --format webp --out data/photos-webp
set -euo pipefail
minutes=${1:?usage: device_train.sh MINUTES MODEL...}
shift
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import jax; print('devices:', jax.devices())"
for model in "$@"; do
  python3 -m l3ic_jax.train --n-features "${model%c}" --data data/photos-webp --out "runs/${model}-gpu" \
    --init-from "$model" --batch-size 32 --lr 2e-4 --warmup-steps 200 --schedule-steps 20000 \
    --val-every 500 --ckpt-every-s 60 --max-minutes "$minutes"
  python3 -m l3ic_jax.train export "runs/${model}-gpu" "${OUT:-.}/l3ic-${model}.safetensors"
done
