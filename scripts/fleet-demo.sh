#!/usr/bin/env bash
# make fleet-demo: a master-key rotation across simulated hosts through a
# real PyKMIP key manager, with the coordinator and host custodians killed
# on the way, resumed, and every volume's data checked (docs/fleet.md).
#
#   FLEET_HOSTS=3 FLEET_VOLUMES=12 FLEET_DIR=/var/tmp/wrapcrypt-fleet-demo make fleet-demo
#
# FLEET_VOLUMES is the total, spread over the hosts. Ends with one line
#   fleet: M/M volumes on the new master key, 0 lost, K kills survived, old key Deactivated
# and leaves the images, key files, each host's custodian state, the plan
# and the key manager's database in FLEET_DIR (the processes are stopped).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HOSTS=${FLEET_HOSTS:-3}
VOLS=${FLEET_VOLUMES:-12}
DIR=${FLEET_DIR:-/var/tmp/wrapcrypt-fleet-demo}
W=${WRAPCRYPT_BIN:-$ROOT/target/release/wrapcrypt}
GROUP=demo
DATA_KIB=${FLEET_DATA_KIB:-512}
log() { printf '==> %s\n' "$*" >&2; }
die() { echo "fleet-demo: $*" >&2; exit 1; }

[ "$HOSTS" -ge 1 ] && [ "$VOLS" -ge 1 ] || die "FLEET_HOSTS and FLEET_VOLUMES must be >= 1"
bash scripts/install-deps.sh >/dev/null
[ -x "$W" ] && [ -x "$(dirname "$W")/wrapcrypt-custodiand" ] || cargo build --release --workspace --bins

stop_all() {
  for s in "$DIR"/h*/c.state/custodiand.lock; do
    [ -f "$s" ] && kill "$(cat "$s")" 2>/dev/null || true
  done
  [ -d "$DIR/kmip" ] && bash scripts/kmip-server.sh stop "$DIR/kmip" >/dev/null 2>&1 || true
}
# A previous demo's processes go before its files.
stop_all
for m in /dev/mapper/fleetdemo-*; do [ -e "$m" ] && "$W" close "$(basename "$m")" || true; done
rm -rf "$DIR"
mkdir -p "$DIR"
trap stop_all EXIT

log "key manager: PyKMIP with certificates made by openssl"
port=$(bash scripts/kmip-server.sh start "$DIR/kmip" | sed -n 's/^port=//p')
conf() { # FILE
  cat >"$1" <<CONF
server = 127.0.0.1:$port
ca = $DIR/kmip/ca.pem
cert = $DIR/kmip/client.pem
key = $DIR/kmip/client.key
group = $GROUP
timeout = 20
CONF
  chmod 600 "$1"
}
conf "$DIR/coordinator.conf"

host_env() { # N -> env assignments for host N
  echo "WRAPCRYPT_CUSTODIAN_SOCKET=$DIR/h$1/c.sock WRAPCRYPT_CUSTODIAN_KMIP_CONFIG=$DIR/h$1/kmip.conf"
}
on() { # N CMD... : run wrapcrypt on host N
  local n=$1; shift
  env $(host_env "$n") "$W" "$@" </dev/null
}

log "$HOSTS host(s), $VOLS volume(s) with ${DATA_KIB} KiB of data each"
hosts_file=$DIR/hosts.conf
echo "group = $GROUP" >"$hosts_file"
for h in $(seq 1 "$HOSTS"); do
  mkdir -p "$DIR/h$h"
  conf "$DIR/h$h/kmip.conf"
  printf '\n[host h%s]\nsocket = %s\nkmip_config = %s\n' "$h" "$DIR/h$h/c.sock" "$DIR/h$h/kmip.conf" >>"$hosts_file"
done
: >"$DIR/hashes"
for v in $(seq 1 "$VOLS"); do
  h=$(( (v - 1) % HOSTS + 1 ))
  img=$DIR/h$h/v$v.img key=$DIR/h$h/v$v.key
  truncate -s 24M "$img"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$key"
  chmod 600 "$key"
  on "$h" luksFormat -q --cipher waes-xts-plain64 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 "$img" "$key"
  head -c $((DATA_KIB * 1024)) /dev/urandom >"$DIR/data.tmp"
  on "$h" open "$img" "fleetdemo-$v" --key-file "$key"
  dd if="$DIR/data.tmp" of="/dev/mapper/fleetdemo-$v" bs=64K oflag=direct status=none
  sync
  got=$(head -c $((DATA_KIB * 1024)) "/dev/mapper/fleetdemo-$v" | sha256sum | cut -d' ' -f1)
  on "$h" close "fleetdemo-$v"
  want=$(sha256sum <"$DIR/data.tmp" | cut -d' ' -f1)
  [ "$got" = "$want" ] || die "volume $v: data read back differs before the rotation"
  echo "$v $h $want" >>"$DIR/hashes"
  echo "volume = $img key-file=$key" >>"$DIR/hosts.tmp.$h"
done
rm -f "$DIR/data.tmp"
# Volumes go into their host's section.
{
  echo "group = $GROUP"
  for h in $(seq 1 "$HOSTS"); do
    printf '\n[host h%s]\nsocket = %s\nkmip_config = %s\n' "$h" "$DIR/h$h/c.sock" "$DIR/h$h/kmip.conf"
    [ -f "$DIR/hosts.tmp.$h" ] && cat "$DIR/hosts.tmp.$h"
  done
} >"$hosts_file"
rm -f "$DIR"/hosts.tmp.*

declare -A old
for h in $(seq 1 "$HOSTS"); do
  old[$h]=$(on "$h" custodian status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["kmip"]["registers"]["CURRENT"]["object-id"])')
done
log "old CURRENT keys: $(for h in $(seq 1 "$HOSTS"); do printf 'h%s=kmip:%s ' "$h" "${old[$h]}"; done)"

plan=$DIR/rotate.plan
rot() { # extra args...
  "$W" fleet rotate --kmip-config "$DIR/coordinator.conf" --plan "$plan" --jobs 2 --retry-delay 1 --retries 3 "$@"
}
kill_host() { # N
  local lock=$DIR/h$1/c.state/custodiand.lock
  [ -f "$lock" ] && kill -9 "$(cat "$lock")" 2>/dev/null && log "host h$1: custodian killed (SIGKILL)" && kills=$((kills + 1))
  return 0
}
done_steps() { python3 -c 'import json,sys; print(sum(s["state"]=="done" for s in json.load(open(sys.argv[1]))["steps"]))' "$plan" 2>/dev/null || echo 0; }
total_steps() { python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["steps"]))' "$plan"; }

kills=0
coord_kill() { # rc
  if [ "$1" = 137 ]; then kills=$((kills + 1)); log "coordinator killed (SIGKILL) after $(done_steps)/$(total_steps) steps recorded"; fi
}
log "rotation, coordinator killed after its 3rd step"
rc=0; WRAPCRYPT_FLEET_FAULT_AT=3 rot --group "$GROUP" --hosts "$hosts_file" >"$DIR/rotate-1.log" 2>&1 || rc=$?
coord_kill "$rc"
kill_host 2
log "resume, coordinator killed after 5 more steps"
rc=0; WRAPCRYPT_FLEET_FAULT_AT=5 rot --resume >"$DIR/rotate-2.log" 2>&1 || rc=$?
coord_kill "$rc"
log "resume in the background; host h1's custodian killed mid-way, then the coordinator"
rc=0
# A simple command, so that $! is the coordinator itself.
"$W" fleet rotate --plan "$plan" --jobs 2 --retry-delay 1 --retries 3 --resume >"$DIR/rotate-3.log" 2>&1 &
pid=$!
target=$(( $(done_steps) + 3 ))
for _ in $(seq 1 600); do
  [ "$(done_steps)" -ge "$target" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
kill_host 1
sleep 0.5
if kill -9 "$pid" 2>/dev/null; then kills=$((kills + 1)); log "coordinator killed (SIGKILL) after $(done_steps)/$(total_steps) steps recorded"; fi
wait "$pid" 2>/dev/null || true
log "resume to the end"
ok=0
for attempt in 1 2 3; do
  if rot --resume >"$DIR/rotate-final-$attempt.log" 2>&1; then ok=1; break; fi
  tail -1 "$DIR/rotate-final-$attempt.log" >&2
done
[ "$ok" = 1 ] || die "the rotation did not finish; see $DIR/rotate-final-*.log"
tail -1 "$DIR/rotate-final-$attempt.log" >&2

new=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["new_key"]["id"])' "$plan")
log "checking every volume (open through FUSE + loop, sha256 of the data) and every host"
lost=0 moved=0 deact=1
while read -r v h want; do
  img=$DIR/h$h/v$v.img key=$DIR/h$h/v$v.key
  reg=$(on "$h" validate --json "$img" --key-file "$key" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["register"] if d["verification-pattern-matches"] and not d["reencipher-staged"] else "bad")') || reg=bad
  if on "$h" open "$img" "fleetdemo-$v" --key-file "$key" 2>"$DIR/open.err"; then
    got=$(head -c $((DATA_KIB * 1024)) "/dev/mapper/fleetdemo-$v" | sha256sum | cut -d' ' -f1)
    on "$h" close "fleetdemo-$v"
  else
    got=none; cat "$DIR/open.err" >&2
  fi
  if [ "$got" != "$want" ]; then lost=$((lost + 1)); log "volume $v: LOST (data $got)"; continue; fi
  [ "$reg" = CURRENT ] && moved=$((moved + 1))
done <"$DIR/hashes"
rm -f "$DIR/open.err"
for h in $(seq 1 "$HOSTS"); do
  st=$(on "$h" custodian status --json)
  python3 -c '
import json, sys
new, old, st = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
r = st["kmip"]["registers"]
ok = r["CURRENT"]["object-id"] == new and r["CURRENT"]["kmip-state"] == "Active" \
     and r["OLD"]["object-id"] == old and r["OLD"]["kmip-state"] == "Deactivated"
sys.exit(0 if ok else 1)' "$new" "${old[$h]}" "$st" || { deact=0; log "host h$h: registers not as expected: $st"; }
done
state=$([ "$deact" = 1 ] && echo "old key Deactivated" || echo "old key NOT Deactivated")
echo "fleet: $moved/$VOLS volumes on the new master key, $lost lost, $kills kills survived, $state"
[ "$moved" = "$VOLS" ] && [ "$lost" = 0 ] && [ "$deact" = 1 ]
