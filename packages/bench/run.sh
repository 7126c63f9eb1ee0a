#!/usr/bin/env bash
# Rill vs peers, one command per scenario, same generator (`rill bench`) and settings for each.
#
#   bash packages/bench/run.sh fanout [1000|10000]   fan-out, 1 topic, rate ladder, SSE and WebSocket
#   bash packages/bench/run.sh idle                  server RSS per idle connection, 15,000 connections
#   bash packages/bench/run.sh ingest                single POST req/s, batched NDJSON events/s (lmdb)
#   bash packages/bench/run.sh catchup               one subscriber replaying 1,000,000 stored events
#   bash packages/bench/run.sh storm                 5,000 SSE subscribers dropped, 500-event gap
#   bash packages/bench/run.sh manytopics            10,000 subscribers each on own topic + a shared one
#   bash packages/bench/run.sh idle100k              100,000 idle SSE connections (rill serve --workers 6,
#                                                    heartbeats every 5 s), RSS, then a reconnect storm
#   bash packages/bench/run.sh all                   all of the above
#
# Ports: RILL_PORT (8080), NCHAN_PORT (8090), EXPRESS_PORT (8091), SOCKETIO_PORT (8092); the
# storm scenario (storm.js) always uses the defaults.
# LADDER=25,50,100 overrides the rate ladder (events/s), STEP_SECONDS the seconds per step.
# PEERS="rill-sse rill-ws nchan-sse nchan-ws pushpin-sse pushpin-ws express-sse socketio" selects
# targets (default: all). PUSHPIN_PORT (8093), PUSHPIN_PUBLISH_PORT (8094) and
# PUSHPIN_BACKEND_PORT (8095) move Pushpin off its default ports.
# Results: packages/bench/results/<scenario>/<target>-<n>.json (RESULTS moves them); summary:
# node packages/bench/summarize.js. Peers are installed here, never vendored: npm (express,
# socket.io) into peers/node_modules from peers/package.json; Debian's nginx +
# libnginx-mod-nchan and pushpin via apt-get when missing and selected. Their configs are
# peers/nchan/nginx.conf and peers/pushpin/pushpin.conf.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/../.." && pwd)"
RILL="node $ROOT/packages/server/bin/rill.js"
RESULTS="${RESULTS:-$BENCH/results}"
# Absolute, so that the node one-liners below can require() result files.
mkdir -p "$RESULTS" && RESULTS="$(cd "$RESULTS" && pwd)"
TMP="$(mktemp -d /tmp/rill-bench.XXXXXX)"
PEERS="${PEERS:-rill-sse rill-ws nchan-sse nchan-ws pushpin-sse pushpin-ws express-sse socketio}"
NCHAN_CONF="${NCHAN_CONF:-$BENCH/peers/nchan/nginx.conf}"
PUSHPIN_CONF="${PUSHPIN_CONF:-$BENCH/peers/pushpin/pushpin.conf}"
# Rill serves from one process unless SERVER_WORKERS says otherwise (`rill serve --workers N`,
# then every scenario but idle100k, which has its own); peers that have workers get the same count.
WORKERS="${SERVER_WORKERS:-1}"
PUSHPIN_PORT="${PUSHPIN_PORT:-8093}"
PUSHPIN_PUBLISH_PORT="${PUSHPIN_PUBLISH_PORT:-8094}"
PUSHPIN_BACKEND_PORT="${PUSHPIN_BACKEND_PORT:-8095}"
SERVER_PIDS=""
SERVER_KILL=""
RILL_PORT="${RILL_PORT:-8080}"
NCHAN_PORT="${NCHAN_PORT:-8090}"
EXPRESS_PORT="${EXPRESS_PORT:-8091}"
SOCKETIO_PORT="${SOCKETIO_PORT:-8092}"
# The generic peers' subscribe path: {topic}, or {topics} (comma-separated) for the many-topics
# scenario, where each connection subscribes to its own topic and a shared one.
SUB_TOPICS="{topic}"

log() { printf '\n=== %s\n' "$*" >&2; }

install_peers() {
  if [ ! -d "$ROOT/packages/server/dist" ] || [ ! -d "$BENCH/dist" ]; then
    (cd "$ROOT" && npm run build >/dev/null)
  fi
  if [[ " $PEERS " == *" express-sse "* || " $PEERS " == *" socketio "* ]] &&
    { [ ! -d "$BENCH/peers/node_modules/socket.io" ] || [ ! -d "$BENCH/peers/node_modules/express" ]; }; then
    (cd "$BENCH/peers" && npm ci --no-audit --no-fund >/dev/null)
  fi
  if [[ " $PEERS " == *" nchan-"* ]] && [ ! -f /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light libnginx-mod-nchan >/dev/null
  fi
  if [[ " $PEERS " == *" pushpin-"* ]] && ! command -v pushpin >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pushpin >/dev/null
  fi
}

wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "port $1 did not open" >&2
  return 1
}

# start_server <target>: starts the server behind a target, sets SERVER_PIDS and TARGET_ARGS.
start_server() {
  case "$1" in
    rill-*)
      rm -rf "$TMP/rill-data"
      $RILL serve --engine lmdb --data-dir "$TMP/rill-data" --port "$RILL_PORT" --log-level warn \
        --workers "$WORKERS" &
      SERVER_PIDS=$!
      SERVER_KILL=$!
      wait_port "$RILL_PORT"
      # With workers: the supervisor and every worker (they listen before the port answers).
      [ "$WORKERS" = 1 ] || SERVER_PIDS="$SERVER_KILL,$(pgrep -P "$SERVER_KILL" | paste -sd,)"
      TARGET_ARGS=(--target rill --url "http://127.0.0.1:$RILL_PORT" --transport "${1#rill-}")
      ;;
    nchan-*)
      mkdir -p "$TMP/nchan"
      # peers/nchan/nginx.conf with this run's worker count and port. Its /msub/a,b location is
      # one connection subscribed to channels a and b, for the many-topics scenario.
      sed -e "s/^worker_processes .*/worker_processes $WORKERS;/" \
        -e "s/127\.0\.0\.1:8090/127.0.0.1:$NCHAN_PORT/" \
        "$NCHAN_CONF" > "$TMP/nchan/nginx.conf"
      nginx -c "$TMP/nchan/nginx.conf" -p "$TMP/nchan" -g "daemon on; pid $TMP/nchan/nginx.pid;" 2>/dev/null
      wait_port "$NCHAN_PORT"
      local master
      master="$(cat "$TMP/nchan/nginx.pid")"
      SERVER_PIDS="$master,$(pgrep -P "$master" | paste -sd,)"
      SERVER_KILL=""
      local scheme=http sub=sub
      [ "$1" = nchan-ws ] && scheme=ws
      [ "$SUB_TOPICS" = "{topics}" ] && sub=msub
      TARGET_ARGS=(--target generic --sub-url "$scheme://127.0.0.1:$NCHAN_PORT/$sub/$SUB_TOPICS" --pub-url "http://127.0.0.1:$NCHAN_PORT/pub/{topic}")
      ;;
    express-sse)
      PORT="$EXPRESS_PORT" node "$BENCH/peers/express-sse.js" >/dev/null &
      SERVER_PIDS=$!
      SERVER_KILL=$!
      wait_port "$EXPRESS_PORT"
      TARGET_ARGS=(--target generic --sub-url "http://127.0.0.1:$EXPRESS_PORT/sub/$SUB_TOPICS" --pub-url "http://127.0.0.1:$EXPRESS_PORT/pub/{topic}")
      ;;
    pushpin-*)
      start_pushpin
      local scheme=http
      [ "$1" = pushpin-ws ] && scheme=ws
      # Publishes go straight to the backend, as a GRIP app's own events do. Each new subscriber
      # is a request from Pushpin's proxy through zurl to the backend; with the generator's 200
      # connection attempts in flight, Pushpin's queue to zurl overflows and it answers some with
      # 502 (zhttp "unavailable"), so these targets connect with 50 in flight per worker.
      TARGET_ARGS=(--target generic --sub-url "$scheme://127.0.0.1:$PUSHPIN_PORT/sub/$SUB_TOPICS" --pub-url "http://127.0.0.1:$PUSHPIN_BACKEND_PORT/pub/{topic}" --connect-concurrency 50)
      ;;
    socketio)
      PORT="$SOCKETIO_PORT" node "$BENCH/peers/socketio.js" >/dev/null &
      SERVER_PIDS=$!
      SERVER_KILL=$!
      wait_port "$SOCKETIO_PORT"
      TARGET_ARGS=(--target socketio --url "http://127.0.0.1:$SOCKETIO_PORT")
      ;;
    *) echo "unknown target $1" >&2; return 2 ;;
  esac
  sleep 0.5
}

# Pushpin's runner with a config in $TMP (not /etc): peers/pushpin/pushpin.conf (the package
# defaults with its own ports and IPC paths, so that it never meets a system Pushpin, zurl
# started by the runner, log level 1 and no message rate limit), condure with one worker thread,
# and the GRIP backend (peers/pushpin-backend.js) as the only route. docs/benchmarks.md says why.
start_pushpin() {
  local d="$TMP/pushpin"
  rm -rf "$d" && mkdir -p "$d/run" "$d/log"
  # The runner has no setting for condure's --workers (default 2); a wrapper passes 1.
  printf '#!/bin/sh\nexec condure --workers=%s "$@"\n' "$WORKERS" > "$d/condure"
  chmod +x "$d/condure"
  echo "* 127.0.0.1:$PUSHPIN_BACKEND_PORT,over_http" > "$d/routes"
  sed -e "s|@DIR@|$d|g" -e "s|@HTTP_PORT@|$PUSHPIN_PORT|" -e "s|@PUBLISH_PORT@|$PUSHPIN_PUBLISH_PORT|" \
    "$PUSHPIN_CONF" > "$d/pushpin.conf"
  PORT="$PUSHPIN_BACKEND_PORT" PUSHPIN_PUBLISH_URL="http://127.0.0.1:$PUSHPIN_PUBLISH_PORT/publish/" \
    node "$BENCH/peers/pushpin-backend.js" >/dev/null &
  local backend=$!
  pushpin --config "$d/pushpin.conf" >"$d/log/runner.log" 2>&1 &
  local runner=$!
  SERVER_KILL="$runner $backend"
  wait_port "$PUSHPIN_BACKEND_PORT"
  wait_port "$PUSHPIN_PORT"
  wait_port "$PUSHPIN_PUBLISH_PORT"
  # The runner's children: condure, zurl, pushpin-proxy, pushpin-handler.
  for _ in $(seq 1 50); do [ "$(pgrep -P "$runner" | wc -l)" -ge 4 ] && break; sleep 0.1; done
  # Ready when a plain request goes all the way through condure, the proxy and zurl to the backend.
  for _ in $(seq 1 100); do
    node -e 'fetch(process.argv[1]).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))' \
      "http://127.0.0.1:$PUSHPIN_PORT/ready" && break
    sleep 0.1
  done
  SERVER_PIDS="$runner,$(pgrep -P "$runner" | paste -sd,),$backend"
}

stop_server() {
  if [ -n "$SERVER_KILL" ]; then
    # shellcheck disable=SC2086 # a list of pids
    kill $SERVER_KILL 2>/dev/null || true
    # shellcheck disable=SC2086
    wait $SERVER_KILL 2>/dev/null || true
  elif [ -f "$TMP/nchan/nginx.pid" ]; then
    nginx -c "$TMP/nchan/nginx.conf" -p "$TMP/nchan" -g "pid $TMP/nchan/nginx.pid;" -s quit 2>/dev/null || true
    for _ in $(seq 1 50); do [ -f "$TMP/nchan/nginx.pid" ] || break; sleep 0.1; done
  fi
  SERVER_KILL=""
  # Let the sockets of the last run leave TIME_WAIT's way before the next one connects.
  sleep 2
}

cleanup() {

  stop_server >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

# bench <out.json> <args...>: runs the generator against the current server.
bench() {
  local out="$1"
  shift
  mkdir -p "$(dirname "$out")"
  $RILL bench "${TARGET_ARGS[@]}" --server-pid "$SERVER_PIDS" --json "$@" > "$out" || true
  node -e 'const r=require(process.argv[1]);for(const s of r.steps)console.error(`  ${s.rate}/s -> ${s.deliveredPerSec} deliveries/s loss ${s.loss} p99 ${s.latencyMs.p99} ms ${s.ok?"ok":"FAIL"}`);if(r.server)console.error(`  rss/conn ${r.server.rssPerConnectionKiB} KiB, connected ${r.connected}/${r.subscribers}`)' "$out" || true
}

supports_ws_publish() { [[ "$1" == rill-* ]]; }

scenario_fanout() {
  local sizes=("${@:-1000 10000}")
  for n in ${sizes[*]}; do
    local ladder
    if [ -n "${LADDER:-}" ]; then
      ladder="$LADDER"
    elif [ "$n" -le 1000 ]; then
      ladder="25,50,100,200,300,400,600,800,1000"
    else
      ladder="2,5,10,20,30,40,60,80,100"
    fi
    for t in $PEERS; do
      log "fanout $n subscribers: $t"
      start_server "$t"
      bench "$RESULTS/fanout/$t-$n.json" -s "$n" -r "$ladder" -d "${STEP_SECONDS:-5}" --stop-on-fail \
        --sample 4 --concurrency 32
      # Latency at 25 / 50 / 75 % of the best passing rate (or of the zero-loss capacity).
      local best
      best="$(node -e 'const r=require(process.argv[1]);process.stdout.write(String(r.best?.rate??r.capacity?.rate??0))' "$RESULTS/fanout/$t-$n.json" 2>/dev/null || echo 0)"
      if [ "$best" -gt 0 ]; then
        local q
        q="$(node -e 'const b=+process.argv[1];process.stdout.write([0.25,0.5,0.75].map(f=>Math.max(1,Math.round(b*f))).join(","))' "$best")"
        bench "$RESULTS/fanout/$t-$n-quartiles.json" -s "$n" -r "$q" -d "${STEP_SECONDS:-5}" --sample 4 --concurrency 32
      fi
      stop_server
    done
  done
}

scenario_idle() {
  local n="${1:-15000}"
  for t in $PEERS; do
    log "idle $n connections: $t"
    start_server "$t"
    bench "$RESULTS/idle/$t-$n.json" -s "$n" -d "${IDLE_SECONDS:-10}" -w 2
    stop_server
  done
}

scenario_ingest() {
  local t
  for t in rill-sse nchan-sse pushpin-sse express-sse socketio; do
    [[ " $PEERS " == *" $t "* ]] || continue
    log "ingest: $t single-event POSTs"
    start_server "$t"
    bench "$RESULTS/ingest/${t%-sse}-single.json" -s 0 -r max -d "${STEP_SECONDS:-10}" --concurrency 64
    if [[ "$t" == rill-* ]]; then
      for b in 100 1000; do
        log "ingest: rill NDJSON batches of $b"
        bench "$RESULTS/ingest/rill-batch$b.json" -s 0 -r max -d "${STEP_SECONDS:-10}" --publish batch --batch "$b" --concurrency 8
      done
      log "ingest: rill WebSocket publishes"
      bench "$RESULTS/ingest/rill-ws.json" -s 0 -r max -d "${STEP_SECONDS:-10}" --publish ws --concurrency 256
    fi
    stop_server
  done
}

scenario_catchup() {
  log "catch-up: rill replays ${CATCHUP_EVENTS:-1000000} stored events"
  # The default retention keeps 100,000 events per topic; this scenario needs them all.
  export RILL_RETENTION__MAX_EVENTS=$(( ${CATCHUP_EVENTS:-1000000} * 2 ))
  start_server rill-sse
  unset RILL_RETENTION__MAX_EVENTS
  mkdir -p "$RESULTS/catchup"
  node "$BENCH/catchup.js" "http://127.0.0.1:$RILL_PORT" "${CATCHUP_EVENTS:-1000000}" | tee "$RESULTS/catchup/rill.json" >&2
  stop_server
}

scenario_storm() {
  local t
  for t in rill-sse nchan-sse pushpin-sse express-sse; do
    [[ " $PEERS " == *" $t "* ]] || continue
    log "reconnect storm: $t, 5000 subscribers, 500-event gap"
    start_server "$t"
    mkdir -p "$RESULTS/storm"
    PUSHPIN_PORT="$PUSHPIN_PORT" PUSHPIN_BACKEND_PORT="$PUSHPIN_BACKEND_PORT" node "$BENCH/storm.js" "${t%-sse}" "${STORM_SUBSCRIBERS:-5000}" "${STORM_GAP:-500}" | tee "$RESULTS/storm/${t%-sse}.json" >&2 || true
    stop_server
  done
}

# Many topics: N subscribers (2 workers), each on its own topic and on one shared topic over the
# same connection; the own topics get LADDER events/s in total, round-robin (1 event/s per topic at
# 10,000/s), and the shared topic SHARED_RATE events/s in every step (× N deliveries). Publishers:
# single-event HTTP POSTs, the one method every target has, from PUBLISHERS processes. Rill targets
# run a second time publishing over its WebSocket (<target>-wspub.json) unless WSPUB=0.
scenario_manytopics() {
  local n="${MANYTOPICS_SUBSCRIBERS:-10000}" ladder="${LADDER:-2500,5000,10000}" t
  local args=(-s "$n" --topics "$n" --shared-rate "${SHARED_RATE:-1}" -w 2
    --publishers "${PUBLISHERS:-2}" -r "$ladder" -d "${STEP_SECONDS:-5}")
  SUB_TOPICS="{topics}"
  for t in $PEERS; do
    log "many topics: $t, $n subscribers on own + shared topic, $ladder events/s + ${SHARED_RATE:-1}/s shared"
    start_server "$t"
    bench "$RESULTS/manytopics/$t.json" "${args[@]}" --concurrency 64
    stop_server
    if supports_ws_publish "$t" && [ "${WSPUB:-1}" = 1 ]; then
      log "many topics: $t, publishing over Rill's WebSocket"
      start_server "$t"
      bench "$RESULTS/manytopics/$t-wspub.json" "${args[@]}" --publish ws --concurrency 256
      stop_server
    fi
  done
  SUB_TOPICS="{topic}"
}

# 100,000 idle SSE connections held with heartbeats, server RSS/PSS summed over every process,
# then a reconnect storm with Last-Event-ID resume checked per connection (`rill bench storm`).
# IDLE_CONNECTIONS (100000), SERVER_WORKERS (6), GEN_PROCESSES (<= 15,000 connections each),
# SOURCE_ADDRESSES (<= 12,500 connections each: 127.0.0.1, .2, …), HEARTBEAT (5s), HOLD_SECONDS
# (15), STORM_GAP (5 events per topic), PHASE_TIMEOUT (300 s per phase). Targets: IDLE_PEERS="rill
# bare" (bare: packages/bench/peers/bare-sse.js in SERVER_WORKERS processes with the same
# heartbeat; hold only, it keeps no history to resume from). Every process needs `ulimit -n` above
# its share of connections (docs/operations.md).
scenario_idle100k() {
  local n="${IDLE_CONNECTIONS:-100000}" workers="${SERVER_WORKERS:-6}" hb="${HEARTBEAT:-5s}" t
  local args=(-s "$n" --hold "${HOLD_SECONDS:-15}" --gap "${STORM_GAP:-5}" --phase-timeout "${PHASE_TIMEOUT:-300}" --json)
  [ -n "${GEN_PROCESSES:-}" ] && args+=(-p "$GEN_PROCESSES")
  [ -n "${SOURCE_ADDRESSES:-}" ] && args+=(--source-addresses "$SOURCE_ADDRESSES")
  local hb_ms
  hb_ms="$(node -e 'const m=/^(\d+)(ms|s)?$/.exec(process.argv[1]);if(!m)process.exit(2);process.stdout.write(String(m[2]==="ms"?+m[1]:+m[1]*1000))' "$hb")"
  mkdir -p "$RESULTS/idle100k"
  for t in ${IDLE_PEERS:-rill bare}; do
    log "idle $n + storm: $t, $workers server processes, heartbeat $hb"
    case "$t" in
      rill)
        rm -rf "$TMP/rill-data"
        # Info level for the one line that says every worker listens; nothing is logged per request.
        RILL_SSE__HEARTBEAT="$hb" $RILL serve --workers "$workers" --engine lmdb --data-dir "$TMP/rill-data" \
          --port "$RILL_PORT" --log-level info > "$TMP/rill.log" 2>&1 &
        SERVER_KILL=$!
        wait_line "$TMP/rill.log" "($workers workers)"
        $RILL bench storm --url "http://127.0.0.1:$RILL_PORT" --server-pid "$SERVER_KILL" "${args[@]}" \
          > "$RESULTS/idle100k/rill-$n.json" || true
        ;;
      bare)
        PORT=8096 WORKERS="$workers" HEARTBEAT_MS="$hb_ms" node "$BENCH/peers/bare-sse.js" > "$TMP/bare.log" 2>&1 &
        SERVER_KILL=$!
        wait_line "$TMP/bare.log" "listening"
        $RILL bench storm --target generic --sub-url "http://127.0.0.1:8096/sub/{topic}" --no-storm \
          --server-pid "$SERVER_KILL" "${args[@]}" > "$RESULTS/idle100k/bare-$n.json" || true
        ;;
      *) echo "unknown idle100k target $t" >&2; return 2 ;;
    esac
    node -e 'const r=require(process.argv[1]);const s=r.server?.perConnectionKiB;console.error(`  held ${r.connected}/${r.subscribers}, heartbeats min ${r.hold.heartbeatsMinPerConnection}/conn, RSS/conn ${s?.rssDelta} KiB (after-before) ${s?.rssTotal} KiB (after/N)${r.storm?`, storm ${r.storm.resumed} resumed in ${r.storm.reconnectSeconds}s, recovered ${r.storm.recoverySeconds}s, gaps ${r.storm.gaps} dups ${r.storm.duplicates}`:""} ${r.ok?"ok":"FAIL"}`)' "$RESULTS/idle100k/$t-$n.json" || true
    stop_server
  done
}

# wait_line <file> <text>: waits (60 s at most) until a server's log has the line that says it is up.
wait_line() {
  for _ in $(seq 1 600); do
    if grep -qF "$2" "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "no \"$2\" in $1 after 60 s" >&2
  return 1
}

[ "${1:-}" = idle100k ] && PEERS="${IDLE_PEERS:-rill bare}"
install_peers
case "${1:-}" in
  fanout) shift; scenario_fanout "$@" ;;
  idle) shift; scenario_idle "$@" ;;
  ingest) scenario_ingest ;;
  catchup) scenario_catchup ;;
  storm) scenario_storm ;;
  manytopics) scenario_manytopics ;;
  idle100k) scenario_idle100k ;;
  all) scenario_fanout; scenario_idle; scenario_ingest; scenario_catchup; scenario_storm; scenario_manytopics ;;
  *) sed -n '2,24p' "$0"; exit 2 ;;
esac
log "results in $RESULTS"
