#!/bin/bash
# from the repository root; resumable (--resume true), one thread
export OMP_NUM_THREADS=1
exec nice -n 5 python -m monai.bundle run training --config_file \
  "['bundles/openus_pretrain/configs/train.json','bundles/openus_pretrain/configs/small.json']" \
  --meta_file bundles/openus_pretrain/configs/metadata.json --logging_file bundles/openus_pretrain/configs/logging.conf \
  --bundle_root bundles/openus_pretrain --dataset_dir runs/corpus \
  --ckpt_dir runs/pretrain_long/models --output_dir runs/pretrain_long/eval \
  --monitor_datalist ../shared/data/busi --monitor_interval 5 --monitor_max_images 400 \
  --max_epochs 45 --warmup_epochs 4 --teacher_temp_warmup_epochs 4 --save_interval 46 --resume true
