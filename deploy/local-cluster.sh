#!/usr/bin/env bash
# Starts a local Rookery cluster on loopback: one Redis, session nodes and
# connection managers (cm), all sharing one embedded store file (fine for
# local runs and tests; production uses ScyllaDB). See docs/operations/cluster.md.
#
# Usage: deploy/local-cluster.sh [--sessions N] [--cms N] [--s2s N] [--dir DIR]
#                                [--base-port P] [--bin PATH] [--domain D]
#                                [--peer DOMAIN=HOST:PORT]...
# cm i listens for clients on P+10*i (STARTTLS) and P+10*i+1 (direct TLS),
# s2s node j (federation, none by default) on P+4000+j, sharing one dialback
# secret; --peer adds an [s2s.peers] route (repeatable).
# gRPC of node k on P+1000+k, HTTP of node k on P+2000+k, Redis on P+3000.
# Writes DIR/cluster.env (addresses and PIDs) once every node is up, then
# waits; Ctrl-C (or SIGTERM) stops everything.
set -euo pipefail

sessions=2 cms=2 s2s=0 dir="" base=15000 bin="" domain=localhost peers=()
while (($#)); do
  case "$1" in
    --sessions) sessions=$2; shift 2 ;;
    --cms) cms=$2; shift 2 ;;
    --s2s) s2s=$2; shift 2 ;;
    --peer) peers+=("$2"); shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --base-port) base=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --domain) domain=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release -q -p rookery)
  bin="${CARGO_TARGET_DIR:-$root/target}/release/rookery"
fi
command -v redis-server >/dev/null || { echo "redis-server is needed (apt-get install redis-server)" >&2; exit 1; }
[ -n "$dir" ] || dir="$(mktemp -d /tmp/rookery-cluster.XXXXXX)"
mkdir -p "$dir/data"
redis_port=$((base + 3000))

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 0' INT TERM

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$dir" --logfile "$dir/redis.log" &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

# node k: role, name; writes its config and starts it.
start_node() {
  local k=$1 role=$2 name=$3 c2s="[]" tls="[]" web="[]" s2s_listen="[]"
  if [ "$role" = cm ]; then
    local i=$4
    c2s="[\"127.0.0.1:$((base + 10 * i))\"]"
    tls="[\"127.0.0.1:$((base + 10 * i + 1))\"]"
    web="[\"127.0.0.1:$((base + 10 * i + 2))\"]"
  fi
  if [ "$role" = s2s ]; then
    s2s_listen="[\"127.0.0.1:$((base + 4000 + $4))\"]"
  fi
  cat > "$dir/$name.toml" <<CONF
[server]
domain = "$domain"
data_dir = "$dir/data"
[c2s]
listen = $c2s
direct_tls_listen = $tls
[http]
listen = ["127.0.0.1:$((base + 2000 + k))"]
[web]
tls_listen = $web
[s2s]
listen = $s2s_listen
dialback_secret_file = "$dir/dialback-secret"
$peer_tables
[cluster]
node = "$name"
grpc_listen = "127.0.0.1:$((base + 1000 + k))"
[cluster.redis]
urls = ["redis://127.0.0.1:$redis_port"]
heartbeat_ms = 500
ttl_ms = 2000
CONF
  "$bin" --config "$dir/$name.toml" serve --role "$role" >"$dir/$name.log" 2>&1 &
  pids+=($!)
  echo "${name^^}_PID=$!" >> "$dir/cluster.env"
  # Wait for its HTTP endpoint: the node is up.
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$((base + 2000 + k))") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$name did not start; see $dir/$name.log" >&2
  tail -5 "$dir/$name.log" >&2
  exit 1
}

# Federation: one dialback secret for every s2s node, and the static routes.
[ -s "$dir/dialback-secret" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/dialback-secret"
peer_tables=""
for p in "${peers[@]}"; do
  peer_tables+="[s2s.peers.\"${p%%=*}\"]"$'\n'"address = \"${p#*=}\""$'\n'
done

: > "$dir/cluster.env"
echo "REDIS_PORT=$redis_port" >> "$dir/cluster.env"
echo "REDIS_PID=${pids[0]}" >> "$dir/cluster.env"
k=0
for s in $(seq 1 "$sessions"); do start_node $k session "session$s"; k=$((k + 1)); done
for c in $(seq 1 "$cms"); do
  start_node $k cm "cm$c" "$c"; k=$((k + 1))
  echo "CM${c}_C2S=127.0.0.1:$((base + 10 * c))" >> "$dir/cluster.env"
  echo "CM${c}_TLS=127.0.0.1:$((base + 10 * c + 1))" >> "$dir/cluster.env"
done
for j in $(seq 1 "$s2s"); do
  start_node $k s2s "s2s$j" "$j"; k=$((k + 1))
  echo "S2S${j}=127.0.0.1:$((base + 4000 + j))" >> "$dir/cluster.env"
done
echo "DIR=$dir" >> "$dir/cluster.env"
echo "READY=1" >> "$dir/cluster.env"
echo "cluster up: $sessions session node(s), $cms cm(s), $s2s s2s node(s); $dir/cluster.env"
echo "add users with: $bin --config $dir/session1.toml user add alice -p secret"
wait
