#!/usr/bin/env bash
# Tailor on one node, offline, in a temporary folder: no cluster, no containers.
#
#   1. builds the operator and the agent;
#   2. lays out the filesystem of node demo-node-1 as the kubelet and containerd would: CRI
#      stdout/stderr files under /var/log/pods, an emptyDir volume under /var/lib/kubelet/pods,
#      a container's writable layer under /run/containerd (for the pods of
#      config/samples/demo-cluster/);
#   3. renders config/samples/ (a LogCollectionConfig, a LogBackupPolicy, Nodes, Pods) with
#      `tailor-operator render`, as the operator would in a cluster;
#   4. runs the real `tailor-agent run --config` on it, writes more lines while it runs, stops it
#      with SIGTERM, writes more, runs it again and stops it again;
#   5. shows the collected events and the backup tree, checks that every line was collected once
#      (none lost, none repeated across the restart) and nothing else was, and prints a summary.
#
# Exits non-zero when a check fails. TAILOR_DEMO_DIR=DIR uses DIR instead of a new temp folder.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

NODE=demo-node-1
WORK=${TAILOR_DEMO_DIR:-$(mktemp -d -t tailor-demo.XXXXXX)}
mkdir -p "$WORK"
if [ -n "$(ls -A "$WORK")" ]; then echo "demo: $WORK is not empty; give an empty or new folder" >&2; exit 2; fi
HOST=$WORK/host
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
OPERATOR=$TARGET_DIR/debug/tailor-operator
AGENT=$TARGET_DIR/debug/tailor-agent
METRICS_PORT=$((20000 + RANDOM % 20000))
AGENT_PID=

if [ -t 1 ]; then bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }; else bold() { printf '\n== %s\n' "$*"; }; fi
stop_agent() {
  [ -n "$AGENT_PID" ] || return 0
  kill -TERM "$AGENT_PID" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$AGENT_PID" 2>/dev/null; then
    echo "agent did not stop within 30 s of SIGTERM: killing it" >&2
    kill -KILL "$AGENT_PID" 2>/dev/null || true
  fi
  wait "$AGENT_PID" 2>/dev/null && AGENT_STATUS=0 || AGENT_STATUS=$?
  AGENT_PID=
}
trap stop_agent EXIT

# --- 1. build -----------------------------------------------------------------------------------
bold "1/5 Building tailor-operator and tailor-agent (debug)"
cargo build --locked -q -p tailor-operator -p tailor-agent
echo "  $OPERATOR"
echo "  $AGENT"

# --- 2. the node's filesystem ------------------------------------------------------------------
bold "2/5 Laying out node $NODE's filesystem in $HOST"
# UIDs and container IDs as in config/samples/demo-cluster/pods.yaml.
CHECKOUT_POD=checkout-6d9f7b8c4-k2x7p
CHECKOUT_UID=1f0c2a3e-5b6d-4c7e-8f90-a1b2c3d4e5f6
CHECKOUT_ID=5c7456d0f67cc5693abda85079a82e02f62f69d30b1defea278ac424ad10914b
SIDECAR_ID=eae7c8a1f6a8ea782e523ff355da5bcafbd20488361362040b000913ce0bfebd
DEBUG_ID=cb72b8904f4be33591bcbbaed1e2e5216e385515dae4d40e4a2803f1544d828d
PAYMENTS_UID=2a1b3c4d-6e7f-4a8b-9c0d-e1f2a3b4c5d6
PAYMENTS_ID=10c386cf346a9c385a65533c78c6d2c53e711f337de4b4d41bf3450aaf46d7a3
DEBUG_UID=4c3d5e6f-8091-4cad-be2f-a3b4c5d6e7f8

CHECKOUT_LOGS=$HOST/var/log/pods/shop_${CHECKOUT_POD}_${CHECKOUT_UID}
CHECKOUT_STDIO=$CHECKOUT_LOGS/app/0.log
SIDECAR_STDIO=$CHECKOUT_LOGS/istio-proxy/0.log
CHECKOUT_FILE=$HOST/var/lib/kubelet/pods/$CHECKOUT_UID/volumes/kubernetes.io~empty-dir/logs/checkout.log
PAYMENTS_STDIO=$HOST/var/log/pods/shop_payments-0_${PAYMENTS_UID}/app/1.log
TASKS=$HOST/run/containerd/io.containerd.runtime.v2.task/k8s.io
PAYMENTS_ROOTFS=$TASKS/$PAYMENTS_ID/rootfs
PAYMENTS_FILE=$PAYMENTS_ROOTFS/opt/logs/payments.log
DEBUG_STDIO=$HOST/var/log/pods/shop_debug-shell_${DEBUG_UID}/shell/0.log
mkdir -p "$(dirname "$CHECKOUT_STDIO")" "$(dirname "$SIDECAR_STDIO")" "$(dirname "$CHECKOUT_FILE")" \
  "$(dirname "$PAYMENTS_STDIO")" "$(dirname "$PAYMENTS_FILE")" "$(dirname "$DEBUG_STDIO")" "$HOST/etc"
# Every running container has a root filesystem (here: empty but for what the test writes).
for id in "$CHECKOUT_ID" "$SIDECAR_ID" "$DEBUG_ID"; do mkdir -p "$TASKS/$id/rootfs/tmp"; done

SEQ=0
# A CRI log line: <RFC3339Nano> <stream> <F|P> <message>.
cri() { SEQ=$((SEQ + 1)); printf '2026-11-25T09:%02d:%02d.%09dZ %s %s %s\n' $((SEQ / 60 % 60)) $((SEQ % 60)) "$SEQ" "$2" "$3" "$4" >>"$1"; }
checkout_out() { cri "$CHECKOUT_STDIO" stdout F "{\"ts\":\"2026-11-25T09:00:00Z\",\"level\":\"info\",\"msg\":\"order placed\",\"order\":\"$1\"}"; }
checkout_file() { printf '2026-11-25 09:00:00.000 INFO  [http-1] shop.Checkout - order shipped %s\n' "$1" >>"$CHECKOUT_FILE"; }
payments_file() { printf '2026-11-25T09:00:00Z payment settled %s\n' "$1" >>"$PAYMENTS_FILE"; }

for i in 001 002 003; do checkout_out "ck-out-$i"; done
cri "$CHECKOUT_STDIO" stderr F '{"ts":"2026-11-25T09:00:04Z","level":"warn","msg":"slow payment provider","order":"ck-err-001"}'
cri "$CHECKOUT_STDIO" stdout F '{"ts":"2026-11-25T09:00:05Z","msg":"GET /healthz 200","order":"ck-health-001"}'
# One message the runtime split in two (P = partial, F = final part).
cri "$CHECKOUT_STDIO" stdout P '{"ts":"2026-11-25T09:00:06Z","msg":"a long line the runtime '
cri "$CHECKOUT_STDIO" stdout F 'split in two","order":"ck-out-partial"}'
cri "$SIDECAR_STDIO" stdout F '[2026-11-25T09:00:01Z] "GET /cart" 200 sidecar-excluded-001'
cri "$DEBUG_STDIO" stdout F 'debug-excluded-001 / # ls'
cri "$HOST/var/log/pods/shop_payments-0_${PAYMENTS_UID}/app/0.log" stdout F '{"msg":"before the restart","order":"pay-out-000"}'
cri "$PAYMENTS_STDIO" stdout F '{"ts":"2026-11-25T09:05:01Z","msg":"payments ready","order":"pay-out-001"}'

checkout_file ck-file-001
cat >>"$CHECKOUT_FILE" <<'EOF'
2026-11-25 09:00:02.456 ERROR [http-2] shop.Checkout - payment failed ck-file-002
java.lang.IllegalStateException: card declined
	at shop.checkout.Payment.charge(Payment.java:42)
	at shop.checkout.Api.post(Api.java:17)
Caused by: shop.psp.Declined: insufficient funds
	at shop.psp.Client.call(Client.java:88)
	... 12 more
EOF
checkout_file ck-file-003
payments_file pay-file-001
# A hostile symlink inside the container: it must resolve inside the container's root, never to
# the host's file of the same name.
echo "HOST-SECRET-must-never-be-read" >"$HOST/etc/demo-host-secret"
ln -s /etc/demo-host-secret "$PAYMENTS_ROOTFS/opt/logs/escape.log"

(cd "$HOST" && find . -type f -o -type l | sed 's|^\./|  /|' | sort)

# --- 3. render ----------------------------------------------------------------------------------
bold "3/5 Rendering config/samples/ offline: tailor-operator render -f config/samples/"
"$OPERATOR" render -f config/samples/ >"$WORK/rendered.yaml"
awk '/^kind:/ {kind=$2} /^  name:/ && kind {print "  " kind "/" $2; kind=""} /^  targetCount:/ {print "    targets: " $2}' "$WORK/rendered.yaml"
echo "  (full output: $WORK/rendered.yaml)"
grep -q "name: $NODE" "$WORK/rendered.yaml" || { echo "render produced no NodeLogConfig for $NODE" >&2; exit 1; }

# --- 4. run the agent ---------------------------------------------------------------------------
run_agent() {
  NO_COLOR=1 "$AGENT" run --node-name "$NODE" --host-root "$HOST" --state-dir "$WORK/state" \
    --output-dir "$WORK/output" --backup-root "$WORK/backups" --config "$WORK/rendered.yaml" \
    --metrics-addr "127.0.0.1:$METRICS_PORT" --checkpoint-interval 1s >>"$WORK/agent.log" 2>&1 &
  AGENT_PID=$!
}
bold "4/5 Running tailor-agent for $NODE (log: $WORK/agent.log)"
echo "  run 1: starts, reads what is there, then tails lines written while it runs"
run_agent
sleep 2
for i in 004 005 006; do checkout_out "ck-out-$i"; checkout_file "ck-file-$i"; sleep 0.3; done
payments_file pay-file-002
sleep 3
METRICS=$(curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null || true)
stop_agent
echo "  run 1: stopped with SIGTERM, exit status $AGENT_STATUS"
RUN1_STATUS=$AGENT_STATUS

echo "  while it is down: more lines are written"
for i in 007 008; do checkout_out "ck-out-$i"; checkout_file "ck-file-$i"; done
payments_file pay-file-003

echo "  run 2: resumes from its checkpoints"
run_agent
sleep 4
stop_agent
echo "  run 2: stopped with SIGTERM, exit status $AGENT_STATUS"
RUN2_STATUS=$AGENT_STATUS

# --- 5. results ---------------------------------------------------------------------------------
bold "5/5 Results"
echo "Collected events (file output, NDJSON per target under $WORK/output):"
if [ -d "$WORK/output" ]; then
  find "$WORK/output" -type f | sort | while read -r f; do
    printf '  %-90s %4d events\n' "${f#"$WORK"/output/}" "$(wc -l <"$f")"
  done
  first=$(find "$WORK/output" -type f | sort | head -n 1)
  if [ -n "$first" ]; then
    echo "First events of ${first#"$WORK"/output/}:"
    head -n 3 "$first" | cut -c1-300 | sed 's/^/  /'
  fi
fi
echo
echo "Backup tree ($WORK/backups):"
if [ -d "$WORK/backups" ]; then
  (cd "$WORK/backups" && find . -type f -printf '  %p  %s bytes\n' | sort)
fi
echo
echo "The backup as its CLI shows it (tailor-agent backups list / grep, also run in the agent's pod):"
"$AGENT" backups list --backup-root "$WORK/backups" 2>&1 | sed 's/^/  /' || true
"$AGENT" backups grep --backup-root "$WORK/backups" --namespace shop 'payment failed|card declined' 2>&1 | sed 's/^/  /' || true
echo
echo "Checkpoints ($WORK/state):"
if [ -d "$WORK/state" ]; then (cd "$WORK/state" && find . -type f -printf '  %p  %s bytes\n' | sort); fi
if [ -n "$METRICS" ]; then
  echo
  echo "Some metrics (run 1, http://127.0.0.1:$METRICS_PORT/metrics):"
  grep -E '^tailor_' <<<"$METRICS" | head -n 12 | sed 's/^/  /'
fi

# --- checks -------------------------------------------------------------------------------------
PASS=0
FAIL=0
check() {
  if eval "$2"; then PASS=$((PASS + 1)); echo "  ok    $1"; else FAIL=$((FAIL + 1)); echo "  FAIL  $1"; fi
}
# Events whose text holds a marker (each marker is written on exactly one line / one event).
count() { if [ -d "$WORK/output" ]; then { grep -rhF -- "$1" "$WORK/output" || true; } | wc -l; else echo 0; fi; }
never() { [ "$(count "$1")" -eq 0 ]; }
EXPECTED=(ck-out-001 ck-out-002 ck-out-003 ck-out-004 ck-out-005 ck-out-006 ck-out-007 ck-out-008
  ck-err-001 ck-out-partial ck-file-001 ck-file-002 ck-file-003 ck-file-004 ck-file-005
  ck-file-006 ck-file-007 ck-file-008 pay-out-001 pay-file-001 pay-file-002 pay-file-003)
MISSING=()
REPEATED=()
for m in "${EXPECTED[@]}"; do
  n=$(count "$m")
  [ "$n" -eq 0 ] && MISSING+=("$m")
  [ "$n" -gt 1 ] && REPEATED+=("$m x$n")
done
# Occurrences of a marker in the backup tree, compressed files included.
backup_count() {
  [ -d "$WORK/backups" ] || { echo 0; return; }
  find "$WORK/backups" -type f ! -name '.tailor-*' | while read -r f; do
    case "$f" in
      *.zst) zstd -dcq "$f" ;;
      *.gz) gzip -dc "$f" ;;
      *) cat "$f" ;;
    esac
  done | grep -cF -- "$1" || true
}
BACKUP_MISSING=()
BACKUP_REPEATED=()
for m in ck-out-001 ck-out-008 ck-err-001 ck-file-001 ck-file-008 'Client.java:88'; do
  n=$(backup_count "$m")
  [ "$n" -eq 0 ] && BACKUP_MISSING+=("$m")
  [ "$n" -gt 1 ] && BACKUP_REPEATED+=("$m x$n")
done
BACKUP_FILES=$( [ -d "$WORK/backups" ] && find "$WORK/backups" -type f | wc -l || echo 0)

bold "Checks"
check "render: a NodeLogConfig for $NODE and a LogBackup for it" "grep -q 'kind: LogBackup$' '$WORK/rendered.yaml'"
check "agent exited cleanly on SIGTERM (both runs)" "[ $RUN1_STATUS -eq 0 ] && [ $RUN2_STATUS -eq 0 ]"
check "every line written was collected (${#EXPECTED[@]} markers; missing: ${MISSING[*]:-none})" "[ ${#MISSING[@]} -eq 0 ]"
check "nothing collected twice across the restart (repeated: ${REPEATED[*]:-none})" "[ ${#REPEATED[@]} -eq 0 ]"
check "the Java stack trace is one event (multiline)" "grep -rhF 'card declined' '$WORK/output' 2>/dev/null | grep -F 'Client.java:88' | grep -qF '12 more'"
check "the line the runtime split (CRI partial) is one event" "grep -rhF ck-out-partial '$WORK/output' 2>/dev/null | grep -qF 'runtime split in two'"
check "the health-check line was filtered out" "never ck-health-001"
check "the excluded sidecar container was not collected" "never sidecar-excluded-001"
check "the pod labelled logging=off was not collected" "never debug-excluded-001"
check "the hostile symlink did not read the host's file" "never HOST-SECRET"
check "the backup tree holds the checkout pod's files" "[ -d '$WORK/backups' ] && find '$WORK/backups' -type f -path '*checkout*' | grep -q ."
check "the backup holds every line of the checkout pod (missing: ${BACKUP_MISSING[*]:-none})" "[ ${#BACKUP_MISSING[@]} -eq 0 ]"
check "the backup holds each line once across the restart (repeated: ${BACKUP_REPEATED[*]:-none})" "[ ${#BACKUP_REPEATED[@]} -eq 0 ]"
check "no backup reported an error" "! grep -E 'phase=(Degraded|Failed)' '$WORK/agent.log' >/dev/null"
check "the backup holds no pod the policy does not select" "! { [ -d '$WORK/backups' ] && find '$WORK/backups' -path '*payments*' | grep -q .; }"

EVENTS=$( [ -d "$WORK/output" ] && find "$WORK/output" -type f -exec cat {} + | wc -l || echo 0)
bold "Summary"
echo "  node $NODE: $(grep -c '^kind:' "$WORK/rendered.yaml") objects rendered, $EVENTS events collected, $BACKUP_FILES files backed up"
echo "  everything is in $WORK"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
