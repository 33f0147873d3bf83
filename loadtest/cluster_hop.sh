#!/usr/bin/env bash
# Runs one command (a rookery-load scenario) and prints the CPU seconds that
# the given server processes used while it ran: utime + stime from
# /proc/PID/stat, read just before and just after. Used for the "Cluster: the
# cost of the gRPC hop" figures in docs/benchmarks.md, where one scenario's
# server CPU is spread over several processes (cms, session nodes, Redis),
# and `rookery-load --server-pid` sees only one of them.
#
# Usage: loadtest/cluster_hop.sh PID[,PID...] -- COMMAND [ARGS...]
# Prints the command's output, then one line:
#   cpu_s total=T PID=S PID=S ... wall_s=W
# The window covers the whole command (logins included), not only the
# measured phase that rookery-load reports on its own.
set -euo pipefail
[ $# -ge 3 ] && [ "$2" = "--" ] || { sed -n '2,13p' "$0"; exit 2; }
IFS=, read -r -a pids <<< "$1"
shift 2
hz=$(getconf CLK_TCK)
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }  # utime + stime, in ticks
declare -A before
for p in "${pids[@]}"; do before[$p]=$(ticks "$p"); done
t0=$(date +%s.%N)
rc=0
"$@" || rc=$?
t1=$(date +%s.%N)
line="" total=0
for p in "${pids[@]}"; do
  d=$(( $(ticks "$p") - before[$p] ))
  total=$((total + d))
  line+=" $p=$(awk -v d="$d" -v hz="$hz" 'BEGIN { printf "%.2f", d / hz }')"
done
awk -v t="$total" -v hz="$hz" -v l="$line" -v w="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
  'BEGIN { printf "cpu_s total=%.2f%s wall_s=%.1f\n", t / hz, l, w }'
exit "$rc"
