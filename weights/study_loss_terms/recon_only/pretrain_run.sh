#!/usr/bin/env bash
# The patch-temperature rerun (weights/study_patch_temp/pretrain_run.sh) with the iBOT terms weighted 0: masked
# reconstruction (self-adaptive masking kept) is the only objective. Resumable. Run from the repository root, after
# `python -m openus_monai corpus ../shared/data runs/corpus --exclude busi,ddti,usgra-seg`:
#   THREADS=2 bash weights/study_loss_terms/recon_only/pretrain_run.sh
# CORPUS, RUN (default runs/pretrain_small_recon_only), BUSI and THREADS as in the rerun's script.
set -euo pipefail
RUN=${RUN:-runs/pretrain_small_recon_only} exec bash "$(dirname "$0")/../../study_patch_temp/pretrain_run.sh" \
  --loss_weights "{'cls': 0.0, 'patch': 0.0, 'rec_global': 1.0, 'rec_local': 1.0}"
