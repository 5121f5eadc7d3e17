#!/usr/bin/env bash
# An independent check of `nox -s bench`'s ProxyOverhead ratios: plain redis-benchmark
# commands with request counts chosen by hand, no project code but `python -m lab up/down`.
# Mirror on, Envoy --concurrency 2 (compare with that section of reports/benchmarks.md).
#
#   REDIS_MESH_LAB_HOME=... benchmarks/by_hand.sh [reps]
set -euo pipefail
REPS=${1:-3}
NAME=bench-by-hand
PY=${PYTHON:-python3}
$PY -m lab up --name "$NAME" --envoy-concurrency 2 --quiet
trap '$PY -m lab down --name "$NAME" --quiet' EXIT
read -r PROXY SEED DIR NODES < <($PY -m lab status --name "$NAME" --json | $PY -c '
import json, sys
s = json.load(sys.stdin)
nodes = [n["port"] for sh in s["shards"] for n in [sh["master"], *sh["replicas"]]]
print(s["proxy"]["port"], s["shards"][0]["master"]["port"], s["directory"],
      ",".join(map(str, nodes)))')
# as `nox -s bench` does by default: the tutorial's appendonly yes off on every node while
# measuring (lab/bench/persistence.py), as the lab's admin user
for port in ${NODES//,/ }; do
  REDISCLI_AUTH=$(cat "$DIR/admin.password") redis-cli --user rml-admin -p "$port" \
    config set appendonly no >/dev/null
done
echo "lab $NAME: proxy 127.0.0.1:$PROXY, --cluster seed 127.0.0.1:$SEED; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
# requests per run, by hand, per path: every run lasts ~8 s at this machine's rates (2 cores,
# quiet), so redis-benchmark's summary clock, which with client threads (--cluster) is rounded
# up to its 250 ms tick, is off by at most 3% (the bench reads the ticks instead: see README)
declare -A PN=([set1]=400000 [get1]=640000 [incr1]=430000 [mset1]=130000
               [set16]=1400000 [get16]=2800000 [incr16]=1200000 [mset16]=150000)
declare -A DN=([set1]=1000000 [get1]=1100000 [incr1]=1000000 [mset1]=400000
               [set16]=4000000 [get16]=8000000 [incr16]=3500000 [mset16]=500000)
rps() {  # target-args... -> rps and seconds of one run
  local n=$1; shift
  redis-benchmark "$@" -c 50 -n "$n" -r 100000 --csv 2>/dev/null | awk -F'","' -v n="$n" \
    'NR>1 && /^"/ {gsub(/"/,"",$2); printf "%s %.2f\n", $2, n/$2}' | tail -1
}
ROWS=$(mktemp)
trap '$PY -m lab down --name "$NAME" --quiet; rm -f "$ROWS"' EXIT
printf '%-8s %-3s %-4s %10s %6s %10s %6s %6s\n' test P rep proxy s direct s ratio
for P in 1 16; do
  for t in set get incr mset; do
    for rep in $(seq 1 "$REPS"); do
      pn=${PN[$t$P]}
      dn=${DN[$t$P]}
      if (( rep % 2 )); then
        read -r p ps < <(rps "$pn" -h 127.0.0.1 -p "$PROXY" -P "$P" -t "$t")
        read -r d ds < <(rps "$dn" -h 127.0.0.1 -p "$SEED" --cluster -P "$P" -t "$t")
      else
        read -r d ds < <(rps "$dn" -h 127.0.0.1 -p "$SEED" --cluster -P "$P" -t "$t")
        read -r p ps < <(rps "$pn" -h 127.0.0.1 -p "$PROXY" -P "$P" -t "$t")
      fi
      printf '%-8s %-3s %-4s %10s %6s %10s %6s %6.2f\n' "$t" "$P" "$rep" "$p" "$ps" "$d" \
        "$ds" "$(echo "$p / $d" | bc -l)" | tee -a "$ROWS"
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "median ratio (min-max) per test:"
$PY - "$ROWS" <<'PY'
import statistics, sys
ratios = {}
for line in open(sys.argv[1]):
    test, pipeline, _, _, _, _, _, ratio = line.split()
    ratios.setdefault(f"{test.upper()} P{pipeline}", []).append(float(ratio))
for case, values in ratios.items():
    print(f"  {case:<10} {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
PY
