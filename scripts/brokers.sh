#!/usr/bin/env bash
# Real brokers for Sluice's tests and benchmarks, on 127.0.0.1, without Docker.
#
#   scripts/brokers.sh up      [kafka|rocketmq|rocketmq-acl|rabbitmq|postgres|all]...   install if missing, start, wait until ready
#   scripts/brokers.sh down    [NAME|all]...   stop (data is kept)
#   scripts/brokers.sh status  [NAME|all]...   one line per broker; exit 1 if any is not running
#   scripts/brokers.sh start   NAME            same as up NAME
#   scripts/brokers.sh stop    NAME            same as down NAME
#   scripts/brokers.sh restart NAME            stop then start, keeping the data
#   scripts/brokers.sh kill    NAME            SIGKILL the broker (a crash, for fault tests); start brings it back
#   scripts/brokers.sh clean   [NAME|all]...   stop and delete the data
#   scripts/brokers.sh rocketmq-topic TOPIC [QUEUES]   create/update a RocketMQ topic (default 4 queues)
#   scripts/brokers.sh env                     print the SLUICE_* variables the tests read
#
# NAME for start/stop/restart/kill may also be rocketmq-namesrv or rocketmq-broker.
# rocketmq-acl is a second, separate RocketMQ (name server 9877, broker 10921) with ACL 2.0
# authentication on, for the ACL tests; the main one stays open for every other test.
# With no NAME, up/down/status/clean act on all five.
#
# Kafka and RocketMQ run from Maven Central jars (fetched once into
# ${XDG_CACHE_HOME:-$HOME/.cache}/sluice), RabbitMQ and PostgreSQL from Debian packages.
# State, data, logs and pid files live in $SLUICE_BROKERS_DIR (default <repo>/.brokers).
# See docs/brokers.md.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ASSETS="$REPO_ROOT/scripts/brokers"
STATE="$(realpath -m "${SLUICE_BROKERS_DIR:-$REPO_ROOT/.brokers}")"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/sluice"
DEADLINE="${SLUICE_BROKERS_DEADLINE:-120}" # seconds, per broker
ALL=(kafka rocketmq rocketmq-acl rabbitmq postgres)

HOST=127.0.0.1
KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093
# RocketMQ: the ports and names of the open instance; rmq_use switches the RMQ_* globals
# between it and the ACL instance.
RMQ_OPEN_NAMESRV_PORT=9876
RMQ_OPEN_BROKER_PORT=10911
RMQ_ACL_NAMESRV_PORT=9877
RMQ_ACL_BROKER_PORT=10921 # also 10919 (fast channel) and 10922 (HA)
# The ACL instance's one (super) user; test credentials, nothing secret.
RMQ_ACL_ACCESS_KEY=sluiceadmin
RMQ_ACL_SECRET_KEY=sluiceadminsecret
RABBIT_PORT=5672
RABBIT_TLS_PORT=5671
PG_PORT=5433
PG_DB=sluice
PG_USER=sluice
PG_PASSWORD=sluice

# JDK 17 flags RocketMQ needs (it reaches into java.nio and friends).
RMQ_JDK17_OPTS=(
  --add-exports java.base/jdk.internal.ref=ALL-UNNAMED
  --add-opens java.base/java.nio=ALL-UNNAMED
  --add-opens java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens java.base/java.util=ALL-UNNAMED
  --add-opens java.base/java.lang=ALL-UNNAMED
)
# Short-lived helper JVMs start faster this way.
HELPER_JVM_OPTS=(-Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true)

# ----------------------------------------------------------------------------
# small utilities

say() { printf '%s\n' "$*"; }
warn() { printf 'brokers.sh: %s\n' "$*" >&2; }
die() { warn "$*"; exit 1; }

now_ms() { date +%s%3N; }
elapsed() { # START_MS -> "12.3s"
  local d=$(($(now_ms) - $1))
  printf '%d.%ds' $((d / 1000)) $(((d % 1000) / 100))
}

# Prints the last 40 lines of each existing log with its path.
show_logs() {
  local f
  for f in "$@"; do
    [[ -n "$f" && -f "$f" ]] || continue
    warn "---- last 40 lines of $f ----"
    tail -n 40 "$f" >&2 || true
    warn "---- end of $f ----"
  done
}

# fail NAME MESSAGE LOG...: report a start failure with the logs, exit 1.
fail() {
  local name=$1 msg=$2
  shift 2
  warn "$name: $msg"
  show_logs "$@"
  warn "$name: failed; log file(s): $*"
  exit 1
}

port_open() { # HOST PORT
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# pid_of PIDFILE [MARKER] -> the pid, if that process is alive and its command line
# mentions MARKER (default: the state dir), so a stale pid file never names a stranger.
pid_of() {
  local f=$1 marker=${2:-$STATE} pid
  [[ -s "$f" ]] || return 1
  pid=$(<"$f")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    local cmd
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ "$cmd" == *"$marker"* ]] || return 1
  fi
  printf '%s' "$pid"
}

# launched PIDFILE: wait until the background launcher recorded there has exec'ed the
# broker (its command line then names the state dir).
launched() {
  local pid i
  pid=$(<"$1")
  for ((i = 0; i < 100; i++)); do
    pid_of "$1" >/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 0 # died: the caller's checks report it
    sleep 0.05
  done
}

# stop_pid NAME PIDFILE: TERM, then KILL after 20 s; removes the pid file.
stop_pid() {
  local name=$1 f=$2 pid i
  if ! pid=$(pid_of "$f"); then
    rm -f "$f"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    warn "$name: pid $pid still running after 20 s, sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$f"
}

# wait_port_free NAME PORT...: after a stop, the ports must be released.
wait_port_free() {
  local name=$1 p i
  shift
  for p in "$@"; do
    for ((i = 0; i < 100; i++)); do
      port_open "$HOST" "$p" || break
      sleep 0.2
    done
    port_open "$HOST" "$p" && warn "$name: port $p is still in use after stop: $(who_listens "$p")"
  done
  return 0
}

who_listens() { # PORT -> description of the listener, if ss can tell
  ss -Hltnp "sport = :$1" 2>/dev/null | head -n 3 | tr -s ' ' || true
}

# refuse_foreign_port NAME LOG PORT...: fail if a port we need is taken by someone else.
refuse_foreign_port() {
  local name=$1 log=$2 p
  shift 2
  for p in "$@"; do
    if port_open "$HOST" "$p"; then
      fail "$name" "port $p is already in use by a process this script did not start: $(who_listens "$p")" "$log"
    fi
  done
}

# probe_watching NAME OUT "PIDFILE..." LOGS -- CMD...: run a readiness probe in the
# background; fail at once if a watched broker process dies meanwhile.
probe_watching() {
  local name=$1 out=$2 pidfiles=$3 logs=$4 f hp rc until
  shift 5
  until=$(($(now_ms) + DEADLINE * 1000 + 10000)) # the probe keeps its own deadline; this is a backstop
  "$@" >"$out" 2>&1 &
  hp=$!
  while kill -0 "$hp" 2>/dev/null; do
    if (($(now_ms) > until)); then
      kill "$hp" 2>/dev/null || true
      wait "$hp" 2>/dev/null || true
      # shellcheck disable=SC2086
      fail "$name" "readiness probe still running after ${DEADLINE}s" $logs "$out"
    fi
    for f in $pidfiles; do
      if ! pid_of "$f" >/dev/null; then
        kill "$hp" 2>/dev/null || true
        wait "$hp" 2>/dev/null || true
        # shellcheck disable=SC2086
        fail "$name" "process ($f) exited during start-up" $logs "$out"
      fi
    done
    sleep 0.3
  done
  rc=0
  wait "$hp" || rc=$?
  if ((rc != 0)); then
    # shellcheck disable=SC2086
    fail "$name" "not ready within ${DEADLINE}s (readiness probe exit $rc)" $logs "$out"
  fi
}

sha12() { cat "$@" | sha256sum | cut -c1-12; }

is_root() { [[ "$(id -u)" == 0 ]]; }

as_root() {
  if is_root; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root to run: $* (run as root or install sudo)"
  fi
}

APT_UPDATED=0
apt_install() { # PACKAGE...: install missing Debian packages, apt-get update once first
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "install ok installed" >/dev/null || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get to install them"
  mkdir -p "$STATE"
  local log="$STATE/apt.log"
  say "installing ${missing[*]} (apt; log $log)"
  if ((APT_UPDATED == 0)); then
    as_root apt-get update >>"$log" 2>&1 || { show_logs "$log"; die "apt-get update failed"; }
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >>"$log" 2>&1 ||
    { show_logs "$log"; die "apt-get install ${missing[*]} failed"; }
}

# ----------------------------------------------------------------------------
# Java toolchain and Maven-fetched classpaths

JAVA_BIN=""
need_java() {
  [[ -n "$JAVA_BIN" ]] && return 0
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/javac" ]]; then
    JAVA_BIN="$JAVA_HOME/bin"
  else
    if ! command -v javac >/dev/null 2>&1; then
      apt_install openjdk-17-jdk-headless
    fi
    JAVA_BIN="$(dirname "$(readlink -f "$(command -v javac)")")"
  fi
  local v
  v=$("$JAVA_BIN/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
  [[ "${v%%.*}" -ge 17 ]] 2>/dev/null || die "Java 17+ needed for Kafka 4 and RocketMQ 5 (found ${v:-none} in $JAVA_BIN)"
  command -v mvn >/dev/null 2>&1 || apt_install maven
}

# fetch_classpath NAME -> prints the lib dir holding the dependencies of scripts/brokers/NAME/pom.xml.
# Cached under $CACHE/NAME-<hash of pom>/lib; Maven's own repository is $CACHE/m2.
fetch_classpath() {
  local name=$1 pom="$ASSETS/$1/pom.xml" dir
  dir="$CACHE/$name-$(sha12 "$pom")"
  if [[ ! -f "$dir/.complete" ]]; then
    need_java
    mkdir -p "$dir" "$STATE"
    rm -rf "${dir:?}/lib" "${dir:?}/lib.tmp"
    local log="$STATE/mvn-$name.log" t0
    t0=$(now_ms)
    if ! mvn -q -B -f "$pom" -Dmaven.repo.local="$CACHE/m2" \
      dependency:copy-dependencies -DoutputDirectory="$dir/lib.tmp" >"$log" 2>&1; then
      show_logs "$log"
      die "$name: fetching jars with Maven failed (log $log)"
    fi
    mv "$dir/lib.tmp" "$dir/lib"
    touch "$dir/.complete"
    # Drop classpaths of older versions of this POM.
    local old
    for old in "$CACHE/$name"-*; do
      [[ "$old" == "$dir" || ! -f "$old/.complete" ]] || rm -rf "$old"
    done
    say "$name: fetched $(find "$dir/lib" -name '*.jar' | wc -l) jars into $dir/lib in $(elapsed "$t0")" >&2
  fi
  printf '%s' "$dir/lib"
}

# compile_helper SOURCE LIBDIR -> prints the classes dir (cached next to LIBDIR by source hash).
compile_helper() {
  local src=$1 lib=$2 out
  out="$(dirname "$lib")/helpers-$(sha12 "$src")"
  if [[ ! -f "$out/.complete" ]]; then
    need_java
    rm -rf "$out"
    mkdir -p "$out"
    "$JAVA_BIN/javac" -nowarn -cp "$lib/*" -d "$out" "$src" >"$out/javac.log" 2>&1 ||
      { cat "$out/javac.log" >&2; die "compiling $src failed"; }
    touch "$out/.complete"
  fi
  printf '%s' "$out"
}

# ----------------------------------------------------------------------------
# Kafka (KRaft, combined broker + controller)

KAFKA_DIR="$STATE/kafka"
KAFKA_PID="$KAFKA_DIR/kafka.pid"
KAFKA_LOG="$KAFKA_DIR/kafka.log"

kafka_probe() { # DEADLINE_SECONDS: readiness probe (foreground)
  local lib helpers
  lib=$(fetch_classpath kafka)
  helpers=$(compile_helper "$ASSETS/kafka/KafkaReady.java" "$lib")
  "$JAVA_BIN/java" "${HELPER_JVM_OPTS[@]}" -Dlog4j2.configurationFile="$ASSETS/kafka/log4j2-tools.properties" \
    -cp "$lib/*:$helpers" KafkaReady "$HOST:$KAFKA_PORT" "$1"
}

kafka_running() { pid_of "$KAFKA_PID" >/dev/null; }

kafka_healthy() {
  kafka_running && port_open "$HOST" "$KAFKA_PORT" && kafka_probe 0 >"$KAFKA_DIR/probe.log" 2>&1
}

kafka_start() {
  local t0 lib helpers
  t0=$(now_ms)
  need_java
  mkdir -p "$KAFKA_DIR"
  if kafka_running; then
    if kafka_healthy; then
      say "kafka     already running (pid $(pid_of "$KAFKA_PID")) at $HOST:$KAFKA_PORT, checked in $(elapsed "$t0")"
      return 0
    fi
    warn "kafka: pid $(pid_of "$KAFKA_PID") is not healthy, restarting it"
    kafka_stop
  fi
  rm -f "$KAFKA_PID"
  refuse_foreign_port kafka "$KAFKA_LOG" "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"
  lib=$(fetch_classpath kafka)
  helpers=$(compile_helper "$ASSETS/kafka/KafkaReady.java" "$lib")
  sed "s|@DATA_DIR@|$KAFKA_DIR/data|g" "$ASSETS/kafka/server.properties.in" >"$KAFKA_DIR/server.properties"
  local -a tool=("$JAVA_BIN/java" "${HELPER_JVM_OPTS[@]}" -Dlog4j2.configurationFile="$ASSETS/kafka/log4j2-tools.properties" -cp "$lib/*" kafka.tools.StorageTool)
  if [[ ! -f "$KAFKA_DIR/data/meta.properties" ]]; then
    # Fresh data dir: format it once. The cluster id is kept next to the data.
    rm -rf "$KAFKA_DIR/data"
    if [[ ! -s "$KAFKA_DIR/cluster.id" ]]; then
      "${tool[@]}" random-uuid >"$KAFKA_DIR/cluster.id.tmp" 2>>"$KAFKA_LOG" ||
        fail kafka "storage tool random-uuid failed" "$KAFKA_LOG"
      tail -n 1 "$KAFKA_DIR/cluster.id.tmp" >"$KAFKA_DIR/cluster.id"
      rm -f "$KAFKA_DIR/cluster.id.tmp"
    fi
    "${tool[@]}" format -c "$KAFKA_DIR/server.properties" -t "$(<"$KAFKA_DIR/cluster.id")" >>"$KAFKA_LOG" 2>&1 ||
      fail kafka "formatting the storage failed" "$KAFKA_LOG"
  fi
  {
    printf '\n===== %s: starting kafka (brokers.sh) =====\n' "$(date -Is)"
  } >>"$KAFKA_LOG"
  (
    cd "$KAFKA_DIR"
    exec setsid "$JAVA_BIN/java" -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError \
      -Djava.awt.headless=true -Dlog4j2.configurationFile="$ASSETS/kafka/log4j2.properties" \
      -Dkafka.logs.dir="$KAFKA_DIR" -cp "$lib/*" kafka.Kafka "$KAFKA_DIR/server.properties" \
      </dev/null >>"$KAFKA_LOG" 2>&1
  ) &
  echo $! >"$KAFKA_PID"
  launched "$KAFKA_PID"
  probe_watching kafka "$KAFKA_DIR/probe.log" "$KAFKA_PID" "$KAFKA_LOG" -- \
    "$JAVA_BIN/java" "${HELPER_JVM_OPTS[@]}" -Dlog4j2.configurationFile="$ASSETS/kafka/log4j2-tools.properties" \
    -cp "$lib/*:$helpers" KafkaReady "$HOST:$KAFKA_PORT" "$DEADLINE"
  say "kafka     ready in $(elapsed "$t0") at $HOST:$KAFKA_PORT (pid $(pid_of "$KAFKA_PID"), log $KAFKA_LOG)"
}

kafka_stop() {
  if kafka_running; then
    stop_pid kafka "$KAFKA_PID"
    wait_port_free kafka "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"
  fi
  rm -f "$KAFKA_PID"
}

kafka_status() {
  if kafka_running && port_open "$HOST" "$KAFKA_PORT"; then
    say "kafka     running  pid $(pid_of "$KAFKA_PID")  $HOST:$KAFKA_PORT (controller :$KAFKA_CONTROLLER_PORT)  log $KAFKA_LOG"
  elif kafka_running; then
    say "kafka     starting/unhealthy  pid $(pid_of "$KAFKA_PID"), port $KAFKA_PORT closed  log $KAFKA_LOG"
    return 1
  else
    say "kafka     stopped"
    return 1
  fi
}

kafka_clean() { kafka_stop; rm -rf "$KAFKA_DIR"; }

# ----------------------------------------------------------------------------
# RocketMQ (name server + one broker, remoting protocol; no proxy)

# rmq_use open|acl: point the RocketMQ globals at one of the two instances. Both share the
# classpaths and templates; each has its own state dir, user.home, ports and cluster.
rmq_use() {
  case "$1" in
    open)
      RMQ_NAME=rocketmq RMQ_DIR="$STATE/rocketmq" RMQ_USER_HOME="$STATE/rocketmq-home"
      RMQ_NAMESRV_PORT=$RMQ_OPEN_NAMESRV_PORT RMQ_BROKER_PORT=$RMQ_OPEN_BROKER_PORT
      RMQ_CLUSTER=DefaultCluster RMQ_BROKER_NAME=broker-a RMQ_ACL=""
      RMQ_NS_HEAP=(-Xms128m -Xmx256m) RMQ_BK_HEAP=(-Xms512m -Xmx512m -XX:MaxDirectMemorySize=512m)
      ;;
    acl)
      RMQ_NAME=rocketmq-acl RMQ_DIR="$STATE/rocketmq-acl" RMQ_USER_HOME="$STATE/rocketmq-acl-home"
      RMQ_NAMESRV_PORT=$RMQ_ACL_NAMESRV_PORT RMQ_BROKER_PORT=$RMQ_ACL_BROKER_PORT
      RMQ_CLUSTER=AclCluster RMQ_BROKER_NAME=broker-acl RMQ_ACL=1
      # Only the ACL tests use it: smaller heaps.
      RMQ_NS_HEAP=(-Xms64m -Xmx128m) RMQ_BK_HEAP=(-Xms256m -Xmx256m -XX:MaxDirectMemorySize=256m)
      ;;
    *) die "rmq_use: unknown instance $1" ;;
  esac
  RMQ_HOME="$RMQ_USER_HOME/rocketmq" # ROCKETMQ_HOME / rocketmq.home.dir: empty is enough
  NS_PID="$RMQ_DIR/namesrv.pid"
  NS_LOG="$RMQ_DIR/namesrv.log"
  BK_PID="$RMQ_DIR/broker.pid"
  BK_LOG="$RMQ_DIR/broker.log"
}
rmq_use open

# rmq_say TEXT...: a status line prefixed with the instance's name.
rmq_say() { say "$(printf '%-9s' "$RMQ_NAME") $*"; }

rmq_admin() { # ARGS...: run the RocketMQAdmin helper (foreground)
  local lib helpers
  lib=$(fetch_classpath rocketmq-tools)
  helpers=$(compile_helper "$ASSETS/rocketmq-tools/RocketMQAdmin.java" "$lib")
  mkdir -p "$RMQ_HOME"
  local -a creds=()
  [[ -z "$RMQ_ACL" ]] || creds=(-Dsluice.accessKey="$RMQ_ACL_ACCESS_KEY" -Dsluice.secretKey="$RMQ_ACL_SECRET_KEY")
  ROCKETMQ_HOME="$RMQ_HOME" "$JAVA_BIN/java" "${HELPER_JVM_OPTS[@]}" "${RMQ_JDK17_OPTS[@]}" \
    -Duser.home="$RMQ_USER_HOME" -Drocketmq.home.dir="$RMQ_HOME" "${creds[@]}" \
    -cp "$lib/*:$helpers" RocketMQAdmin "$@"
}

rmq_render() {
  mkdir -p "$RMQ_DIR/namesrv" "$RMQ_DIR/store" "$RMQ_HOME" "$RMQ_USER_HOME"
  rmq_render_to "$RMQ_DIR"
}

# rmq_render_to DIR: write namesrv.conf and broker.conf for the current instance into DIR.
rmq_render_to() {
  local out=$1
  local -a subst=(-e "s|@ROCKETMQ_HOME@|$RMQ_HOME|g" -e "s|@STATE_DIR@|$RMQ_DIR|g"
    -e "s|@NAMESRV_PORT@|$RMQ_NAMESRV_PORT|g" -e "s|@BROKER_PORT@|$RMQ_BROKER_PORT|g"
    -e "s|@CLUSTER@|$RMQ_CLUSTER|g" -e "s|@BROKER_NAME@|$RMQ_BROKER_NAME|g"
    -e "s|@ACCESS_KEY@|$RMQ_ACL_ACCESS_KEY|g" -e "s|@SECRET_KEY@|$RMQ_ACL_SECRET_KEY|g")
  sed "${subst[@]}" "$ASSETS/rocketmq-namesrv/namesrv.conf.in" >"$out/namesrv.conf"
  if [[ -n "$RMQ_ACL" ]]; then
    sed "${subst[@]}" "$ASSETS/rocketmq-broker/broker.conf.in" "$ASSETS/rocketmq-broker/acl.conf.in" >"$out/broker.conf"
  else
    sed "${subst[@]}" "$ASSETS/rocketmq-broker/broker.conf.in" >"$out/broker.conf"
  fi
}

# rmq_config_changed: the templates now render differently from the configuration the
# running processes were started with (each start renders it), so up must restart them.
rmq_config_changed() {
  local tmp rc=1 f
  tmp=$(mktemp -d)
  rmq_render_to "$tmp"
  for f in namesrv.conf broker.conf; do
    cmp -s "$tmp/$f" "$RMQ_DIR/$f" || rc=0
  done
  rm -rf "$tmp"
  return $rc
}

rmq_namesrv_running() { pid_of "$NS_PID" >/dev/null; }
rmq_broker_running() { pid_of "$BK_PID" >/dev/null; }

rmq_healthy() {
  rmq_namesrv_running && rmq_broker_running && port_open "$HOST" "$RMQ_NAMESRV_PORT" &&
    port_open "$HOST" "$RMQ_BROKER_PORT" &&
    rmq_admin ready "$HOST:$RMQ_NAMESRV_PORT" "$RMQ_CLUSTER" sluice-ready 0 >"$RMQ_DIR/probe.log" 2>&1
}

rmq_namesrv_start() { # UNTIL_MS
  local until=$1 lib
  rmq_namesrv_running && return 0
  rm -f "$NS_PID"
  refuse_foreign_port "$RMQ_NAME" "$NS_LOG" "$RMQ_NAMESRV_PORT"
  lib=$(fetch_classpath rocketmq-namesrv)
  rmq_render
  printf '\n===== %s: starting rocketmq name server (brokers.sh) =====\n' "$(date -Is)" >>"$NS_LOG"
  local mark
  mark=$(wc -l <"$NS_LOG")
  (
    cd "$RMQ_DIR"
    export ROCKETMQ_HOME="$RMQ_HOME"
    exec setsid "$JAVA_BIN/java" -server "${RMQ_NS_HEAP[@]}" -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError \
      "${RMQ_JDK17_OPTS[@]}" -Djava.awt.headless=true \
      -Duser.home="$RMQ_USER_HOME" -Drocketmq.home.dir="$RMQ_HOME" \
      -cp "$lib/*" org.apache.rocketmq.namesrv.NamesrvStartup -c "$RMQ_DIR/namesrv.conf" \
      </dev/null >>"$NS_LOG" 2>&1
  ) &
  echo $! >"$NS_PID"
  launched "$NS_PID"
  wait_log_after "$RMQ_NAME" "$NS_PID" "$NS_LOG" "$mark" "The Name Server boot success" "$until"
}

rmq_broker_start() { # UNTIL_MS
  local until=$1 lib
  rmq_broker_running && return 0
  rm -f "$BK_PID"
  refuse_foreign_port "$RMQ_NAME" "$BK_LOG" "$RMQ_BROKER_PORT"
  lib=$(fetch_classpath rocketmq-broker)
  rmq_render
  printf '\n===== %s: starting rocketmq broker (brokers.sh) =====\n' "$(date -Is)" >>"$BK_LOG"
  local mark
  mark=$(wc -l <"$BK_LOG")
  (
    cd "$RMQ_DIR"
    export ROCKETMQ_HOME="$RMQ_HOME"
    exec setsid "$JAVA_BIN/java" -server "${RMQ_BK_HEAP[@]}" -XX:+UseG1GC \
      -XX:+ExitOnOutOfMemoryError "${RMQ_JDK17_OPTS[@]}" -Djava.awt.headless=true \
      -Duser.home="$RMQ_USER_HOME" -Drocketmq.home.dir="$RMQ_HOME" \
      -Drocketmq.broker.diskSpaceWarningLevelRatio=0.99 \
      -cp "$lib/*" org.apache.rocketmq.broker.BrokerStartup -c "$RMQ_DIR/broker.conf" \
      </dev/null >>"$BK_LOG" 2>&1
  ) &
  echo $! >"$BK_PID"
  launched "$BK_PID"
  wait_log_after "$RMQ_NAME" "$BK_PID" "$BK_LOG" "$mark" "boot success" "$until"
}

# wait_log_after NAME PIDFILE LOG LINE_MARK PATTERN UNTIL_MS: like wait_log, only lines after LINE_MARK count.
wait_log_after() {
  local name=$1 pidfile=$2 log=$3 mark=$4 pattern=$5 until=$6
  while :; do
    tail -n +"$((mark + 1))" "$log" 2>/dev/null | grep -F -- "$pattern" >/dev/null && return 0
    pid_of "$pidfile" >/dev/null || fail "$name" "process exited during start-up" "$log"
    (($(now_ms) < until)) || fail "$name" "no \"$pattern\" in the log within ${DEADLINE}s" "$log"
    sleep 0.2
  done
}

rmq_wait_ready() { # T0_MS
  probe_watching "$RMQ_NAME" "$RMQ_DIR/probe.log" "$NS_PID $BK_PID" "$NS_LOG $BK_LOG" -- \
    rmq_admin ready "$HOST:$RMQ_NAMESRV_PORT" "$RMQ_CLUSTER" sluice-ready "$DEADLINE"
}

rocketmq_start() { # [namesrv|broker]: default both
  local part=${1:-both} t0 until
  t0=$(now_ms)
  until=$((t0 + DEADLINE * 1000))
  need_java
  mkdir -p "$RMQ_DIR"
  if [[ "$part" == both ]] && rmq_namesrv_running && rmq_broker_running; then
    if rmq_config_changed; then
      warn "$RMQ_NAME: running with an older configuration than scripts/brokers/rocketmq-*/*.conf.in; restarting it"
    elif rmq_healthy; then
      rmq_say "already running (name server pid $(pid_of "$NS_PID"), broker pid $(pid_of "$BK_PID")) at $HOST:$RMQ_NAMESRV_PORT, checked in $(elapsed "$t0")"
      return 0
    else
      warn "$RMQ_NAME: running but not healthy, restarting it"
    fi
    rocketmq_stop
  fi
  # Fetch every classpath before starting anything, so the first start is not timed against downloads.
  fetch_classpath rocketmq-namesrv >/dev/null
  fetch_classpath rocketmq-broker >/dev/null
  compile_helper "$ASSETS/rocketmq-tools/RocketMQAdmin.java" "$(fetch_classpath rocketmq-tools)" >/dev/null
  local t1 t2 t3 phases=""
  t1=$(now_ms)
  [[ "$part" == broker ]] || { rmq_namesrv_start "$until"; phases+="name server $(elapsed "$t1"), "; }
  t2=$(now_ms)
  [[ "$part" == namesrv ]] || { rmq_broker_start "$until"; phases+="broker $(elapsed "$t2"), "; }
  if rmq_namesrv_running && rmq_broker_running; then
    t3=$(now_ms)
    rmq_wait_ready
    phases+="probe $(elapsed "$t3")"
    rmq_say "ready in $(elapsed "$t0") at $HOST:$RMQ_NAMESRV_PORT (broker $HOST:$RMQ_BROKER_PORT; $phases; pids $(pid_of "$NS_PID")/$(pid_of "$BK_PID"), logs $NS_LOG $BK_LOG)"
  else
    rmq_say "${part} started in $(elapsed "$t0") (name server $(rmq_namesrv_running && echo up || echo down), broker $(rmq_broker_running && echo up || echo down))"
  fi
}

rocketmq_stop() { # [namesrv|broker]: default both (broker first)
  local part=${1:-both}
  if [[ "$part" != namesrv ]] && rmq_broker_running; then
    stop_pid "$RMQ_NAME-broker" "$BK_PID"
    wait_port_free "$RMQ_NAME-broker" "$RMQ_BROKER_PORT"
  fi
  if [[ "$part" != broker ]] && rmq_namesrv_running; then
    stop_pid "$RMQ_NAME-namesrv" "$NS_PID"
    wait_port_free "$RMQ_NAME-namesrv" "$RMQ_NAMESRV_PORT"
  fi
  [[ "$part" == namesrv ]] || rm -f "$BK_PID"
  [[ "$part" == broker ]] || rm -f "$NS_PID"
}

rocketmq_status() {
  local rc=0 ns bk
  ns=$(rmq_namesrv_running && port_open "$HOST" "$RMQ_NAMESRV_PORT" && echo "pid $(pid_of "$NS_PID")") || { ns=down; rc=1; }
  bk=$(rmq_broker_running && port_open "$HOST" "$RMQ_BROKER_PORT" && echo "pid $(pid_of "$BK_PID")") || { bk=down; rc=1; }
  if [[ "$ns" == down && "$bk" == down ]]; then
    rmq_say "stopped"
  else
    rmq_say "$([[ $rc == 0 ]] && echo running || echo partial)  name server $HOST:$RMQ_NAMESRV_PORT ($ns), broker $HOST:$RMQ_BROKER_PORT ($bk)  logs $NS_LOG $BK_LOG"
  fi
  return $rc
}

rocketmq_clean() { rocketmq_stop; rm -rf "$RMQ_DIR" "$RMQ_USER_HOME"; }

# The ACL instance: the same functions on the other set of globals.
rocketmq_acl_start() { rmq_use acl; rocketmq_start "$@"; rmq_use open; }
rocketmq_acl_stop() { rmq_use acl; rocketmq_stop "$@"; rmq_use open; }
rocketmq_acl_status() {
  local rc=0
  rmq_use acl
  rocketmq_status || rc=$?
  rmq_use open
  return $rc
}
rocketmq_acl_clean() { rmq_use acl; rocketmq_clean; rmq_use open; }

rocketmq_topic() { # TOPIC [QUEUES]
  local topic=${1:-} queues=${2:-4}
  [[ -n "$topic" ]] || die "usage: brokers.sh rocketmq-topic TOPIC [QUEUES]"
  [[ "$topic" =~ ^[A-Za-z0-9_%|-]{1,127}$ ]] || die "rocketmq-topic: illegal topic name '$topic' (allowed: letters, digits, _ - % |)"
  if ! [[ "$queues" =~ ^[0-9]+$ ]] || ((queues < 1)); then
    die "rocketmq-topic: QUEUES must be a positive integer"
  fi
  need_java
  mkdir -p "$RMQ_DIR"
  local out
  out=$(mktemp "$RMQ_DIR/topic.XXXXXX.log") # tests may create topics concurrently
  if ! rmq_admin topic "${SLUICE_ROCKETMQ_NAMESRV:-$HOST:$RMQ_NAMESRV_PORT}" "$RMQ_CLUSTER" "$topic" "$queues" "${SLUICE_TOPIC_DEADLINE:-30}" >"$out" 2>&1; then
    cat "$out" >&2
    rm -f "$out"
    die "rocketmq-topic: creating $topic failed (is RocketMQ up? scripts/brokers.sh up rocketmq)"
  fi
  rm -f "$out"
  say "rocketmq  topic $topic ready with $queues queue(s)"
}

# ----------------------------------------------------------------------------
# Test CA and server certificate (TLS listeners of the brokers)

TLS_DIR="$STATE/tls"

# tls_valid DIR: the CA and server certificate in DIR exist, the server's is issued by the CA
# for 127.0.0.1, and neither expires within a week.
tls_valid() {
  local d=$1
  [[ -s "$d/ca.pem" && -s "$d/server.pem" && -s "$d/server.key" ]] || return 1
  openssl verify -CAfile "$d/ca.pem" -verify_ip "$HOST" -purpose sslserver "$d/server.pem" >/dev/null 2>&1 &&
    openssl x509 -checkend 604800 -noout -in "$d/ca.pem" >/dev/null 2>&1 &&
    openssl x509 -checkend 604800 -noout -in "$d/server.pem" >/dev/null 2>&1
}

# tls_generate DIR: a new CA and server certificate in DIR (openssl's output on stdout/stderr).
tls_generate() {
  local d=$1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$d/ca.key" -out "$d/ca.pem" -days 3650 -subj "/CN=Sluice test CA $(hostname -s)" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout "$d/server.key" -out "$d/server.csr" -subj "/CN=localhost" &&
    printf '%s\n' "subjectAltName=IP:$HOST,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >"$d/server.ext" &&
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
      -set_serial "0x$(openssl rand -hex 12)" -days 3650 -extfile "$d/server.ext" -out "$d/server.pem" &&
    rm -f "$d/server.csr" "$d/server.ext" &&
    chmod 600 "$d/ca.key" "$d/server.key" &&
    chmod 644 "$d/ca.pem" "$d/server.pem"
}

# tls_certs: make sure $TLS_DIR holds a test CA (ca.pem, ca.key) and a server certificate it
# issued (server.pem, server.key; SAN 127.0.0.1 and localhost, 10 years). Generated once, with
# openssl, into a temporary dir that then replaces the old one, so a reader never sees half a set.
tls_certs() {
  command -v openssl >/dev/null 2>&1 || apt_install openssl
  tls_valid "$TLS_DIR" && return 0
  local tmp t0
  t0=$(now_ms)
  mkdir -p "$STATE"
  tmp=$(mktemp -d "$STATE/tls.XXXXXX")
  if ! tls_generate "$tmp" >"$tmp/openssl.log" 2>&1 || ! tls_valid "$tmp"; then
    show_logs "$tmp/openssl.log"
    rm -rf "$tmp"
    die "tls: generating the test CA and server certificate failed"
  fi
  rm -f "$tmp/openssl.log"
  chmod 755 "$tmp"
  rm -rf "$TLS_DIR"
  mv "$tmp" "$TLS_DIR"
  say "tls       test CA and server certificate generated in $TLS_DIR in $(elapsed "$t0")"
}

# ----------------------------------------------------------------------------
# Service users (RabbitMQ and PostgreSQL run as their own users when we are root)

# svc_dir NAME USER -> a state dir for NAME that USER can write. It is $STATE/NAME when
# USER can reach $STATE; otherwise (e.g. a repo under /root) a dir under /var/lib/sluice-brokers,
# with $STATE/NAME a symlink to it.
svc_dir() {
  local name=$1 user=$2 dir="$STATE/$1"
  mkdir -p "$STATE"
  if ! is_root; then
    mkdir -p "$dir"
    printf '%s' "$dir"
    return
  fi
  if [[ -L "$dir" ]]; then
    dir=$(readlink -f "$dir")
  else
    mkdir -p "$dir"
    chown "$user:" "$dir"
    if ! runuser -u "$user" -- test -w "$dir" 2>/dev/null; then
      rmdir "$dir" 2>/dev/null || true
      local alt
      alt="/var/lib/sluice-brokers/$(printf '%s' "$STATE" | sha256sum | cut -c1-12)/$name"
      mkdir -p "$alt"
      ln -sfn "$alt" "$dir"
      dir=$alt
    fi
  fi
  mkdir -p "$dir"
  chown "$user:" "$dir"
  printf '%s' "$dir"
}

as_user() { # USER CMD...: run as USER when root, else as ourselves
  local user=$1
  shift
  if is_root; then
    (cd / && runuser -u "$user" -- "$@")
  else
    "$@"
  fi
}

# ----------------------------------------------------------------------------
# RabbitMQ (Debian package, started with rabbitmq-server -detached)

rabbit_env() {
  RABBIT_DIR=$(svc_dir rabbitmq rabbitmq)
  mkdir -p "$RABBIT_DIR/mnesia" "$RABBIT_DIR/log"
  chown -R rabbitmq: "$RABBIT_DIR" 2>/dev/null || true
  export RABBITMQ_NODE_IP_ADDRESS=$HOST RABBITMQ_NODE_PORT=$RABBIT_PORT
  export RABBITMQ_MNESIA_BASE="$RABBIT_DIR/mnesia" RABBITMQ_LOG_BASE="$RABBIT_DIR/log"
  export RABBITMQ_CONFIG_FILE="$RABBIT_DIR/rabbitmq.conf" # rabbit_render writes it
  export ERL_EPMD_ADDRESS=$HOST
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  # The node counts its file handles against the soft limit, and su (the
  # Debian script runs it as user rabbitmq) resets that to PAM's default,
  # often 1024: every queue and stream holds some, and once they run out the
  # node accepts TCP connections but never answers the AMQP handshake. The
  # env file is sourced by the node's own start script, after su.
  printf '%s\n' 'ulimit -S -n "$(ulimit -H -n)" 2>/dev/null || true' >"$RABBIT_DIR/rabbitmq-env.conf"
  chmod 644 "$RABBIT_DIR/rabbitmq-env.conf"
  export RABBITMQ_CONF_ENV_FILE="$RABBIT_DIR/rabbitmq-env.conf"
  RABBIT_LOG="$RABBIT_DIR/log/rabbit@$(hostname -s).log"
  RABBIT_START_LOG="$RABBIT_DIR/start.log"
}

rabbit_installed() { command -v rabbitmqctl >/dev/null 2>&1 && command -v rabbitmq-server >/dev/null 2>&1; }

rabbit_running() { # node up and booted (fast no when the port is closed)
  rabbit_installed && port_open "$HOST" "$RABBIT_PORT" && rabbitmqctl -q await_startup --timeout 5 >/dev/null 2>&1
}

# rabbit_render: the node's configuration (scripts/brokers/rabbitmq/rabbitmq.conf.in: the TLS
# listener) and its copy of the test certificates, readable by the rabbitmq user (which may
# not reach $STATE). Files are rewritten only when they change.
rabbit_render() {
  local f conf
  mkdir -p "$RABBIT_DIR/tls"
  for f in ca.pem server.pem server.key; do
    cmp -s "$TLS_DIR/$f" "$RABBIT_DIR/tls/$f" || cp "$TLS_DIR/$f" "$RABBIT_DIR/tls/$f"
  done
  chmod 600 "$RABBIT_DIR/tls/server.key"
  conf=$(sed -e "s|@TLS_PORT@|$RABBIT_TLS_PORT|g" -e "s|@TLS_DIR@|$RABBIT_DIR/tls|g" "$ASSETS/rabbitmq/rabbitmq.conf.in")
  [[ "$(cat "$RABBIT_DIR/rabbitmq.conf" 2>/dev/null)" == "$conf" ]] || printf '%s\n' "$conf" >"$RABBIT_DIR/rabbitmq.conf"
  if is_root; then chown -R rabbitmq: "$RABBIT_DIR/tls" "$RABBIT_DIR/rabbitmq.conf"; fi
}

# rabbit_tls_ok: the AMQPS listener completes a TLS handshake whose certificate verifies against
# the test CA for 127.0.0.1.
rabbit_tls_ok() {
  timeout 10 openssl s_client -connect "$HOST:$RABBIT_TLS_PORT" -CAfile "$TLS_DIR/ca.pem" \
    -verify_return_error -verify_ip "$HOST" </dev/null >"$RABBIT_DIR/tls-probe.log" 2>&1
}

# AMQP 0-9-1 greeting: the server must answer the protocol header with a Connection.Start frame.
amqp_greets() {
  timeout 5 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "AMQP\x00\x00\x09\x01" >&3
    head -c 11 <&3 | od -An -tx1 | tr -d " \n"' "$HOST" "$RABBIT_PORT" 2>/dev/null |
    grep '^010000' >/dev/null # frame type 1 (method) on channel 0
}

rabbitmq_start() {
  local t0 until i rc
  t0=$(now_ms)
  until=$((t0 + DEADLINE * 1000))
  rabbit_installed || apt_install rabbitmq-server
  rabbit_env
  tls_certs
  rabbit_render
  if rabbit_running && amqp_greets; then
    # A few tries: on a loaded machine one handshake may time out, and a needless restart
    # would break other users' connections.
    if rabbit_tls_ok || { sleep 1 && rabbit_tls_ok; } || { sleep 3 && rabbit_tls_ok; }; then
      say "rabbitmq  already running at $HOST:$RABBIT_PORT (TLS :$RABBIT_TLS_PORT), checked in $(elapsed "$t0")"
      return 0
    fi
    # Started with an older configuration or certificate: restart once to pick them up.
    warn "rabbitmq: running, but no TLS listener verifying against $TLS_DIR/ca.pem on $HOST:$RABBIT_TLS_PORT; restarting it"
    rabbitmq_stop
  fi
  refuse_foreign_port rabbitmq "$RABBIT_LOG" "$RABBIT_PORT" "$RABBIT_TLS_PORT"
  printf '\n===== %s: rabbitmq-server -detached (brokers.sh) =====\n' "$(date -Is)" >>"$RABBIT_START_LOG"
  rabbitmq-server -detached >>"$RABBIT_START_LOG" 2>&1 || fail rabbitmq "rabbitmq-server -detached failed" "$RABBIT_START_LOG" "$RABBIT_LOG"
  # await_startup exits 69 until the node has registered; loop on it.
  while :; do
    rc=0
    rabbitmqctl -q await_startup --timeout 10 >>"$RABBIT_START_LOG" 2>&1 || rc=$?
    ((rc == 0)) && break
    (($(now_ms) < until)) || fail rabbitmq "not started within ${DEADLINE}s (await_startup exit $rc)" "$RABBIT_START_LOG" "$RABBIT_LOG"
    sleep 0.5
  done
  for ((i = 0; ; i++)); do
    amqp_greets && break
    (($(now_ms) < until)) || fail rabbitmq "node booted but no AMQP greeting on $HOST:$RABBIT_PORT" "$RABBIT_START_LOG" "$RABBIT_LOG"
    sleep 0.3
  done
  while ! rabbit_tls_ok; do
    (($(now_ms) < until)) || fail rabbitmq "no verified TLS handshake on $HOST:$RABBIT_TLS_PORT" "$RABBIT_DIR/tls-probe.log" "$RABBIT_START_LOG" "$RABBIT_LOG"
    sleep 0.3
  done
  rabbitmqctl -q authenticate_user guest guest >/dev/null 2>&1 ||
    fail rabbitmq "user guest/guest cannot authenticate" "$RABBIT_START_LOG" "$RABBIT_LOG"
  say "rabbitmq  ready in $(elapsed "$t0") at amqp://guest:guest@$HOST:$RABBIT_PORT/ and amqps://guest:guest@$HOST:$RABBIT_TLS_PORT/ (CA $TLS_DIR/ca.pem; log $RABBIT_LOG)"
}

rabbitmq_stop() {
  rabbit_installed || return 0
  rabbit_env
  port_open "$HOST" "$RABBIT_PORT" || rabbitmqctl -q status >/dev/null 2>&1 || return 0
  rabbitmqctl -q stop >>"$RABBIT_START_LOG" 2>&1 || warn "rabbitmq: rabbitmqctl stop failed (log $RABBIT_START_LOG)"
  wait_port_free rabbitmq "$RABBIT_PORT" "$RABBIT_TLS_PORT"
}

rabbitmq_status() {
  if ! rabbit_installed; then
    say "rabbitmq  not installed"
    return 1
  fi
  rabbit_env
  if rabbit_running; then
    local pid
    pid=$(cat "$RABBIT_DIR/mnesia/rabbit@$(hostname -s).pid" 2>/dev/null) || pid="?"
    say "rabbitmq  running  pid $pid  $HOST:$RABBIT_PORT (TLS :$RABBIT_TLS_PORT)  log $RABBIT_LOG"
  else
    say "rabbitmq  stopped"
    return 1
  fi
}

rabbitmq_clean() {
  rabbitmq_stop
  rabbit_installed || return 0
  rabbit_env
  rm -rf "$RABBIT_DIR/mnesia"
}

# ----------------------------------------------------------------------------
# PostgreSQL (Debian package; a private cluster on port 5433)

pg_bindir() {
  local d
  d=$(printf '%s\n' /usr/lib/postgresql/*/bin | grep -v '\*' | sort -V | tail -n 1)
  [[ -n "$d" && -x "$d/initdb" ]] && printf '%s' "$d"
}

pg_env() {
  PG_BIN=$(pg_bindir) || { apt_install postgresql && PG_BIN=$(pg_bindir); } || die "postgres: no initdb after installing postgresql"
  PG_DIR=$(svc_dir postgres postgres)
  PG_DATA="$PG_DIR/data"
  PG_SOCK="$PG_DIR/run"
  PG_LOG="$PG_DIR/postgres.log"
  mkdir -p "$PG_SOCK"
  touch "$PG_LOG"
  if is_root; then chown postgres: "$PG_SOCK" "$PG_LOG"; fi
  return 0
}

pg_psql() { # DB SQL: as the superuser over the private socket
  as_user postgres "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d "$1" -tAc "$2"
}

pg_running() { [[ -f "$PG_DATA/postmaster.pid" ]] && as_user postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; }

pg_ready() { # sluice can log in over TCP and run a query
  PGPASSWORD=$PG_PASSWORD "$PG_BIN/psql" -X -q "postgresql://$PG_USER@$HOST:$PG_PORT/$PG_DB?sslmode=disable&connect_timeout=5" \
    -tAc 'select 1' 2>/dev/null | grep -x 1 >/dev/null
}

postgres_start() {
  local t0 s
  t0=$(now_ms)
  pg_env
  if pg_running && pg_ready; then
    say "postgres  already running (pid $(head -n 1 "$PG_DATA/postmaster.pid")) at $HOST:$PG_PORT, checked in $(elapsed "$t0")"
    return 0
  fi
  if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
    rm -rf "$PG_DATA"
    as_user postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C >>"$PG_LOG" 2>&1 ||
      fail postgres "initdb failed" "$PG_LOG"
    # Loopback only, private socket dir; tests do not need crash safety against power loss.
    cat >>"$PG_DATA/postgresql.conf" <<EOF

# --- scripts/brokers.sh ---
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
fsync = off
full_page_writes = off
max_connections = 200
EOF
  fi
  if ! pg_running; then
    refuse_foreign_port postgres "$PG_LOG" "$PG_PORT"
    as_user postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$DEADLINE" start >>"$PG_LOG" 2>&1 ||
      fail postgres "pg_ctl start failed" "$PG_LOG"
  fi
  # Role and database (idempotent).
  s=$(pg_psql postgres "select 1 from pg_roles where rolname = '$PG_USER'") || fail postgres "psql as postgres failed" "$PG_LOG"
  [[ "$s" == 1 ]] || pg_psql postgres "create role $PG_USER login createdb password '$PG_PASSWORD'" ||
    fail postgres "creating role $PG_USER failed" "$PG_LOG"
  s=$(pg_psql postgres "select 1 from pg_database where datname = '$PG_DB'")
  [[ "$s" == 1 ]] || pg_psql postgres "create database $PG_DB owner $PG_USER" ||
    fail postgres "creating database $PG_DB failed" "$PG_LOG"
  pg_ready || fail postgres "$PG_USER cannot run a query on $HOST:$PG_PORT/$PG_DB" "$PG_LOG"
  say "postgres  ready in $(elapsed "$t0") at postgres://$PG_USER:$PG_PASSWORD@$HOST:$PG_PORT/$PG_DB (pid $(head -n 1 "$PG_DATA/postmaster.pid"), log $PG_LOG)"
}

postgres_stop() {
  [[ -n "$(pg_bindir)" ]] || return 0
  pg_env
  pg_running || return 0
  as_user postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 30 stop >>"$PG_LOG" 2>&1 ||
    as_user postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 stop >>"$PG_LOG" 2>&1 ||
    warn "postgres: pg_ctl stop failed (log $PG_LOG)"
  wait_port_free postgres "$PG_PORT"
}

postgres_status() {
  if [[ -z "$(pg_bindir)" ]]; then
    say "postgres  not installed"
    return 1
  fi
  pg_env
  if pg_running && port_open "$HOST" "$PG_PORT"; then
    say "postgres  running  pid $(head -n 1 "$PG_DATA/postmaster.pid")  $HOST:$PG_PORT db $PG_DB  log $PG_LOG"
  else
    say "postgres  stopped"
    return 1
  fi
}

postgres_clean() {
  postgres_stop
  [[ -n "$(pg_bindir)" ]] || return 0
  pg_env
  rm -rf "$PG_DATA"
}

# ----------------------------------------------------------------------------
# kill: SIGKILL without any shutdown, to simulate a crash

kill_pidfile() { # NAME PIDFILE [MARKER]
  local pid
  if pid=$(pid_of "$2" "${3:-$STATE}"); then
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    say "$(printf '%-9s' "$1") killed (pid $pid)"
  else
    say "$(printf '%-9s' "$1") not running"
  fi
  rm -f "$2"
}

kill_one() {
  case "$1" in
    kafka) kill_pidfile kafka "$KAFKA_PID" ;;
    rocketmq) kill_pidfile rocketmq-broker "$BK_PID"; kill_pidfile rocketmq-namesrv "$NS_PID" ;;
    rocketmq-broker) kill_pidfile rocketmq-broker "$BK_PID" ;;
    rocketmq-namesrv) kill_pidfile rocketmq-namesrv "$NS_PID" ;;
    rocketmq-acl)
      rmq_use acl
      kill_pidfile rocketmq-acl-broker "$BK_PID"
      kill_pidfile rocketmq-acl-namesrv "$NS_PID"
      rmq_use open
      ;;
    rabbitmq)
      rabbit_installed || return 0
      rabbit_env
      # The node's OS pid; keep a copy, kill_pidfile removes the file it reads.
      local pf
      pf="$RABBIT_DIR/mnesia/rabbit@$(hostname -s).pid"
      [[ -f "$pf" ]] && cp "$pf" "$STATE/rabbitmq.kill.pid"
      kill_pidfile rabbitmq "$STATE/rabbitmq.kill.pid" "rabbit boot" # the mnesia dir is passed via env
      ;;
    postgres)
      pg_env
      [[ -f "$PG_DATA/postmaster.pid" ]] && head -n 1 "$PG_DATA/postmaster.pid" >"$STATE/postgres.kill.pid"
      kill_pidfile postgres "$STATE/postgres.kill.pid" "$PG_DATA"
      ;;
  esac
}

# ----------------------------------------------------------------------------
# commands

# set_names ARGS...: NAMES=broker names (all four when ARGS is empty), validated, de-duplicated.
set_names() {
  local a n seen=" "
  NAMES=()
  (($#)) || set -- all
  for a in "$@"; do
    case "$a" in
      all) set -- "${ALL[@]}" ;;
      kafka | rocketmq | rocketmq-acl | rabbitmq | postgres) set -- "$a" ;;
      *) die "unknown broker '$a' (kafka, rocketmq, rocketmq-acl, rabbitmq, postgres, all)" ;;
    esac
    for n in "$@"; do
      [[ "$seen" == *" $n "* ]] && continue
      seen+="$n "
      NAMES+=("$n")
    done
  done
}

start_one() {
  case "$1" in
    rocketmq-namesrv) rocketmq_start namesrv ;;
    rocketmq-broker) rocketmq_start broker ;;
    *) "${1//-/_}_start" ;;
  esac
}

stop_one() {
  case "$1" in
    rocketmq-namesrv) rocketmq_stop namesrv ;;
    rocketmq-broker) rocketmq_stop broker ;;
    *) "${1//-/_}_stop" ;;
  esac
  say "$(printf '%-9s' "$1") stopped"
}

single_name() {
  [[ $# == 1 ]] || die "usage: brokers.sh $CMD NAME"
  case "$1" in
    kafka | rocketmq | rocketmq-acl | rabbitmq | postgres | rocketmq-namesrv | rocketmq-broker) ;;
    *) die "unknown broker '$1' (kafka, rocketmq, rocketmq-namesrv, rocketmq-broker, rocketmq-acl, rabbitmq, postgres)" ;;
  esac
}

usage() {
  sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"
}

CMD=${1:-}
[[ -n "$CMD" ]] || { usage; exit 2; }
shift
case "$CMD" in
  up)
    set_names "$@"
    mkdir -p "$STATE"
    for n in "${NAMES[@]}"; do start_one "$n"; done
    ;;
  down)
    set_names "$@"
    for n in "${NAMES[@]}"; do stop_one "$n"; done
    ;;
  status)
    set_names "$@"
    rc=0
    for n in "${NAMES[@]}"; do "${n//-/_}_status" || rc=1; done
    exit $rc
    ;;
  start)
    single_name "$@"
    start_one "$1"
    ;;
  stop)
    single_name "$@"
    stop_one "$1"
    ;;
  restart)
    single_name "$@"
    stop_one "$1"
    start_one "$1"
    ;;
  kill)
    single_name "$@"
    kill_one "$1"
    ;;
  clean)
    set_names "$@"
    for n in "${NAMES[@]}"; do "${n//-/_}_clean"; say "$(printf '%-9s' "$n") stopped, data deleted"; done
    ;;
  rocketmq-topic)
    rocketmq_topic "$@"
    ;;
  env)
    say "SLUICE_KAFKA_BROKERS=$HOST:$KAFKA_PORT"
    say "SLUICE_ROCKETMQ_NAMESRV=$HOST:$RMQ_OPEN_NAMESRV_PORT"
    say "SLUICE_ROCKETMQ_ACL_NAMESRV=$HOST:$RMQ_ACL_NAMESRV_PORT"
    say "SLUICE_ROCKETMQ_ACL_ACCESS_KEY=$RMQ_ACL_ACCESS_KEY"
    say "SLUICE_ROCKETMQ_ACL_SECRET_KEY=$RMQ_ACL_SECRET_KEY"
    say "SLUICE_RABBITMQ_URL=amqp://guest:guest@$HOST:$RABBIT_PORT/"
    say "SLUICE_RABBITMQ_TLS_URL=amqps://guest:guest@$HOST:$RABBIT_TLS_PORT/"
    say "SLUICE_TLS_CA=$TLS_DIR/ca.pem"
    say "SLUICE_POSTGRES_URL=postgres://$PG_USER:$PG_PASSWORD@$HOST:$PG_PORT/$PG_DB?sslmode=disable"
    ;;
  -h | --help | help)
    usage
    ;;
  *)
    usage >&2
    exit 2
    ;;
esac
