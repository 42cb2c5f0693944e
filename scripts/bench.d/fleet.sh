#!/usr/bin/env bash
# fleet rotate at scale (docs/fleet.md, "Rotation"). Prints rows
#   name|ratio|detail|command
# For each size N in FLEET_BENCH_SIZES (default "100 1000") across
# FLEET_BENCH_HOSTS (default 20) simulated hosts (one custodian each, a
# real PyKMIP server, header-only sparse images with pbkdf2 1000
# iterations): rotation wall time, volumes per second, key-manager
# operations and messages (round trips) per volume (the server's
# "Processing operation" and "Received request" log lines during the
# rotation, coordinator and hosts together), peak coordinator RSS. The ratio is the rotation's time
# per volume ÷ the time per volume of the same re-wrap done by hand on
# one host in the same run (reencipher --staged, set-master-key,
# reencipher --complete on FLEET_BENCH_REF volumes, no coordinator).
# Not run by the tests; `make bench` runs it.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
W=${WRAPCRYPT_BIN:-$ROOT/target/release/wrapcrypt}
[ -x "$(dirname "$W")/wrapcrypt-custodiand" ] || { echo "wrapcrypt-custodiand missing beside $W" >&2; exit 1; }
SIZES=${FLEET_BENCH_SIZES:-100 1000}
HOSTS=${FLEET_BENCH_HOSTS:-20}
REF=${FLEET_BENCH_REF:-20}
JOBS=${FLEET_BENCH_JOBS:-8}
work=$(mktemp -d /tmp/wrapcrypt-fleet-bench.XXXXXX)
stop() {
  for s in "$work"/*/h*/c.state/custodiand.lock "$work"/ref/c.state/custodiand.lock; do
    [ -f "$s" ] && kill "$(cat "$s")" 2>/dev/null || true
  done
  for k in "$work"/*/kmip; do [ -d "$k" ] && bash scripts/kmip-server.sh stop "$k" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap stop EXIT
now() { date +%s.%N; }
secs() { python3 -c 'import sys; print(f"{float(sys.argv[2])-float(sys.argv[1]):.3f}")' "$1" "$2"; }
fast=(--pbkdf pbkdf2 --pbkdf-force-iterations 1000)
# PyKMIP's log rotates (1 MB, 5 backups): count over every file, and give
# up (-1) once the oldest backup exists, as lines may have been dropped.
logcount() { # DIR PATTERN
  if [ -e "$1/server.log.5" ]; then echo -100000000; return; fi
  cat "$1"/server.log* 2>/dev/null | grep -c "$2" || echo 0
}
ops() { logcount "$1" "Processing operation"; }
msgs() { logcount "$1" "Received request at time"; }

# One fleet of N volumes; prints "wall vol/s ops_per_vol msgs_per_vol peak_kib".
fleet() { # N
  local n=$1 d=$work/n$1 port
  mkdir -p "$d"
  port=$(bash scripts/kmip-server.sh start "$d/kmip" | sed -n 's/^port=//p')
  mkconf() {
    printf 'server = 127.0.0.1:%s\nca = %s\ncert = %s\nkey = %s\ngroup = bench\ntimeout = 30\n' \
      "$port" "$d/kmip/ca.pem" "$d/kmip/client.pem" "$d/kmip/client.key" >"$1"
    chmod 600 "$1"
  }
  mkconf "$d/coord.conf"
  echo "group = bench" >"$d/hosts.conf"
  local h v
  for h in $(seq 1 "$HOSTS"); do
    mkdir -p "$d/h$h"; mkconf "$d/h$h/kmip.conf"
  done
  for v in $(seq 1 "$n"); do
    h=$(( (v - 1) % HOSTS + 1 ))
    truncate -s 17M "$d/h$h/v$v.img"
    printf 'bench %s' "$v" >"$d/h$h/v$v.key"
    WRAPCRYPT_CUSTODIAN_SOCKET=$d/h$h/c.sock WRAPCRYPT_CUSTODIAN_KMIP_CONFIG=$d/h$h/kmip.conf \
      "$W" luksFormat -q --cipher waes-xts-plain64 "${fast[@]}" "$d/h$h/v$v.img" "$d/h$h/v$v.key" </dev/null >/dev/null
  done
  for h in $(seq 1 "$HOSTS"); do
    printf '\n[host h%s]\nsocket = %s\nkmip_config = %s\n' "$h" "$d/h$h/c.sock" "$d/h$h/kmip.conf" >>"$d/hosts.conf"
    for f in "$d/h$h"/v*.img; do echo "volume = $f key-file=${f%.img}.key" >>"$d/hosts.conf"; done
  done
  local before t0 t1 after peak mb ma
  before=$(ops "$d/kmip")
  mb=$(msgs "$d/kmip")
  t0=$(now)
  peak=$(/usr/bin/time -f '%M' "$W" fleet rotate --group bench --hosts "$d/hosts.conf" --kmip-config "$d/coord.conf" \
    --plan "$d/plan" --jobs "$JOBS" 2>&1 >"$d/rotate.log" | tail -1)
  t1=$(now)
  after=$(ops "$d/kmip")
  ma=$(msgs "$d/kmip")
  tail -1 "$d/rotate.log" | grep -q "$n/$n volumes on the new master key" || { echo "fleet bench: rotation of $n failed" >&2; tail -3 "$d/rotate.log" >&2; exit 1; }
  python3 -c 'import sys; a=sys.argv; w=float(a[2])-float(a[1]); n=int(a[3]); print(f"{w:.2f} {n/w:.2f} {(int(a[5])-int(a[4]))/n:.2f} {(int(a[7])-int(a[6]))/n:.2f} {a[8]}")' \
    "$t0" "$t1" "$n" "$before" "$after" "$mb" "$ma" "$peak"
  for s in "$d"/h*/c.state/custodiand.lock; do kill "$(cat "$s")" 2>/dev/null || true; done
  bash scripts/kmip-server.sh stop "$d/kmip" >/dev/null 2>&1 || true
}

# Reference: the same re-wrap by hand on one host (custodian, no key manager).
r=$work/ref; mkdir -p "$r"
export_ref() { WRAPCRYPT_CUSTODIAN_SOCKET=$r/c.sock "$W" "$@" </dev/null >/dev/null; }
for v in $(seq 1 "$REF"); do
  truncate -s 17M "$r/v$v.img"; printf 'ref %s' "$v" >"$r/v$v.key"
  export_ref luksFormat -q --cipher waes-xts-plain64 "${fast[@]}" "$r/v$v.img" "$r/v$v.key"
done
export_ref custodian load-new-master-key
t0=$(now)
for v in $(seq 1 "$REF"); do export_ref -q reencipher --staged --to-new --key-file "$r/v$v.key" "$r/v$v.img"; done
export_ref custodian set-master-key
for v in $(seq 1 "$REF"); do export_ref -q reencipher --complete --key-file "$r/v$v.key" "$r/v$v.img"; done
t1=$(now)
ref_per=$(python3 -c 'import sys; print((float(sys.argv[2])-float(sys.argv[1]))/int(sys.argv[3]))' "$t0" "$t1" "$REF")

for n in $SIZES; do
  read -r wall rate reqs rts peak < <(fleet "$n")
  ratio=$(python3 -c 'import sys; print(f"{float(sys.argv[1])/int(sys.argv[2])/float(sys.argv[3]):.2f}")' "$wall" "$n" "$ref_per")
  echo "fleet rotate, $n volumes on $HOSTS hosts (s per volume ÷ by-hand reencipher on one host)|$ratio|wall ${wall} s, ${rate} volumes/s, ${reqs} KMIP operations/volume in ${rts} messages (round trips)/volume, coordinator peak ${peak} KiB, --jobs $JOBS, reference $(python3 -c "print(f'{$ref_per:.3f}')") s/volume|FLEET_BENCH_SIZES=$n scripts/bench.d/fleet.sh"
done
