#!/usr/bin/env bash
# A lent GPU machine's whole session as one command (it has minutes, not hours): unpack the photos, check
# `torchrun` with NCCL and `--resume` after `kill -9`, run the ablation sweep on the bundled recipe with its
# runs side by side on the one GPU, and leave what should come back in $OUT (the log, every run's figures,
# the models worth keeping).
#
#   python bench/pack_photos.py ../shared/data packed/photos.zip      # here: ~51 MiB that travels with the tree
#   bash bench/gpu_session.sh packed/photos.zip                       # there
#
# SWEEP names the ablations (bench/ablations.py) and KEEP the ones whose model folders come back; SECONDS_FOR_SWEEP
# stops the sweep in time for the report; HOLDOUT is the held-out sources' JSON; EXTRA goes to every training
# command and KILLED_EPOCHS is the length of the run that is killed (the tests make both tiny).
set -uo pipefail
pack=${1:-packed/photos.zip}
out=${OUT:-runs/gpu-session/out}
runs=${RUNS:-runs/gpu-session}
sweep=${SWEEP:-teacher distilled base epochs-96 loso-sisso16 loso-zhangtao7750}
keep=${KEEP:-base distilled epochs-96}
holdout=${HOLDOUT:-train/held_out_sources.json}
extra=(${EXTRA:-})
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$out" "$runs"
data=${pack%.zip}
python3 -m zipfile -e "$pack" "$data" || exit 1
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available() and torch.cuda.get_device_name())'

# 1. torchrun with one process takes the DDP path (NCCL on a GPU); its epoch also fills the decoded-image cache
#    at the bundled recipe's side for the runs below. If this fails, nothing else would run: stop at once.
python3 -m torch.distributed.run --standalone --nproc_per_node 1 -m train --data "$data/animals" \
    --val-data "$data/animals-val" --outliers "$data/other" --holdout-sources "$holdout" \
    --image-size 128 --progressive-from 64 --epochs 1 "${extra[@]}" --run-dir "$runs/torchrun" >"$runs/torchrun.log" 2>&1
echo "torchrun_exit $?"; grep -o "device [a-z]* x1 ([^)]*)" "$runs/torchrun.log" || { tail -30 "$runs/torchrun.log"; exit 1; }

# 2. the sweep, in the background, and meanwhile a run killed with SIGKILL mid-training, then resumed
timeout "${SECONDS_FOR_SWEEP:-480}" python3 bench/ablations.py --data "$data" --runs "$runs" --base bundled \
    --holdout-sources "$holdout" --parallel 6 --only $sweep -- "${extra[@]}" >"$runs/sweep.out" 2>"$runs/sweep.log" &
sweep_pid=$!
python3 -m train --data "$data/animals" --image-size 64 "${extra[@]}" --epochs "${KILLED_EPOCHS:-12}" --run-dir "$runs/killed" \
    >"$runs/killed.log" 2>&1 &
killed_pid=$!
epochs_done() { python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["history"]))' "$runs/killed/metrics.json" 2>/dev/null || echo 0; }
until [ "$(epochs_done)" -ge 2 ] || ! kill -0 $killed_pid 2>/dev/null; do sleep 0.2; done
kill -9 $killed_pid; wait $killed_pid; echo "killed_exit $? after_epochs $(epochs_done)"
python3 -m train --resume "$runs/killed" >"$runs/resumed.log" 2>&1
echo "resumed_exit $?"; grep -m1 "resuming" "$runs/resumed.log"
python3 -c 'import json, sys; print("resumed_epochs", [r["epoch"] for r in json.load(open(sys.argv[1]))["history"]])' \
    "$runs/killed/metrics.json"
wait $sweep_pid; echo "sweep_exit $?"

# 3. the report: one line per finished run, then what comes back
python3 bench/ablations.py --data "$data" --runs "$runs" --base bundled --holdout-sources "$holdout" --only $sweep --report >"$runs/report.out" 2>"$runs/report.log"
cat "$runs/report.log" "$runs/report.out"
tar -czf "$out/runs.tar.gz" --exclude='*.pt' --exclude='*.safetensors' \
    -C "$runs" --exclude=out . 2>/dev/null
for name in $keep; do
    [ -f "$runs/$name/model/config.json" ] && tar -cf "$out/$name.tar" -C "$runs/$name" model
done
ls -la "$out"
