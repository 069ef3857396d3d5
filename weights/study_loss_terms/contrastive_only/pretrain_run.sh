#!/usr/bin/env bash
# The patch-temperature rerun (weights/study_patch_temp) with the reconstruction terms weighted 0: the iBOT class and
# patch terms are the only objective (self-adaptive masking kept; its reconstruction score comes from an untrained
# decoder). Resumable. Run from the repository root, after
# `python -m openus_monai corpus ../shared/data runs/corpus --exclude busi,ddti,usgra-seg`:
#   THREADS=2 bash weights/study_loss_terms/contrastive_only/pretrain_run.sh
# CORPUS (default runs/corpus), RUN (default runs/pretrain_small_contrastive_only) and BUSI (default
# ../shared/data/busi, the monitor's labelled list) name the folders.
set -euo pipefail
corpus=${CORPUS:-runs/corpus}
run=${RUN:-runs/pretrain_small_contrastive_only}
OMP_NUM_THREADS=${THREADS:-1} python -m monai.bundle run training --config_file \
  "['bundles/openus_pretrain/configs/train.json','bundles/openus_pretrain/configs/small.json']" \
  --meta_file bundles/openus_pretrain/configs/metadata.json --logging_file bundles/openus_pretrain/configs/logging.conf \
  --bundle_root bundles/openus_pretrain --dataset_dir "$corpus" \
  --ckpt_dir "$run/models" --output_dir "$run/eval" \
  --monitor_datalist "${BUSI:-../shared/data/busi}" --monitor_interval 2 --monitor_max_images 400 \
  --max_epochs 30 --warmup_epochs 3 --teacher_temp_warmup_epochs 3 --save_interval 46 --resume true \
  --loss_weights "{'cls': 1.0, 'patch': 1.0, 'rec_global': 0.0, 'rec_local': 0.0}"
