#!/usr/bin/env bash
# One training run as N local processes with D (simulated CPU) devices each: a multi-host "pod" on
# one machine, talking through a coordinator on 127.0.0.1 and gloo collectives. The same command
# line, run once per host with JAX_PROCESS_ID=0..N-1 and a reachable coordinator address, is how a
# real multi-host job starts (see docs/training.md).
#
#   scripts/launch_local_multihost.sh 2 2 --config=configs/finetune_digits.py:runlocal --workdir=/tmp/mh
#
# Process 0 prints the progress and writes metrics/summaries/export; every process reads its own
# shard of the data and joins every checkpoint save. The others log to WORKDIR/process_<i>.log.
# Ctrl-C stops them all. Run it again to resume from the latest checkpoint.
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS --config=... --workdir=DIR [--config.KEY=VALUE ...]" >&2
  exit 2
fi
num=$1; devices=$2; shift 2
python=${PYTHON:-.venv/bin/python}
port=${PORT:-$((20000 + RANDOM % 20000))}
workdir=""
for arg in "$@"; do
  case $arg in --workdir=*) workdir=${arg#--workdir=} ;; esac
done
[ -n "$workdir" ] || { echo "$0: --workdir=DIR is required" >&2; exit 2; }
mkdir -p "$workdir"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup INT TERM

for ((i = 0; i < num; i++)); do
  env XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$devices" \
      JAX_PLATFORMS=cpu \
      JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" JAX_NUM_PROCESSES="$num" JAX_PROCESS_ID="$i" \
      "$python" -m jtransfer.main "$@" --config.train.distributed.cpu_collectives=gloo \
      > >(if [ "$i" = 0 ]; then cat; else cat > "$workdir/process_$i.log"; fi) 2>&1 &
  pids+=($!)
done

status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
exit $status
