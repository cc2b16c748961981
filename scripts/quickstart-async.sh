#!/usr/bin/env bash
# The asynchronous invocation quickstart, on the embedded defaults (no
# broker, no database): the example function, Sluice running
# examples/async/quickstart, tasks submitted with curl, their states,
# results and dead letters, pause/cancel/resume, and the task metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=$(date +%s)
FNPORT=${FNPORT:-8080}
ADMIN=${ADMIN:-127.0.0.1:8090}
KEY=quickstart-demo-key-0001
OUT=.quickstart/async-$RUN
mkdir -p "$OUT" bin

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
port_free() { ! (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }
for a in "127.0.0.1:$FNPORT" "$ADMIN"; do
  port_free "$a" || { echo "port $a is in use; set FNPORT=… or ADMIN=host:port" >&2; exit 1; }
done
api() { curl -sS -H "Authorization: Bearer $KEY" "$@"; echo; }
invoke() { api -X POST "http://$ADMIN/v1/functions/greet/invocations" "$@"; }
tasks() { bin/sluice tasks --api "$ADMIN" --key "$KEY" "$@"; }
task_id() { sed -n 's/.*"taskId":"\([^"]*\)".*/\1/p'; }

step "Building sluice and the example function"
go build -o bin/ ./cmd/sluice ./examples/function

pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

step "Starting the example function on 127.0.0.1:$FNPORT (20% transient 503s, rejects poison-* ids)"
bin/function -addr "127.0.0.1:$FNPORT" -fail-rate 0.2 -poison-prefix poison- -latency 50ms 2>"$OUT/function.log" &
pids+=($!)

mkdir -p "$OUT/config"
sed -e "s/127.0.0.1:8080/127.0.0.1:$FNPORT/" examples/async/quickstart/sluice.yaml >"$OUT/config/sluice.yaml"
step "Validating and starting Sluice (task queue and store embedded in $OUT/data)"
bin/sluice validate "$OUT/config"
bin/sluice run "$OUT/config" --data-dir "$OUT/data" --admin-addr "$ADMIN" >"$OUT/sluice.out" 2>"$OUT/sluice.log" &
pids+=($!)
for _ in $(seq 1 120); do
  curl -fsS "http://$ADMIN/readyz" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fsS "http://$ADMIN/readyz"; echo

step "Submitting invocations (each answered 202 once durably queued)"
echo "A JSON body:"
FIRST=$(invoke -H "Content-Type: application/json" -d '{"name": "Ada"}' | tee /dev/stderr | task_id)
echo "The same request again with an Idempotency-Key, twice (the second is a duplicate: 200, same task):"
invoke -H "Content-Type: application/json" -H "Idempotency-Key: order-42" -d '{"name": "Grace"}'
invoke -H "Content-Type: application/json" -H "Idempotency-Key: order-42" -d '{"name": "Grace"}'
echo "A CloudEvent in binary mode (its id deduplicates too):"
invoke -H "ce-specversion: 1.0" -H "ce-id: evt-1" -H "ce-source: /quickstart" -H "ce-type: com.example.greeting" \
  -H "Content-Type: application/json" -d '{"name": "Linus"}'
echo "Plain text:"
invoke -H "Content-Type: text/plain" -d 'hello'
echo "A poison request the function refuses for good (400):"
POISON=$(invoke -H "Content-Type: application/json" -d '{"id": "poison-1"}' | tee /dev/stderr | task_id)
echo "Ten more:"
for i in $(seq 1 10); do invoke -H "Content-Type: application/json" -d "{\"name\": \"user-$i\"}" >/dev/null; done
echo "(submitted)"
echo "Refusals: no key (401), unknown function (404), too large (413):"
curl -sS -X POST "http://$ADMIN/v1/functions/greet/invocations" -d '{}'; echo
api -X POST "http://$ADMIN/v1/functions/nope/invocations" -d '{}'
head -c 70000 /dev/zero | tr '\0' 'x' | api -X POST "http://$ADMIN/v1/functions/greet/invocations" --data-binary @-

step "The first task right away (sluice tasks get $FIRST)"
tasks get "$FIRST"

step "Waiting for every task to finish"
for _ in $(seq 1 120); do
  left=$(tasks list --state queued,running,retrying --limit 1000 | grep -c '"id"' || true)
  [ "$left" = 0 ] && break
  sleep 0.5
done
echo "id  function  state  attempts:"
tasks list --limit 1000 | grep -E '^      "(id|function|state|attempts)"' | sed -e 's/^ *"[a-z]*": //' -e 's/[",]//g' | paste - - - -

step "The first task's result and stage timestamps"
tasks get "$FIRST"

step "The poison task: failed, then dead-lettered to the onFailure route"
tasks get "$POISON" | grep -E '"(state|attempts|error|lastStatus)"'
echo "Its dead letter, as written to Sluice's standard output:"
grep '"sluicereason"' "$OUT/sluice.out" | head -n 1 || true

step "Pause the function, submit, cancel one task, resume"
api -X POST "http://$ADMIN/v1/functions/greet:pause"
P1=$(invoke -H "Content-Type: application/json" -d '{"name": "paused-1"}' | task_id)
P2=$(invoke -H "Content-Type: application/json" -d '{"name": "paused-2"}' | task_id)
tasks get "$P1" | grep '"state"'
tasks cancel "$P2" | grep '"state"'
api -X POST "http://$ADMIN/v1/functions/greet:resume"
for _ in $(seq 1 60); do
  tasks get "$P1" | grep -q '"succeeded"' && break
  sleep 0.5
done
tasks get "$P1" | grep '"state"'

step "Task metrics at http://$ADMIN/metrics"
curl -fsS "http://$ADMIN/metrics" | grep -E '^sluice_(task_submissions_total|tasks\{)' | grep -v ' 0$' || true

step "Stopping Sluice (SIGTERM: running tasks finish, the rest stay queued)"
cleanup
trap - EXIT
tail -n 3 "$OUT/sluice.log"
echo
echo "Done. Logs, the configuration and the data directory are in $OUT/."
