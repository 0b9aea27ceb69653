#!/usr/bin/env bash
# scripts/services.sh up|down|status — the brokers edgeinfer's tests and demos talk to:
#   Mosquitto (MQTT)          on 127.0.0.1:${EDGEINFER_MQTT_PORT:-1883} (plaintext, anonymous allowed),
#                             TLS + password on :${EDGEINFER_MQTT_TLS_PORT:-8883},
#                             TLS + client certificate + password on :${EDGEINFER_MQTT_MTLS_PORT:-8884}
#   The secured listeners use a test CA made once per state dir with openssl (Debian package): see tls_files.
#   The files are in $STATE/tls/ (ca.pem, server.pem, client.pem, client-key.pem, other-ca.pem: an unrelated
#   CA for the wrong-CA test); the MQTT and Kafka users and their random passwords in $STATE/credentials.env
#   (mode 600: MQTT_USER, MQTT_PASSWORD, KAFKA_USER, KAFKA_PASSWORD, KAFKA_DENIED_USER, KAFKA_DENIED_PASSWORD).
#   Apache Kafka (KRaft, 1 node, broker+controller)
#                             on 127.0.0.1:${EDGEINFER_KAFKA_PORT:-9092} (plaintext, no login; controller :${EDGEINFER_KAFKA_CONTROLLER_PORT:-9093}),
#                             SASL_SSL on :KAFKA_PORT+2 (9094; SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN, the same test CA),
#                             SSL + client certificate on :KAFKA_PORT+3 (9095; principal User:<CN>, e.g. User:edgeinfer-client).
#                             ACLs are enforced (StandardAuthorizer); the plaintext listeners' User:ANONYMOUS is a super
#                             user, so they behave as without. Users KAFKA_USER (edgeinfer: all on topics, groups,
#                             transactional ids) and KAFKA_DENIED_USER (edgeinfer-denied: read only, producing is refused
#                             with TOPIC_AUTHORIZATION_FAILED), passwords in credentials.env: see kafka_secure_setup.
#   promtool (Debian's prometheus package, daemon not started) for the metrics test: see ensure_promtool.
#   Toxiproxy (a TCP fault proxy for the link-fault tests; API on 127.0.0.1:${EDGEINFER_TOXIPROXY_PORT:-8474}) with
#   two proxies: "mqtt"  127.0.0.1:MQTT_PORT+20000 (21883) -> Mosquitto
#                "kafka" 127.0.0.1:KAFKA_PORT+20000 (29092) -> Kafka's second listener PROXIED on KAFKA_PORT+6
#                (9098), which advertises the proxy's address: a client that bootstraps through the proxy
#                learns the proxy's address from metadata, so every one of its connections goes through it.
#   Toxiproxy is built once with `go install` from the Go module proxy (Go from Debian if missing). If it
#   cannot be built, `up` says so and goes on: the tests that need it skip, naming the reason.
#
# Needs nothing installed by hand: Mosquitto comes from Debian (apt-get), the Kafka jars from Maven Central
# (scripts/kafka/pom.xml), cached in ${EDGEINFER_CACHE:-~/.cache/edgeinfer}/kafka-<version>/libs (with the
# Kafka users/ACLs setup program, compiled there once: javac from Debian's default-jdk-headless if missing).
# Everything else (configs, pid files, logs, data) lives in ${EDGEINFER_STATE:-/tmp/edgeinfer-services}.
#
#   up      start what is not running, wait until both brokers answer clients, print their addresses.
#           Idempotent: if both already run, says so and exits 0. Data left by a previous run (without
#           `down`) is kept: Kafka topics/offsets and Mosquitto's persistent sessions survive a restart.
#   down    stop both and delete their data (logs are kept until the next `up`).
#   status  print whether each runs, its pid, address and log; exit 0 if both run, 3 otherwise.
#   kafka-up | kafka-stop | kafka-down
#           Kafka alone: start (and wait); stop and keep its data (an outage: topics, offsets and the
#           idempotent producers' state survive the next kafka-up); stop and delete its data. The outage
#           tests run a second, private Kafka this way (own EDGEINFER_STATE and ports).
#
# Environment: EDGEINFER_STATE, EDGEINFER_CACHE, EDGEINFER_MQTT_PORT, EDGEINFER_MQTT_TLS_PORT,
# EDGEINFER_MQTT_MTLS_PORT, EDGEINFER_KAFKA_PORT,
# EDGEINFER_KAFKA_CONTROLLER_PORT, EDGEINFER_KAFKA_VERSION (default: kafka.version in scripts/kafka/pom.xml),
# EDGEINFER_KAFKA_HEAP (default "-Xms256m -Xmx768m"), EDGEINFER_SERVICES_TIMEOUT (seconds per broker, default 120),
# EDGEINFER_KAFKA_AUTO_CREATE (auto.create.topics.enable, default true), EDGEINFER_KAFKA_SECURE=0 (no secured
# listeners, no ACLs: faster; the outage tests' private Kafkas), EDGEINFER_TOXIPROXY_PORT,
# EDGEINFER_TOXIPROXY=0 (do not start the proxy).
#
# Only loopback addresses are ever used.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOST=127.0.0.1
STATE=${EDGEINFER_STATE:-/tmp/edgeinfer-services}
CACHE=${EDGEINFER_CACHE:-${HOME:-/root}/.cache/edgeinfer}
MQTT_PORT=${EDGEINFER_MQTT_PORT:-1883}
MQTT_TLS_PORT=${EDGEINFER_MQTT_TLS_PORT:-8883}
MQTT_MTLS_PORT=${EDGEINFER_MQTT_MTLS_PORT:-8884}
KAFKA_PORT=${EDGEINFER_KAFKA_PORT:-9092}
CONTROLLER_PORT=${EDGEINFER_KAFKA_CONTROLLER_PORT:-9093}
TIMEOUT=${EDGEINFER_SERVICES_TIMEOUT:-120}
POM="$ROOT/scripts/kafka/pom.xml"
KAFKA_VERSION=${EDGEINFER_KAFKA_VERSION:-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n 1)}
KAFKA_HEAP=${EDGEINFER_KAFKA_HEAP:--Xms256m -Xmx768m}
KAFKA_AUTO_CREATE=${EDGEINFER_KAFKA_AUTO_CREATE:-true}
KAFKA_LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"
KAFKA_SECURE=${EDGEINFER_KAFKA_SECURE:-1}
KAFKA_SASL_PORT=$((KAFKA_PORT + 2)) # SASL_SSL (SCRAM-SHA-512/256, PLAIN)
KAFKA_SSL_PORT=$((KAFKA_PORT + 3))  # SSL with a required client certificate
# The fault proxy and the ports behind it (see the header).
TOXIPROXY_VERSION=2.5.0
TOXIPROXY_BIN="$CACHE/toxiproxy-$TOXIPROXY_VERSION/server"
TOXIPROXY_PORT=${EDGEINFER_TOXIPROXY_PORT:-8474}
MQTT_PROXY_PORT=$((MQTT_PORT + 20000))
KAFKA_PROXIED_PORT=$((KAFKA_PORT + 6)) # 9094 and 9095 are kept for the secured listeners
KAFKA_PROXY_PORT=$((KAFKA_PORT + 20000))

MQ_DIR="$STATE/mosquitto"
MQ_CONF="$MQ_DIR/mosquitto.conf"
MQ_PID="$MQ_DIR/mosquitto.pid"
MQ_LOG="$MQ_DIR/mosquitto.log"
KF_DIR="$STATE/kafka"
KF_CONF="$KF_DIR/server.properties"
KF_PID="$KF_DIR/kafka.pid"
KF_LOG="$KF_DIR/server.log" # log4j output of the broker
KF_OUT="$KF_DIR/kafka.out"  # the JVM's own stdout/stderr (crashes, GC warnings)
TP_DIR="$STATE/toxiproxy"
TP_PID="$TP_DIR/toxiproxy.pid"
TP_LOG="$TP_DIR/toxiproxy.log"
TP_CONF="$TP_DIR/proxies.json"
TLS_DIR="$STATE/tls"
CREDENTIALS="$STATE/credentials.env"
MQTT_USER=edgeinfer
KAFKA_USER=edgeinfer               # the names written to a new credentials.env (then read from it)
KAFKA_DENIED_USER=edgeinfer-denied
KAFKA_CLIENT_PRINCIPAL=edgeinfer-client # CN of tls/client.pem: its principal on the SSL listener

say() { printf 'services: %s\n' "$*" >&2; }
die() {
  printf 'services: error: %s\n' "$*" >&2
  exit 1
}
now_ms() { date +%s%3N; }
elapsed() { awk -v a="$1" -v b="$(now_ms)" 'BEGIN { printf "%.1fs", (b - a) / 1000 }'; }

# Prints the pid in $1 if that process runs and its command line mentions $2 (so a stale pid file whose
# number was reused by another process does not count); fails otherwise.
pid_of() { # pidfile marker
  local pidfile=$1 marker=$2 pid
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker" || return 1
  echo "$pid"
}
mq_pid() { pid_of "$MQ_PID" "$MQ_CONF"; }
kf_pid() { pid_of "$KF_PID" "$KF_CONF"; }
tp_pid() { pid_of "$TP_PID" "$TP_CONF"; }

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

show_log_and_die() { # what logfile...
  local what=$1
  shift
  local f
  for f in "$@"; do
    if [[ -s $f ]]; then
      printf '\n--- last lines of %s ---\n' "$f" >&2
      tail -n 40 "$f" >&2
    fi
  done
  die "$what"
}

# Runs a command as root (directly when we are root, else through sudo).
as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_install() { # packages...
  command -v apt-get >/dev/null || die "need $* but apt-get is not available: install them by hand"
  say "installing $* with apt-get (once per machine)"
  # Keep Debian's own mosquitto service from starting on 1883 during the install: we run our own process.
  # (Containers usually already have a policy-rc.d that denies service starts; add one only if absent.)
  local policy=/usr/sbin/policy-rc.d added=0
  if [[ ! -e $policy ]]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy"
    added=1
  fi
  local rc=0
  { as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@"; } \
    >"$STATE/apt.log" 2>&1 || rc=$?
  if [[ $added == 1 ]]; then as_root rm -f "$policy"; fi
  [[ $rc == 0 ]] || show_log_and_die "apt-get install $* failed (exit $rc)" "$STATE/apt.log"
}

# ---------------------------------------------------------------------------------------------- Mosquitto

MOSQUITTO=""
find_mosquitto() {
  MOSQUITTO=$(command -v mosquitto 2>/dev/null || true)
  [[ -n $MOSQUITTO ]] || { [[ -x /usr/sbin/mosquitto ]] && MOSQUITTO=/usr/sbin/mosquitto; } || true
  [[ -n $MOSQUITTO ]] && command -v mosquitto_pub >/dev/null && command -v mosquitto_sub >/dev/null
}

ensure_mosquitto() {
  find_mosquitto && return 0
  apt_install mosquitto mosquitto-clients
  # The package enables mosquitto.service; on a machine booted with systemd, turn it off again.
  if [[ -d /run/systemd/system ]]; then as_root systemctl disable --now mosquitto >/dev/null 2>&1 || true; fi
  find_mosquitto || die "mosquitto is still missing after apt-get install mosquitto mosquitto-clients"
}

# ------------------------------------------------------------------------------------------------ promtool
#
# tests/integration/metrics_test.ts checks `edgeinfer run --http`'s /metrics with `promtool check metrics`.
# Debian ships promtool only in the `prometheus` package: installed without recommends, its daemon kept
# from starting (policy-rc.d above; on a systemd machine disabled again).

ensure_promtool() {
  command -v promtool >/dev/null && return 0
  apt_install prometheus
  if [[ -d /run/systemd/system ]]; then as_root systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
  command -v promtool >/dev/null || die "promtool is still missing after apt-get install prometheus"
}

# ------------------------------------------------------------------------------------ test CA and secrets
#
# Made once per state dir (kept by `down`, like the logs): a CA, a server certificate for 127.0.0.1 and
# localhost, a client certificate (CN edgeinfer-client) and a second, unrelated CA, all valid 10 years;
# the MQTT password (random, drawn once) in credentials.env and, hashed, in Mosquitto's password file.
# Each file is written to a temporary name and moved into place last, so an interrupted `up` redoes it.

ensure_openssl() {
  command -v openssl >/dev/null && return 0
  apt_install openssl
}

tls_files() {
  mkdir -p "$TLS_DIR"
  [[ -s $TLS_DIR/other-ca.pem ]] && return 0
  ensure_openssl
  local t0 d="$TLS_DIR/tmp.$$"
  t0=$(now_ms)
  rm -rf "$d"
  mkdir -p "$d"
  {
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=edgeinfer test CA" \
      -keyout "$d/ca-key.pem" -out "$d/ca.pem"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$d/server-key.pem" -out "$d/server.csr"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$d/server.ext"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" -CAcreateserial -days 3650 \
      -extfile "$d/server.ext" -out "$d/server.pem"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=edgeinfer-client" -keyout "$d/client-key.pem" -out "$d/client.csr"
    printf 'extendedKeyUsage=clientAuth\n' >"$d/client.ext"
    openssl x509 -req -in "$d/client.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" -CAcreateserial -days 3650 \
      -extfile "$d/client.ext" -out "$d/client.pem"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=edgeinfer unrelated CA" \
      -keyout "$d/other-ca-key.pem" -out "$d/other-ca.pem"
  } >"$TLS_DIR/openssl.log" 2>&1 || show_log_and_die "openssl could not make the test certificates" "$TLS_DIR/openssl.log"
  chmod 600 "$d"/*-key.pem
  rm -f "$d"/*.csr "$d"/*.ext "$d"/*.srl
  local f
  for f in ca-key.pem ca.pem server-key.pem server.pem client-key.pem client.pem other-ca-key.pem other-ca.pem; do
    mv -f "$d/$f" "$TLS_DIR/$f" # other-ca.pem last: it marks the set complete
  done
  rmdir "$d"
  say "test CA and certificates made in $TLS_DIR after $(elapsed "$t0")"
}

random_password() { head -c 18 /dev/urandom | base64 | tr '+/' '-_'; }

# A value of credentials.env (empty if absent).
credential() { sed -n "s/^$1=//p" "$CREDENTIALS" 2>/dev/null | head -n 1; }

# credentials.env: each user and password is drawn once; a file from an older version of this script gets
# the missing ones appended (existing passwords never change).
credentials() {
  local add="" name value
  [[ -s $CREDENTIALS ]] || add=$'# Written once by scripts/services.sh: the users of the secured MQTT and Kafka listeners.\n'
  for name in MQTT_USER MQTT_PASSWORD KAFKA_USER KAFKA_PASSWORD KAFKA_DENIED_USER KAFKA_DENIED_PASSWORD; do
    grep -q "^$name=" "$CREDENTIALS" 2>/dev/null && continue
    case $name in
    MQTT_USER) value=$MQTT_USER ;;
    KAFKA_USER) value=$KAFKA_USER ;;
    KAFKA_DENIED_USER) value=$KAFKA_DENIED_USER ;;
    *) value=$(random_password) ;;
    esac
    add+="$name=$value"$'\n'
  done
  if [[ -n $add ]]; then
    (
      umask 077
      { cat "$CREDENTIALS" 2>/dev/null || true; printf '%s' "$add"; } >"$CREDENTIALS.tmp"
    )
    mv -f "$CREDENTIALS.tmp" "$CREDENTIALS"
  fi
  chmod 600 "$CREDENTIALS"
}

# Mosquitto's password file, from credentials.env (rewritten on every start: mosquitto_passwd salts anew).
write_mosquitto_passwords() {
  local password
  password=$(credential MQTT_PASSWORD)
  (umask 077 && : >"$MQ_DIR/passwords")
  mosquitto_passwd -b "$MQ_DIR/passwords" "$MQTT_USER" "$password" ||
    die "mosquitto_passwd could not write $MQ_DIR/passwords"
}

write_mosquitto_conf() {
  mkdir -p "$MQ_DIR/data"
  tls_files
  credentials
  write_mosquitto_passwords
  mosquitto_conf >"$MQ_CONF"
}

# mosquitto.conf, on stdout.
mosquitto_conf() {
  cat <<EOF
# Written by scripts/services.sh — regenerated on every \`up\`; edit the script, not this file.
# Reference: man mosquitto.conf (options checked against Mosquitto 2.0.11, Debian bookworm).

# Each listener has its own authentication settings: anonymous clients on the plaintext one only.
per_listener_settings true

listener $MQTT_PORT $HOST
allow_anonymous true

# TLS, user name and password (clients verify the server against tls/ca.pem).
listener $MQTT_TLS_PORT $HOST
allow_anonymous false
password_file $MQ_DIR/passwords
cafile $TLS_DIR/ca.pem
certfile $TLS_DIR/server.pem
keyfile $TLS_DIR/server-key.pem

# Mutual TLS: a client certificate signed by tls/ca.pem, and the password too.
listener $MQTT_MTLS_PORT $HOST
allow_anonymous false
password_file $MQ_DIR/passwords
cafile $TLS_DIR/ca.pem
certfile $TLS_DIR/server.pem
keyfile $TLS_DIR/server-key.pem
require_certificate true

# Stay the user that started us (as root, mosquitto would otherwise switch to user "mosquitto",
# which cannot write the data directory).
user $(id -un)

# Persistence: sessions, subscriptions and queued QoS 1/2 messages are saved to data/mosquitto.db
# (every autosave_interval seconds and at shutdown) and reloaded if the broker restarts on this state dir.
persistence true
persistence_location $MQ_DIR/data/
autosave_interval 60
# Persistent sessions (clean=false, or an MQTT 5 session expiry) survive a client restart while the broker
# runs: the broker keeps queueing for them. This bounds sessions abandoned by test runs (default: never).
persistent_client_expiration 1d

# --- Queue and in-flight limits: set on purpose, the defaults lose data for edgeinfer. ---
# In flight = QoS 1/2 messages sent to a client and not yet acknowledged by it (per client).
# edgeinfer withholds each PUBACK until the whole batch containing that message is durable in Kafka, and a
# batch holds up to 256+ events: with mosquitto's default of 20 in flight the broker would stop sending after
# 20 unacknowledged messages and a batch could never fill (it would only flush on linger, 20 at a time).
# Measured on 2.0.11: the window is the smaller of this and, for MQTT 5 clients, the Receive Maximum the
# client sends in CONNECT (none sent = 65535, so 1000 applies; a client sending 300 gets 300).
max_inflight_messages 1000
# Queued = QoS 1/2 messages waiting behind the in-flight window, per client, including while a persistent
# session is disconnected. The default of 1000 made mosquitto drop 30-60% of a fast QoS 1 stream to a
# subscriber that fell behind. WHEN A LIMIT IS REACHED, MOSQUITTO SILENTLY DROPS NEW MESSAGES FOR THAT CLIENT
# (the publisher still gets its PUBACK; nothing is logged). Whichever of the two limits comes first applies:
# a million messages or 1 GiB per client, so memory stays bounded (about 1 GiB per stalled subscriber).
max_queued_messages 1000000
max_queued_bytes 1073741824

log_dest file $MQ_LOG
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
log_timestamp_format %Y-%m-%dT%H:%M:%S
EOF
}

start_mosquitto() {
  if mq_pid >/dev/null; then
    say "mosquitto already running (pid $(mq_pid))"
    return 0
  fi
  ensure_mosquitto
  local p
  for p in "$MQTT_PORT" "$MQTT_TLS_PORT" "$MQTT_MTLS_PORT"; do
    if port_open "$p"; then
      die "port $HOST:$p is already taken by a process services.sh did not start (see: ss -ltnp 'sport = :$p'); stop it or set EDGEINFER_MQTT_PORT / EDGEINFER_MQTT_TLS_PORT / EDGEINFER_MQTT_MTLS_PORT"
    fi
  done
  write_mosquitto_conf
  : >"$MQ_LOG"
  setsid "$MOSQUITTO" -c "$MQ_CONF" </dev/null >>"$MQ_LOG" 2>&1 9>&- &
  echo $! >"$MQ_PID"
  say "mosquitto starting (pid $!)"
}

wait_mosquitto() {
  local t0=$1 deadline=$((SECONDS + TIMEOUT)) topic="edgeinfer/services/ready-$$" ready=0
  while ((SECONDS < deadline)); do
    mq_pid >/dev/null || show_log_and_die "mosquitto exited during startup" "$MQ_LOG"
    # A real round trip: publish a retained message, read it back, then clear it.
    if port_open "$MQTT_PORT" &&
      mosquitto_pub -h "$HOST" -p "$MQTT_PORT" -q 1 -r -t "$topic" -m ok 2>/dev/null &&
      [[ $(mosquitto_sub -h "$HOST" -p "$MQTT_PORT" -t "$topic" -C 1 -W 3 2>/dev/null) == ok ]]; then
      mosquitto_pub -h "$HOST" -p "$MQTT_PORT" -q 1 -r -n -t "$topic" 2>/dev/null || true
      ready=1
      break
    fi
    sleep 0.2
  done
  ((ready)) || show_log_and_die "mosquitto did not answer on $HOST:$MQTT_PORT within ${TIMEOUT}s" "$MQ_LOG"
  # The secured listeners: a publish with the CA and the password (and the client certificate on mTLS).
  local password
  password=$(credential MQTT_PASSWORD)
  local tls=(--cafile "$TLS_DIR/ca.pem" -u "$MQTT_USER" -P "$password" -q 1 -t "$topic" -n)
  while ((SECONDS < deadline)); do
    mq_pid >/dev/null || show_log_and_die "mosquitto exited during startup" "$MQ_LOG"
    if mosquitto_pub -h "$HOST" -p "$MQTT_TLS_PORT" "${tls[@]}" 2>/dev/null &&
      mosquitto_pub -h "$HOST" -p "$MQTT_MTLS_PORT" "${tls[@]}" \
        --cert "$TLS_DIR/client.pem" --key "$TLS_DIR/client-key.pem" 2>/dev/null; then
      say "mosquitto ready after $(elapsed "$t0") (TLS on $HOST:$MQTT_TLS_PORT, mTLS on $HOST:$MQTT_MTLS_PORT)"
      return 0
    fi
    sleep 0.2
  done
  show_log_and_die "mosquitto's TLS listeners ($HOST:$MQTT_TLS_PORT, $HOST:$MQTT_MTLS_PORT) did not accept the test CA and password within ${TIMEOUT}s" "$MQ_LOG"
}

# -------------------------------------------------------------------------------------------------- Kafka
#
# Version: Apache Kafka 4.x (kafka.version in scripts/kafka/pom.xml), checked against kafkajs 2.2.4 (produce,
# consumer group join/heartbeat/commit, admin fetchOffsets/describeGroups/createTopics/deleteTopics). Kafka 4
# dropped the oldest request versions (KIP-896; 4.4 serves e.g. Fetch >= v4, ListOffsets >= v1,
# OffsetCommit >= v2, CreateTopics >= v2), but kafkajs picks versions through ApiVersions and its newest ones
# (Produce v7, Fetch v11, ListOffsets v3, JoinGroup v5, OffsetCommit v5, OffsetFetch v4, Metadata v6,
# CreateTopics v3) are all still served, so kafkajs keeps working; no need to fall back to Kafka 3.x.
# On a freshly formatted broker the first idempotent producer and the first group each get one retriable
# "coordinator is loading / not available" answer: kafkajs retries (and logs it at ERROR level).
# kafkajs speaks only the classic consumer group protocol (JoinGroup/SyncGroup/Heartbeat); Kafka 4's group
# coordinator still serves it by default next to the new KIP-848 protocol (see server.properties below).

ensure_java() {
  command -v java >/dev/null && return 0
  apt_install default-jre-headless
}

ensure_kafka_libs() {
  [[ -n $KAFKA_VERSION ]] || die "cannot read kafka.version from $POM"
  if [[ -f "$KAFKA_LIBS/.complete" ]]; then return 0; fi
  command -v mvn >/dev/null || apt_install maven
  mkdir -p "$CACHE"
  # One download at a time per version, even with several state dirs / checkouts on one machine.
  exec 8>"$CACHE/kafka-$KAFKA_VERSION.lock"
  flock -w 900 8 || die "another services.sh has been downloading Kafka for 15 minutes ($CACHE/kafka-$KAFKA_VERSION.lock)"
  if [[ ! -f "$KAFKA_LIBS/.complete" ]]; then
    local t0 tmp="$KAFKA_LIBS.tmp.$$"
    t0=$(now_ms)
    say "resolving Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS (once per machine)"
    rm -rf "$tmp"
    mkdir -p "$STATE"
    if ! mvn -B -q -f "$POM" -Dkafka.version="$KAFKA_VERSION" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp" >"$STATE/maven.log" 2>&1; then
      rm -rf "$tmp"
      show_log_and_die "Maven could not resolve Kafka $KAFKA_VERSION (scripts/kafka/pom.xml)" "$STATE/maven.log"
    fi
    (cd "$tmp" && ls -- *.jar) >"$tmp/.complete"
    rm -rf "$KAFKA_LIBS"
    mv "$tmp" "$KAFKA_LIBS"
    say "Kafka jars ready after $(elapsed "$t0") ($(wc -l <"$KAFKA_LIBS/.complete") jars)"
  fi
  flock -u 8
  exec 8>&-
}

# Small JVM options for the short-lived tools (formatter, readiness probe): they start faster.
kafka_tool() { # class args... (killed after 60 s: a tool must never hang `up`)
  timeout 60 java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto \
    -Dlog4j2.configurationFile="$KF_DIR/tools-log4j2.properties" -cp "$KAFKA_LIBS/*" "$@"
}

write_kafka_conf() {
  mkdir -p "$KF_DIR/data"
  if [[ $KAFKA_SECURE != 0 ]]; then
    tls_files
    credentials
    # The broker's PEM key store: its private key (PKCS#8, unencrypted) and certificate chain in one file.
    (umask 077 && cat "$TLS_DIR/server-key.pem" "$TLS_DIR/server.pem" "$TLS_DIR/ca.pem" >"$KF_DIR/server-keystore.pem")
  fi
  # Mode 600: with the secured listeners it holds the PLAIN users' passwords.
  (umask 077 && kafka_conf >"$KF_CONF.tmp")
  mv -f "$KF_CONF.tmp" "$KF_CONF"
  write_kafka_log_conf
}

# server.properties, on stdout (`up` compares it with the running broker's to restart a stale one).
kafka_conf() {
  local secure_listeners=""
  [[ $KAFKA_SECURE == 0 ]] || secure_listeners=",SASL_SSL://$HOST:$KAFKA_SASL_PORT,SSL://$HOST:$KAFKA_SSL_PORT"
  cat <<EOF
# Written by scripts/services.sh — regenerated on every \`up\`; edit the script, not this file.
# A single-node KRaft cluster (no ZooKeeper): this process is both broker and controller.
node.id=1
process.roles=broker,controller
controller.quorum.bootstrap.servers=$HOST:$CONTROLLER_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
# PROXIED: the same broker, reached through Toxiproxy's "kafka" proxy, whose address it advertises (metadata
# answers name the listener a request came in on), so a client that bootstraps at the proxy stays behind it.
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$CONTROLLER_PORT,PROXIED://$HOST:$KAFKA_PROXIED_PORT$secure_listeners
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$CONTROLLER_PORT,PROXIED://$HOST:$KAFKA_PROXY_PORT$secure_listeners
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,PROXIED:PLAINTEXT${secure_listeners:+,SASL_SSL:SASL_SSL,SSL:SSL}
log.dirs=$KF_DIR/data

# One node: every internal topic has one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fewer internal partitions than the production defaults (50): faster first group join on 2 cores.
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1

# Topics appear on first use, with one partition unless created otherwise.
auto.create.topics.enable=$KAFKA_AUTO_CREATE
num.partitions=1
default.replication.factor=1

# Consumer groups: kafkajs speaks only the classic protocol (JoinGroup/SyncGroup/Heartbeat), which Kafka 4
# serves next to KIP-848's "consumer" protocol by default. group.coordinator.rebalance.protocols is left
# unset on purpose: Kafka 4.4 deprecates it (removed in 5.0) and any value listing fewer protocols disables
# the rest (classic,consumer would turn off "streams").
# Tests join groups often: no 3 s wait for more members, and short session timeouts are allowed (default min 6 s).
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000

# Small machine (2 cores).
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
  [[ $KAFKA_SECURE != 0 ]] || return 0
  local user password denied denied_password
  user=$(credential KAFKA_USER)
  password=$(credential KAFKA_PASSWORD)
  denied=$(credential KAFKA_DENIED_USER)
  denied_password=$(credential KAFKA_DENIED_PASSWORD)
  cat <<EOF

# --- Secured listeners (EDGEINFER_KAFKA_SECURE=0 leaves this part out) ---
# TLS for both: the test CA's server certificate (SAN IP:127.0.0.1, DNS:localhost), PEM files, no JKS.
ssl.keystore.type=PEM
ssl.keystore.location=$KF_DIR/server-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.pem
# SASL_SSL: SCRAM credentials live in the cluster metadata (added by kafka_secure_setup after start-up);
# PLAIN users are listed here (user_<name>="<password>", from credentials.env).
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$user="$password" user_$denied="$denied_password";
# SSL: a client certificate signed by the test CA is required; its principal is User:<CN of the subject>
# (tls/client.pem: User:$KAFKA_CLIENT_PRINCIPAL).
listener.name.ssl.ssl.client.auth=required
ssl.principal.mapping.rules=RULE:^CN=([^,]+).*\$/\$1/,DEFAULT

# Authorization: ACLs (kafka_secure_setup) on every listener. The plaintext ones (PLAINTEXT, PROXIED and the
# CONTROLLER, used by the broker itself) authenticate nobody: their principal User:ANONYMOUS may do everything.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS
allow.everyone.if.no.acl.found=false
EOF
}

write_kafka_log_conf() {
  cat >"$KF_DIR/log4j2.properties" <<EOF
# Written by scripts/services.sh. Broker log: $KF_LOG
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $KF_LOG
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
# The quieter parts (as in Kafka's own config/log4j2.yaml).
logger.controller.name = kafka.controller
logger.controller.level = INFO
logger.stateChange.name = state.change.logger
logger.stateChange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
EOF
  cat >"$KF_DIR/tools-log4j2.properties" <<EOF
# Written by scripts/services.sh: command-line tools log warnings to stderr only.
status = error
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %p %m%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = err
EOF
}

start_kafka() {
  if kf_pid >/dev/null; then
    say "kafka already running (pid $(kf_pid))"
    return 0
  fi
  ensure_java
  ensure_kafka_libs
  local p ports=("$KAFKA_PORT" "$CONTROLLER_PORT" "$KAFKA_PROXIED_PORT")
  [[ $KAFKA_SECURE == 0 ]] || ports+=("$KAFKA_SASL_PORT" "$KAFKA_SSL_PORT")
  for p in "${ports[@]}"; do
    if port_open "$p"; then
      die "port $HOST:$p is already taken by a process services.sh did not start (see: ss -ltnp 'sport = :$p'); stop it or set EDGEINFER_KAFKA_PORT / EDGEINFER_KAFKA_CONTROLLER_PORT"
    fi
  done
  write_kafka_conf
  : >"$KF_LOG"
  : >"$KF_OUT"
  if [[ ! -f "$KF_DIR/data/meta.properties" ]]; then
    # A new cluster id: a random UUID in Kafka's form (22 chars of url-safe base64, no padding), drawn again
    # if it starts with "-" (the formatter's argument parser would take it for an option).
    local cluster_id=-
    while [[ $cluster_id == -* ]]; do
      cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    done
    # Kafka 4 formats a dynamic controller quorum: --standalone makes this node its only voter.
    if ! kafka_tool kafka.tools.StorageTool format --cluster-id "$cluster_id" --config "$KF_CONF" --standalone \
      >"$KF_DIR/format.log" 2>&1; then
      show_log_and_die "formatting Kafka's log dir failed" "$KF_DIR/format.log"
    fi
  fi
  # shellcheck disable=SC2086 # KAFKA_HEAP is a list of JVM options
  setsid java $KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KF_DIR/log4j2.properties" -Dkafka.logs.dir="$KF_DIR" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KF_CONF" </dev/null >>"$KF_OUT" 2>&1 9>&- &
  echo $! >"$KF_PID"
  say "kafka $KAFKA_VERSION starting (pid $!)"
}

wait_kafka() {
  local t0=$1 deadline=$((SECONDS + TIMEOUT)) out
  while ((SECONDS < deadline)); do
    # The pid, not kf_pid: right after the fork its command line may not show java's yet.
    kill -0 "$(<"$KF_PID")" 2>/dev/null || show_log_and_die "kafka exited during startup" "$KF_LOG" "$KF_OUT"
    # Port open is not enough: ask the broker for its API versions (a real request/response).
    if port_open "$KAFKA_PORT" && grep -q 'Kafka Server started' "$KF_LOG" 2>/dev/null; then
      if out=$(kafka_tool org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "$HOST:$KAFKA_PORT" 2>&1) &&
        grep -q "^$HOST:$KAFKA_PORT (id: 1" <<<"$out"; then
        [[ $KAFKA_SECURE == 0 ]] || wait_kafka_secure "$deadline"
        say "kafka ready after $(elapsed "$t0")"
        return 0
      fi
    fi
    sleep 0.3
  done
  show_log_and_die "kafka did not answer on $HOST:$KAFKA_PORT within ${TIMEOUT}s" "$KF_LOG" "$KF_OUT"
}

# The secured listeners: users and ACLs in place, then a TLS handshake on each, verified against the test CA
# (with the client certificate on the SSL listener).
wait_kafka_secure() { # deadline
  local deadline=$1 t0
  t0=$(now_ms)
  kafka_secure_setup
  local check=(-verify_return_error -CAfile "$TLS_DIR/ca.pem" -servername localhost -verify_ip "$HOST")
  while ((SECONDS < deadline)); do
    if openssl s_client "${check[@]}" -connect "$HOST:$KAFKA_SASL_PORT" </dev/null >/dev/null 2>&1 &&
      openssl s_client "${check[@]}" -cert "$TLS_DIR/client.pem" -key "$TLS_DIR/client-key.pem" \
        -connect "$HOST:$KAFKA_SSL_PORT" </dev/null >/dev/null 2>&1; then
      say "kafka secured listeners ready after $(elapsed "$t0") (SASL_SSL $HOST:$KAFKA_SASL_PORT, SSL + client certificate $HOST:$KAFKA_SSL_PORT)"
      return 0
    fi
    sleep 0.2
  done
  show_log_and_die "kafka's secured listeners ($HOST:$KAFKA_SASL_PORT, $HOST:$KAFKA_SSL_PORT) did not complete a TLS handshake with the test CA" "$KF_LOG" "$KF_OUT"
}

# SCRAM credentials and ACLs, stored in the cluster metadata (they survive restarts; `down` deletes them with
# the data), added over the plaintext listener (a super user) by one small Admin client program (below;
# compiled once per machine, ~1 s instead of ~6 s for the nine kafka-configs/kafka-acls calls it replaces).
# It reads the passwords from credentials.env: none is ever on a command line. Skipped when
# $KF_DIR/secure-setup.done holds the key of this cluster (id from meta.properties), these users and passwords
# and this code. Upserts: running it again changes nothing.
#   KAFKA_USER and User:edgeinfer-client (SSL):  All on topics "*", groups "*", transactional ids "*";
#                                                cluster IdempotentWrite, Create, Describe.
#   KAFKA_DENIED_USER:                           Read, Describe on topics "*" and groups "*"; Write, Describe on
#                                                transactional ids "*"; cluster IdempotentWrite, Describe. No Write
#                                                on any topic: an idempotent, transactional or plain producer gets
#                                                as far as Metadata / Produce / AddPartitionsToTxn and is refused
#                                                there with TOPIC_AUTHORIZATION_FAILED (not with
#                                                CLUSTER_AUTHORIZATION_FAILED at InitProducerId). Consuming works.
kafka_secure_setup() {
  local key marker="$KF_DIR/secure-setup.done" t0
  key=$({
    sed -n 's/^cluster.id=//p' "$KF_DIR/data/meta.properties"
    grep '^KAFKA_' "$CREDENTIALS"
    echo "$KAFKA_CLIENT_PRINCIPAL"
    secure_setup_java
  } | sha256sum | cut -d' ' -f1)
  [[ $(cat "$marker" 2>/dev/null) == "$key" ]] && return 0
  t0=$(now_ms)
  rm -f "$marker"
  local classes
  classes=$(secure_setup_classes)
  if ! timeout 60 java -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto \
    -Dlog4j2.configurationFile="$KF_DIR/tools-log4j2.properties" -cp "$classes:$KAFKA_LIBS/*" EdgeinferSecureSetup \
    "$HOST:$KAFKA_PORT" "$CREDENTIALS" "$KAFKA_CLIENT_PRINCIPAL" >"$KF_DIR/secure-setup.log" 2>&1; then
    show_log_and_die "adding Kafka's SCRAM users and ACLs failed" "$KF_DIR/secure-setup.log"
  fi
  echo "$key" >"$marker"
  say "kafka users ($(credential KAFKA_USER), $(credential KAFKA_DENIED_USER)) and ACLs set after $(elapsed "$t0")"
}

# The setup program's classes, compiled once per machine and source version (javac: a JDK; installed with
# apt-get if missing), in the Kafka jar cache; prints their directory.
secure_setup_classes() {
  local dir
  dir="$CACHE/kafka-$KAFKA_VERSION/secure-setup-$(secure_setup_java | sha256sum | cut -c1-16)"
  if [[ ! -f $dir/EdgeinferSecureSetup.class ]]; then
    command -v javac >/dev/null || apt_install default-jdk-headless
    rm -rf "$dir.tmp.$$"
    mkdir -p "$dir.tmp.$$"
    secure_setup_java >"$dir.tmp.$$/EdgeinferSecureSetup.java"
    javac -nowarn -cp "$KAFKA_LIBS/*" -d "$dir.tmp.$$" "$dir.tmp.$$/EdgeinferSecureSetup.java" >"$KF_DIR/secure-setup.log" 2>&1 ||
      show_log_and_die "javac could not compile the Kafka users/ACLs setup" "$KF_DIR/secure-setup.log"
    rm -rf "$dir"
    mv "$dir.tmp.$$" "$dir" 2>/dev/null || rm -rf "$dir.tmp.$$" # another checkout may have won the race
  fi
  echo "$dir"
}

# Java source of the setup (args: bootstrap server, credentials.env, principal name of the client certificate).
secure_setup_java() {
  cat <<'EOF'
import java.io.Reader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

// Written by scripts/services.sh (secure_setup_java): Kafka's SCRAM users and ACLs for the test brokers.
public class EdgeinferSecureSetup {
  static final List<AclBinding> ACLS = new ArrayList<>();

  static void allow(String user, ResourceType type, String name, AclOperation... ops) {
    for (AclOperation op : ops) {
      ACLS.add(new AclBinding(new ResourcePattern(type, name, PatternType.LITERAL),
          new AccessControlEntry("User:" + user, "*", op, AclPermissionType.ALLOW)));
    }
  }

  public static void main(String[] args) throws Exception {
    Properties env = new Properties();
    try (Reader in = Files.newBufferedReader(Path.of(args[1]))) {
      env.load(in);
    }
    String user = env.getProperty("KAFKA_USER"), denied = env.getProperty("KAFKA_DENIED_USER");
    Properties config = new Properties();
    config.put("bootstrap.servers", args[0]);
    try (Admin admin = Admin.create(config)) {
      // One request per mechanism: the controller refuses two alterations of one user in a request.
      for (ScramMechanism mechanism : List.of(ScramMechanism.SCRAM_SHA_512, ScramMechanism.SCRAM_SHA_256)) {
        List<UserScramCredentialAlteration> users = List.of(
            new UserScramCredentialUpsertion(user, new ScramCredentialInfo(mechanism, 4096),
                env.getProperty("KAFKA_PASSWORD")),
            new UserScramCredentialUpsertion(denied, new ScramCredentialInfo(mechanism, 4096),
                env.getProperty("KAFKA_DENIED_PASSWORD")));
        admin.alterUserScramCredentials(users).all().get();
      }
      for (String allowed : List.of(user, args[2])) {
        allow(allowed, ResourceType.TOPIC, "*", AclOperation.ALL);
        allow(allowed, ResourceType.GROUP, "*", AclOperation.ALL);
        allow(allowed, ResourceType.TRANSACTIONAL_ID, "*", AclOperation.ALL);
        allow(allowed, ResourceType.CLUSTER, "kafka-cluster",
            AclOperation.IDEMPOTENT_WRITE, AclOperation.CREATE, AclOperation.DESCRIBE);
      }
      allow(denied, ResourceType.TOPIC, "*", AclOperation.READ, AclOperation.DESCRIBE);
      allow(denied, ResourceType.GROUP, "*", AclOperation.READ, AclOperation.DESCRIBE);
      allow(denied, ResourceType.TRANSACTIONAL_ID, "*", AclOperation.WRITE, AclOperation.DESCRIBE);
      allow(denied, ResourceType.CLUSTER, "kafka-cluster", AclOperation.IDEMPOTENT_WRITE, AclOperation.DESCRIBE);
      admin.createAcls(ACLS).all().get();
      System.out.println("SCRAM users " + user + ", " + denied + "; " + ACLS.size() + " ACLs");
    }
  }
}
EOF
}

# ---------------------------------------------------------------------------------------------- Toxiproxy
#
# Shopify's TCP fault proxy (github.com/Shopify/toxiproxy, v2.5.0, pinned): the link-fault tests add "toxics"
# to its proxies through its HTTP API (a connection that drops every byte while both ends stay up, seconds of
# latency, a bandwidth cap) and remove them to heal the link.

ensure_toxiproxy() {
  [[ -x $TOXIPROXY_BIN ]] && return 0
  if ! command -v go >/dev/null && [[ ! -x /usr/local/go/bin/go ]]; then
    (apt_install golang-go) || return 1 # a subshell: its failure must not end `up`
  fi
  local go t0
  go=$(command -v go || echo /usr/local/go/bin/go)
  t0=$(now_ms)
  mkdir -p "$TP_DIR" "$(dirname "$TOXIPROXY_BIN")"
  say "building Toxiproxy $TOXIPROXY_VERSION with go install (once per machine)"
  if ! GOBIN="$(dirname "$TOXIPROXY_BIN")" GOFLAGS=-mod=mod "$go" install \
    "github.com/Shopify/toxiproxy/v2/cmd/server@v$TOXIPROXY_VERSION" >"$TP_DIR/build.log" 2>&1; then
    say "warning: building Toxiproxy failed (see $TP_DIR/build.log): the link-fault tests will skip"
    return 1
  fi
  say "Toxiproxy built after $(elapsed "$t0")"
}

# proxies.json, on stdout.
toxiproxy_conf() {
  cat <<EOF
[
  {"name": "mqtt", "listen": "$HOST:$MQTT_PROXY_PORT", "upstream": "$HOST:$MQTT_PORT"},
  {"name": "kafka", "listen": "$HOST:$KAFKA_PROXY_PORT", "upstream": "$HOST:$KAFKA_PROXIED_PORT"}
]
EOF
}

start_toxiproxy() {
  [[ ${EDGEINFER_TOXIPROXY:-1} != 0 ]] || return 0
  local pid
  if pid=$(tp_pid) && ! cmp -s <(toxiproxy_conf) "$TP_CONF"; then
    say "toxiproxy runs with older proxies: restarting it"
    stop_one toxiproxy "$pid"
  fi
  if tp_pid >/dev/null; then
    say "toxiproxy already running (pid $(tp_pid))"
    return 0
  fi
  ensure_toxiproxy || return 0
  local p
  for p in "$TOXIPROXY_PORT" "$MQTT_PROXY_PORT" "$KAFKA_PROXY_PORT"; do
    if port_open "$p"; then
      say "warning: port $HOST:$p is taken by a process services.sh did not start: toxiproxy not started (the link-fault tests will skip)"
      return 0
    fi
  done
  mkdir -p "$TP_DIR"
  toxiproxy_conf >"$TP_CONF"
  : >"$TP_LOG"
  setsid "$TOXIPROXY_BIN" -host "$HOST" -port "$TOXIPROXY_PORT" -config "$TP_CONF" </dev/null >>"$TP_LOG" 2>&1 9>&- &
  echo $! >"$TP_PID"
  local deadline=$((SECONDS + 20))
  while ((SECONDS < deadline)); do
    if curl -fsS "http://$HOST:$TOXIPROXY_PORT/proxies" 2>/dev/null | grep -q '"kafka"'; then
      say "toxiproxy ready (pid $(<"$TP_PID"), API $HOST:$TOXIPROXY_PORT)"
      return 0
    fi
    sleep 0.1
  done
  say "warning: toxiproxy did not answer on $HOST:$TOXIPROXY_PORT (see $TP_LOG): the link-fault tests will skip"
}

stop_toxiproxy() {
  local pid
  if pid=$(tp_pid); then stop_one toxiproxy "$pid"; fi
  rm -f "$TP_PID"
}

# ------------------------------------------------------------------------------------------------ commands

stop_one() { # name pid
  local name=$1 pid=$2 i
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do # up to 30 s (Kafka shuts down in a few seconds)
    kill -0 "$pid" 2>/dev/null || {
      say "$name stopped (pid $pid)"
      return 0
    }
    sleep 0.2
  done
  say "$name did not stop on SIGTERM within 30 s: killing it (pid $pid)"
  kill -KILL "$pid" 2>/dev/null || true
}

# Whether the running (or last written) Kafka configuration has the secured listeners.
kafka_conf_secure() { grep -q '^listener.name.sasl_ssl' "$KF_CONF" 2>/dev/null; }

print_endpoints() {
  if kafka_conf_secure; then
    printf 'kafka     %s:%s (SASL_SSL %s:%s SCRAM-SHA-512/256 + PLAIN; SSL with client certificate %s:%s; CA %s, users/passwords in %s)\n' \
      "$HOST" "$KAFKA_PORT" "$HOST" "$KAFKA_SASL_PORT" "$HOST" "$KAFKA_SSL_PORT" "$TLS_DIR/ca.pem" "$CREDENTIALS"
  else
    printf 'kafka     %s:%s\n' "$HOST" "$KAFKA_PORT"
  fi
  printf 'mosquitto %s:%s (TLS + password %s:%s, mTLS + password %s:%s; CA %s, user/password in %s)\n' \
    "$HOST" "$MQTT_PORT" "$HOST" "$MQTT_TLS_PORT" "$HOST" "$MQTT_MTLS_PORT" "$TLS_DIR/ca.pem" "$CREDENTIALS"
  if tp_pid >/dev/null; then
    printf 'toxiproxy %s:%s (mqtt via %s:%s, kafka via %s:%s)\n' "$HOST" "$TOXIPROXY_PORT" \
      "$HOST" "$MQTT_PROXY_PORT" "$HOST" "$KAFKA_PROXY_PORT"
  fi
}

cmd_up() {
  local t0
  t0=$(now_ms)
  # A broker started by an older version of this script (another configuration) is restarted with the
  # current one; its data is kept.
  local pid
  ensure_promtool # for the tests, not the brokers
  tls_files # once per state dir (also for a broker that already runs)
  credentials
  if pid=$(mq_pid) && ! cmp -s <(mosquitto_conf) "$MQ_CONF"; then
    say "mosquitto runs with an older configuration: restarting it"
    stop_one mosquitto "$pid"
  fi
  if pid=$(kf_pid) && ! cmp -s <(kafka_conf) "$KF_CONF"; then
    say "kafka runs with an older configuration: restarting it"
    stop_one kafka "$pid"
  fi
  if mq_pid >/dev/null && kf_pid >/dev/null; then
    # (Users and ACLs: a no-op unless an earlier `up` was interrupted before they were set.)
    [[ $KAFKA_SECURE == 0 ]] || kafka_secure_setup
    start_toxiproxy
    say "already running (state in $STATE)"
    print_endpoints
    return 0
  fi
  # Start both, then wait for both: Kafka's JVM boots while Mosquitto is being checked.
  start_mosquitto
  start_kafka
  wait_mosquitto "$t0"
  wait_kafka "$t0"
  start_toxiproxy
  say "up in $(elapsed "$t0") (state in $STATE; stop with: scripts/services.sh down)"
  print_endpoints
}

cmd_down() {
  local pid
  stop_toxiproxy
  if pid=$(kf_pid); then stop_one kafka "$pid"; else say "kafka was not running"; fi
  if pid=$(mq_pid); then stop_one mosquitto "$pid"; else say "mosquitto was not running"; fi
  rm -rf "$KF_DIR/data" "$MQ_DIR/data" "$KF_PID" "$MQ_PID" "$KF_DIR/secure-setup.done"
  say "data removed from $STATE (logs kept until the next up)"
}

cmd_status() {
  local pid rc=0
  if pid=$(kf_pid); then
    local secured=""
    kafka_conf_secure && secured=", SASL_SSL $KAFKA_SASL_PORT, SSL+client cert $KAFKA_SSL_PORT"
    printf 'kafka     running  pid %-7s %s:%s (controller %s:%s%s)  kafka %s  log %s\n' \
      "$pid" "$HOST" "$KAFKA_PORT" "$HOST" "$CONTROLLER_PORT" "$secured" "$KAFKA_VERSION" "$KF_LOG"
  else
    printf 'kafka     stopped  (would listen on %s:%s; state %s)\n' "$HOST" "$KAFKA_PORT" "$KF_DIR"
    rc=3
  fi
  if pid=$(mq_pid); then
    printf 'mosquitto running  pid %-7s %s:%s (TLS %s, mTLS %s)  log %s\n' "$pid" "$HOST" "$MQTT_PORT" \
      "$MQTT_TLS_PORT" "$MQTT_MTLS_PORT" "$MQ_LOG"
  else
    printf 'mosquitto stopped  (would listen on %s:%s; state %s)\n' "$HOST" "$MQTT_PORT" "$MQ_DIR"
    rc=3
  fi
  # Optional: only the link-fault tests need it.
  if pid=$(tp_pid); then
    printf 'toxiproxy running  pid %-7s API %s:%s  log %s\n' "$pid" "$HOST" "$TOXIPROXY_PORT" "$TP_LOG"
  else
    printf 'toxiproxy stopped  (optional; API would be %s:%s)\n' "$HOST" "$TOXIPROXY_PORT"
  fi
  return $rc
}

usage() { # exit code
  sed -n '2,49p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit "$1"
}

main() {
  [[ $# -eq 1 ]] || usage 2
  mkdir -p "$STATE"
  # One services.sh at a time per state dir (several test runs may call `up` together).
  # The brokers are started with fd 9 closed, so the lock never outlives this script.
  exec 9>"$STATE/services.lock"
  flock -w 600 9 || die "another services.sh has held $STATE/services.lock for 10 minutes"
  case $1 in
  up) cmd_up ;;
  kafka-up)
    t0=$(now_ms)
    start_kafka
    wait_kafka "$t0"
    ;;
  kafka-stop)
    if pid=$(kf_pid); then stop_one kafka "$pid"; else say "kafka was not running"; fi
    ;;
  kafka-down)
    if pid=$(kf_pid); then stop_one kafka "$pid"; else say "kafka was not running"; fi
    rm -rf "$KF_DIR/data" "$KF_PID" "$KF_DIR/secure-setup.done"
    ;;
  down) cmd_down ;;
  status) cmd_status ;;
  -h | --help | help) usage 0 ;;
  *) usage 2 ;;
  esac
}

main "$@"
