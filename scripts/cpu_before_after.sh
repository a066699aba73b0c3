#!/usr/bin/env bash
# Side-by-side CPU timing of a bench command on two source trees (e.g. main before this branch, and this
# branch), alternating A B A B ... so machine load hits both equally; fresh results dir per run.
# usage: scripts/cpu_before_after.sh BEFORE_TREE AFTER_TREE REPEATS OUTDIR -- bench args...
#   e.g. git archive 22f6618 | tar -x -C /tmp/before
#        scripts/cpu_before_after.sh /tmp/before . 2 /tmp/ba -- run --defense vanilla --attack pgd
set -euo pipefail
before=$(cd "$1" && pwd); after=$(cd "$2" && pwd); reps=$3; out=$4; shift 4
[ "$1" = "--" ] && shift
mkdir -p "$out"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for i in $(seq 1 "$reps"); do
  for side in before after; do
    tree=$([ $side = before ] && echo "$before" || echo "$after")
    rd="$out/$side-$i"; rm -rf "$rd"; mkdir -p "$rd"
    t0=$(date +%s.%N)
    (cd "$tree" && PYTHONPATH="$tree" python -m snnbench "$@" --results-dir "$rd" >"$rd.log" 2>&1)
    t1=$(date +%s.%N)
    echo "$side $i $(echo "$t1 - $t0" | bc) s  load=$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$out/times.txt"
  done
done
