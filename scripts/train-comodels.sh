#!/usr/bin/env bash
# Trains every shipped ComModel (models/weights/comodel-*.safetensors) from the dev photo set, one after another,
# on the CPU. Usage: scripts/train-comodels.sh PHOTO_DIR [OUT_DIR] [CODEC ...]
#   PHOTO_DIR  the dev photos (../shared/data/dev-photos.sh PHOTO_DIR builds them)
#   OUT_DIR    where the weights go (default models/weights)
#   CODEC      train only these settings (default: all nine)
# Each run logs to OUT_DIR/train-<codec>.log; the time of each run is printed at its end.
set -euo pipefail
photos=${1:?usage: scripts/train-comodels.sh PHOTO_DIR [OUT_DIR] [CODEC ...]}
out=${2:-models/weights}
shift $(( $# >= 2 ? 2 : 1 ))
# Steps per setting: JPEG starts as a differentiable JPEG at its own quality and needs little training; WebP and
# JPEG 2000 are learned by the refiner and need more.
declare -A steps=(
  [jpeg:75]=300 [jpeg:50]=300 [jpeg:25]=300
  [webp:75]=2000 [webp:50]=2000 [webp:25]=6000
  [jp2:10]=1000 [jp2:20]=1000
  [resize:2048+jpeg:85]=300
)
# WebP 25 needs a wider view than three 3x3 convs: a small U-Net refiner (3 half-resolution levels), and more
# views per photo (64 instead of 24) against over-fitting the 40 training photos.
declare -A extra=(
  [webp:25]="--refine-width 16 --refine-levels 3 --views-per-photo 64"
)
# Float sums depend on the thread count, so the same seed gives the same weights only with the same threads: these
# are the counts the shipped files were trained with.
declare -A threads=(
  [webp:25]=1
)
codecs=("$@")
[ ${#codecs[@]} -eq 0 ] && codecs=(jpeg:75 jpeg:50 jpeg:25 webp:75 webp:50 webp:25 jp2:10 jp2:20 resize:2048+jpeg:85)
mkdir -p "$out"
for codec in "${codecs[@]}"; do
  name=$(printf '%s' "$codec" | tr ':+' '-_')
  start=$(date +%s)
  comcloak train --codec "$codec" --photos "$photos" -o "$out/comodel-$name.safetensors" \
    --steps "${steps[$codec]}" ${extra[$codec]:-} --seed 0 --threads "${threads[$codec]:-2}" --resume 2>&1 | tee "$out/train-$name.log"
  echo "$codec: $(( $(date +%s) - start )) s" | tee -a "$out/train-$name.log"
done
