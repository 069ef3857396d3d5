#!/usr/bin/env bash
# The patch-temperature rerun (weights/study_patch_temp/pretrain_run.sh) with the reconstruction terms weighted 0:
# the iBOT class and patch terms are the only objective (self-adaptive masking kept; its reconstruction score comes
# from an untrained decoder). Resumable. Run from the repository root, after
# `python -m openus_monai corpus ../shared/data runs/corpus --exclude busi,ddti,usgra-seg`:
#   THREADS=2 bash weights/study_loss_terms/contrastive_only/pretrain_run.sh
# CORPUS, RUN (default runs/pretrain_small_contrastive_only), BUSI and THREADS as in the rerun's script.
set -euo pipefail
RUN=${RUN:-runs/pretrain_small_contrastive_only} exec bash "$(dirname "$0")/../../study_patch_temp/pretrain_run.sh" \
  --loss_weights "{'cls': 1.0, 'patch': 1.0, 'rec_global': 0.0, 'rec_local': 0.0}"
