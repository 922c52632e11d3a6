#!/usr/bin/env bash
# Metrics overhead on the hot path: hibiki with /metrics on vs --no-metrics, alternating in one
# session (server pinned to CPU 0, load to CPU 1), N=1000 receivers, 4 senders, 32 in flight each.
# Needs node (the load generator's workers) and curl.
cd "$(dirname "$0")/.."
for round in 1 2; do
  for mode in on off; do
    rm -f "${TMPDIR:-/tmp}"/mab.db*
    flag=""; [ $mode = off ] && flag="--no-metrics"
    taskset -c 0 .venv/bin/hibiki serve --port 18900 --db "${TMPDIR:-/tmp}"/mab.db --rate-limit 0 --max-connections-per-address 0 --max-pending-per-address 0 --log-level WARNING $flag > "${TMPDIR:-/tmp}"/mab.log 2>&1 &
    pid=$!
    for i in $(seq 50); do curl -s localhost:18900/healthz >/dev/null && break; sleep 0.1; done
    taskset -c 1 .venv/bin/python scripts/loadgen.py --url ws://127.0.0.1:18900 --receivers 1000 --senders 4 --window 32 --duration 6 --server-pid $pid --json-out "${TMPDIR:-/tmp}"/mab-$mode-$round.json >/dev/null 2>&1
    kill -TERM $pid; wait $pid
    .venv/bin/python -c "import json;r=json.load(open('"${TMPDIR:-/tmp}"/mab-$mode-$round.json'));print('$mode', $round, round(r['deliveries_per_s']), r['server_cpu_us_per_delivery'], r['client_limited'])"
  done
done
