#!/bin/bash
# Issue 25 device driver (session helper): bash dev.sh SECONDS TASK...   (tasks run in order, each within the deadline)
set -o pipefail
BUDGET=$1; shift; D=$((SECONDS+BUDGET))
export PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True HF_HUB_OFFLINE=1
L=$OUT/log.txt
F="kept in float32\|pytree\|Failed to load\|register_constant\|Unable to import .torchao\|FQN"
mkdir -p /tmp/site
if [ ! -f /tmp/site/.small_ok ]; then python3 -c "import tarfile;tarfile.open('whl/small.tar.xz').extractall('/tmp/site')" && touch /tmp/site/.small_ok; fi
export PYTHONPATH=/tmp/site:/tmp/site/nvidia_cutlass_dsl/dsl_packages:$PWD
CCD=/tmp/cc25
left() { echo $((D-SECONDS)); }
r() { t=$(left); if [ $t -gt 70 ]; then echo "### $(date +%T) gpu_step $* (limit $t s)" | tee -a $L; timeout $t python3 bench/gpu_step.py --no-md --out $OUT --configs 1024:4 --reps 2 --fake-reps 2 --models sd35m --compile --fused-adamw --compile-cache $CCD "$@" 2>&1 | grep -v "$F" | tee -a $L | grep "^|\|^#\|Error\|error" ; else echo "### skipped (time) $*" | tee -a $L; fi; }
for task in "$@"; do case $task in
info) (nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; python3 -c "import torch,diffusers,torchao,sys;print(sys.version.split()[0],torch.__version__,torch.version.cuda,diffusers.__version__,torchao.__version__,torch.backends.cudnn.version())" 2>&1 | tail -1; df -hT / /tmp | tail -2; nproc; python3 -c "import torch.nn.attention as a; print('attention API:', [x for x in dir(a) if 'flash' in x.lower() or 'impl' in x.lower()])" 2>&1 | tail -1) | tee -a $L ;;
join) (ls -la ../.stash ../.whl25; cat ../.stash/cu13.partA ../.whl25/cu13.partB > /tmp/cu13.tar.xz && sha256sum /tmp/cu13.tar.xz && python3 -c "import tarfile;tarfile.open('/tmp/cu13.tar.xz').extractall('/tmp/site')" && python3 -c "import flash_attn.cute, cutlass; print('fa4 import ok', flash_attn.cute.__file__)" 2>&1 | tail -2) | tee -a $L ;;
ab) echo "### $(date +%T) attention_backends" | tee -a $L; timeout $(( $(left) < 120 ? $(left) : 120 )) python3 bench/attention_backends.py --backends default,flash,cudnn,fa4 --out $OUT 2>&1 | grep -v "$F" | tee -a $L | tail -11 ;;
base) r --setups full --tag a1_full_base ;;
fp8) r --setups full --fp8 tensorwise --tag a2_full_fp8tw ;;
fa4) r --setups full --attention-backend fa4 --tag b1_full_fa4 ;;
fa4fp8) r --setups full --attention-backend fa4 --fp8 tensorwise --tag b2_full_fa4_fp8tw ;;
lbase) r --setups lora --tag c1_lora_base ;;
lboth) r --setups lora --attention-backend fa4 --fp8 tensorwise --tag c2_lora_fa4_fp8tw ;;
ck*) c=${task#ck}; t=$(( $(left) - 2 )); [ -n "$c" ] && [ $t -gt $c ] && t=$c; [ $t -gt 30 ] && (echo "### $(date +%T) checkpoint_io (limit $t)"; CK=/tmp/ckio; df -T /tmp | grep -q tmpfs && CK=$PWD/../.ckio; mkdir -p $CK; df -T $CK | tail -1; timeout $t python3 bench/checkpoint_io.py --dir $CK --networks 1 --cycle-s 8.5 --out $OUT 2>&1 | grep -v "$F" | grep "^|\|^#\|Error\|what") | tee -a $L ;;
f8c*) n=${task#f8c}; t=$(( $(left) - 2 )); [ $t -gt 40 ] && (echo "### $(date +%T) fp8_check ${n:-300} it (limit $t)"; timeout $t python3 bench/fp8_check.py --modes bf16,tensorwise --seeds 0,1,2 --iterations ${n:-300} --jobs 6 --threads 2 --device cuda --out $OUT 2>&1 | grep -v "$F" | tail -10) | tee -a $L ;;
esac; done
ls $OUT/gpu_step_*.json >/dev/null 2>&1 && python3 bench/gpu_step.py --merge $OUT/gpu_step_*.json --out $OUT 2>/dev/null | tail -8
ls $OUT
