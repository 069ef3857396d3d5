#!/usr/bin/env bash
# A call on the lent H200 (issue 13's pretraining on a GPU, then issue 17's GPU check), from the repository root,
# everything it keeps written under $OUT (weights/README.md, "On a GPU", gives the two calls that ran):
#   1. install the carried wheels (MONAI, Ignite, fire, nibabel: the machine has torch and no network);
#   2. pretrain `small.json` on the GPU: a 2-epoch calibration run sizes the real run so that it fits
#      PRETRAIN_S seconds (epochs = what fits, warm-up a tenth of them), then the real run, k-NN on BUSI
#      ten times; export the teacher encoder to $OUT/openus_us_small_gpu.pt;
#   3. benchmarks/gpu_check.sh (scan exactness on CUDA, VMamba-S and OpenUS throughput).
# Carried (ignored by git, named in the call's carry): .gpu/whl (wheels), .gpu/corpus (the corpus, images
# and datalist.json), .gpu/busi_monitor (BUSI's images with labels.csv, for the k-NN monitor).
set -uo pipefail
cd "$(dirname "$0")/../.."
PRETRAIN_S=${PRETRAIN_S:-240}
export BATCH=${BATCH:-64}  # small.json's 32 leaves the GPU idle between launches; lr scales with it (train.json)
GPU_CHECK_S=${GPU_CHECK_S:-150}
export PRETRAIN_ARGS=${PRETRAIN_ARGS:-}
# PRETRAIN_ARGS: more bundle arguments for both runs (a CPU dry run of this script: a tiny batch and epoch_length)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
t0=$SECONDS
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
python3 -c "import torch, monai, ignite, openus_monai; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'monai', monai.__version__, 'ignite', ignite.__version__)" || exit 1

run=/tmp/pretrain_gpu
pretrain() {  # extra bundle arguments
    python3 -m monai.bundle run training --config_file \
      "['bundles/openus_pretrain/configs/train.json','bundles/openus_pretrain/configs/small.json']" \
      --meta_file bundles/openus_pretrain/configs/metadata.json --logging_file bundles/openus_pretrain/configs/logging.conf \
      --bundle_root bundles/openus_pretrain --dataset_dir .gpu/corpus --num_workers 12 --batch_size "$BATCH" \
      --monitor_datalist .gpu/busi_monitor --monitor_max_images 400 "$@" ${PRETRAIN_ARGS:-}
}
epoch_seconds() {  # the last "Epoch[N] Complete. Time taken: HH:MM:SS.sss" of a log, in seconds
    grep -o 'Epoch\[[0-9]*\] Complete. Time taken: [0-9:.]*' "$1" | tail -1 | awk '{split($NF, t, ":"); print t[1] * 3600 + t[2] * 60 + t[3]}'
}

echo "== calibration: 2 epochs"
c0=$SECONDS
pretrain --ckpt_dir $run/calibration/models --output_dir $run/calibration/eval --max_epochs 2 --warmup_epochs 1 \
  --teacher_temp_warmup_epochs 1 --monitor_interval 1000 > "$OUT/calibration.log" 2>&1
rc=$?
calibration_s=$((SECONDS - c0))
epoch_s=$(epoch_seconds "$OUT/calibration.log")
echo "calibration rc=$rc in ${calibration_s} s, last epoch ${epoch_s:-?} s"
if [ "$rc" -eq 0 ] && [ -n "$epoch_s" ]; then
    # the run's fixed cost (start, caching, first epoch's warm-up) is what calibration spent beyond two epochs
    epochs=$(python3 -c "e=$epoch_s; fixed=max($calibration_s - 2 * e, 10); print(max(4, int(0.92 * ($PRETRAIN_S - fixed) / e)))")
    warmup=$(( epochs / 10 > 1 ? epochs / 10 : 1 ))
    monitor_every=$(( epochs / 10 > 1 ? epochs / 10 : 1 ))
    echo "== pretraining: $epochs epochs (warm-up $warmup), k-NN every $monitor_every"
    p0=$SECONDS
    timeout $((PRETRAIN_S + 60)) bash -c "$(declare -f pretrain); pretrain --ckpt_dir $run/main/models --output_dir $run/main/eval \
      --max_epochs $epochs --warmup_epochs $warmup --teacher_temp_warmup_epochs $warmup \
      --monitor_interval $monitor_every --save_interval 500" > "$OUT/pretrain.log" 2>&1
    echo "pretraining rc=$? in $((SECONDS - p0)) s"
    grep -E "Engine run finished|Traceback|Error" "$OUT/pretrain.log" | tail -5
    final=$run/main/models/pretrain_final.pt
    if [ -f "$final" ]; then
        meta=$(python3 -c "import torch; print({'epochs': $epochs, 'warmup_epochs': $warmup, 'batch_size': $BATCH, 'config': 'train.json + small.json', 'corpus': 'runs/corpus (JPEG, at most 384 px)', 'device': torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu', 'torch': torch.__version__})")
        python3 -m openus_monai export-backbone "$final" "$OUT/openus_us_small_gpu.pt" --meta "$meta"
    fi
    # TensorBoard events and every 5th epoch's masking picture (all of them could pass the 16 MB a file)
    (cd $run/main && find eval -name 'events.*' -o -name 'masking_epoch*[05].png' | tar -czf "$OUT/pretrain_eval.tar.gz" -T -)
else
    tail -40 "$OUT/calibration.log"
fi
if [ "$GPU_CHECK_S" -gt 0 ]; then
    echo "== GPU check (pretraining part took $((SECONDS - t0)) s)"
    timeout $((GPU_CHECK_S + 30)) bash benchmarks/gpu_check.sh --budget-s "$GPU_CHECK_S"
fi
echo "== done in $((SECONDS - t0)) s"
ls -la "$OUT"
