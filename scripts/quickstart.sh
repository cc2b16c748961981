#!/usr/bin/env bash
# make quickstart-kafka: a local Kafka, the example CloudEvents function, Sluice
# running examples/quickstart, and 20 sample orders (2 of them poison).
# Shows the results topic, the dead letters with their reasons, the
# function's log and where /metrics is.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=$(date +%s)
FNPORT=${FNPORT:-8080}
ADMIN=${ADMIN:-127.0.0.1:8090}
K=127.0.0.1:9092
OUT=.quickstart/$RUN
mkdir -p "$OUT" bin

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
port_free() { ! (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }
for a in "127.0.0.1:$FNPORT" "$ADMIN"; do
  port_free "$a" || { echo "port $a is in use; set FNPORT=… or ADMIN=host:port" >&2; exit 1; }
done

step "Starting Kafka (scripts/brokers.sh up kafka)"
scripts/brokers.sh up kafka

step "Building sluice, the example function and kafkactl"
go build -o bin/ ./cmd/sluice ./examples/function ./examples/kafkactl

step "Creating topics orders-$RUN, orders-results-$RUN, orders-dlq-$RUN"
bin/kafkactl -brokers $K create -topic "orders-$RUN,orders-results-$RUN,orders-dlq-$RUN" -partitions 4

pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

step "Starting the example function on 127.0.0.1:$FNPORT (20% transient 503s, rejects poison-* ids)"
bin/function -addr "127.0.0.1:$FNPORT" -fail-rate 0.2 -poison-prefix poison- -latency 20ms 2>"$OUT/function.log" &
pids+=($!)

sed -e "s/@RUN@/$RUN/g" -e "s/@FNPORT@/$FNPORT/g" examples/quickstart/pipeline.yaml.tmpl >"$OUT/pipeline.yaml"
step "Validating and starting Sluice ($OUT/pipeline.yaml)"
bin/sluice validate "$OUT/pipeline.yaml"
bin/sluice run "$OUT/pipeline.yaml" --admin-addr "$ADMIN" >"$OUT/sluice.out" 2>"$OUT/sluice.log" &
pids+=($!)
for _ in $(seq 1 120); do
  curl -fsS "http://$ADMIN/readyz" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fsS "http://$ADMIN/readyz"; echo

step "Producing 20 orders (2 poison)"
bin/kafkactl -brokers $K produce -topic "orders-$RUN" -n 20 -poison 2

step "Results arriving in orders-results-$RUN"
bin/kafkactl -brokers $K consume -topic "orders-results-$RUN" -n 18 -timeout 90s

step "Dead letters in orders-dlq-$RUN (with sluicereason, after the function's 400)"
bin/kafkactl -brokers $K consume -topic "orders-dlq-$RUN" -n 2 -timeout 60s

step "The function's log (last 8 lines of $OUT/function.log)"
tail -n 8 "$OUT/function.log"

step "Metrics at http://$ADMIN/metrics"
curl -fsS "http://$ADMIN/metrics" | grep -E '^sluice_(events_processed_total|retries_total|dead_letters_total|flow_limit)' || true

step "Stopping Sluice (SIGTERM: drain, commit, exit 0)"
cleanup
trap - EXIT
tail -n 3 "$OUT/sluice.log"
echo
echo "Done. Logs and the pipeline are in $OUT/. Kafka keeps running; stop it with: make brokers-down"
