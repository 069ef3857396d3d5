#!/usr/bin/env bash
# The shipped run (weights/README.md) with the patch temperature fix (small.json: teacher_patch_temp 0.01). Resumable.
# Run from the repository root, after `python -m openus_monai corpus ../shared/data runs/corpus --exclude busi,ddti,usgra-seg`:
#   THREADS=2 bash weights/study_patch_temp/pretrain_run.sh
# CORPUS (default runs/corpus), RUN (default runs/pretrain_small_patch_temp) and BUSI (default ../shared/data/busi,
# the monitor's labelled list) name the folders; further arguments are passed to the bundle (the ablations in
# weights/study_loss_terms add their --loss_weights).
set -euo pipefail
corpus=${CORPUS:-runs/corpus}
run=${RUN:-runs/pretrain_small_patch_temp}
OMP_NUM_THREADS=${THREADS:-1} python -m monai.bundle run training --config_file \
  "['bundles/openus_pretrain/configs/train.json','bundles/openus_pretrain/configs/small.json']" \
  --meta_file bundles/openus_pretrain/configs/metadata.json --logging_file bundles/openus_pretrain/configs/logging.conf \
  --bundle_root bundles/openus_pretrain --dataset_dir "$corpus" \
  --ckpt_dir "$run/models" --output_dir "$run/eval" \
  --monitor_datalist "${BUSI:-../shared/data/busi}" --monitor_interval 2 --monitor_max_images 400 \
  --max_epochs 30 --warmup_epochs 3 --teacher_temp_warmup_epochs 3 --save_interval 46 --resume true "$@"
