#!/usr/bin/env bash
# A/B of opened volumes at 4 KiB random I/O, QD32 (issue 12 item 4): every
# volume is opened side by side, then the rounds alternate between them
# (best of ROUNDS, load average printed). Volumes: "aes" (aes-xts-plain64,
# in-process engine), "waes" (waes-xts-plain64 through the custodian,
# version-2 request ring) and "waes-socket" (the same, with the ring turned
# off by WRAPCRYPT_CUSTODIAN_RING=off: one socket CRYPT per request), and
# "waes:SPEC" (the ring tuned by WRAPCRYPT_CUSTODIAN_RING=SPEC, e.g.
# waes:1,20,50 = 1 daemon thread, 20 µs client spin, 50 µs daemon spin).
#
# A volume name ending in "@b" (e.g. "aes@b waes@b") is opened by the
# binary W_B instead (a baseline build, with its own wrapcrypt-custodiand
# beside it on a socket of its own), so one run compares two builds.
#
# Env: W (release wrapcrypt; wrapcrypt-custodiand beside it), W_B, VOLS (default
# "aes waes-socket waes"), ROUNDS (4), MIB (512), RUNTIME (5 s), PERF=1 adds
# `perf stat` of the FUSE server and the custodian during one extra
# randread run of each volume.
set -euo pipefail
: "${W:?W must name the wrapcrypt binary}"
VOLS=${VOLS:-aes waes-socket waes}
ROUNDS=${ROUNDS:-4}
MIB=${MIB:-512}
RUNTIME=${RUNTIME:-5}
dir=$(mktemp -d /var/tmp/wrapcrypt-waes-ab.XXXXXX)
export WRAPCRYPT_CUSTODIAN_SOCKET="$dir/c.sock"
names=()
cleanup() {
  for n in "${names[@]}"; do "$W" close "$n" >/dev/null 2>&1 || true; done
  local p s
  for s in c cb; do
    p=$(cat "$dir/$s.state/custodiand.lock" 2>/dev/null || true)
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  rm -rf "$dir"
}
trap cleanup EXIT
printf 'bench-passphrase' >"$dir/pass"
fmt=(-q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --sector-size 4096 --key-file "$dir/pass")
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0; }
declare -A dev pid cust
k=0
for v in $VOLS; do
  c=${v%%[-:@]*}
  B=$W sock=c
  case $v in *@b) B=${W_B:?W_B must name the baseline wrapcrypt binary} sock=cb ;; esac
  k=$((k + 1))
  img="$dir/$k.img"
  truncate -s $((MIB + 16))M "$img"
  export WRAPCRYPT_CUSTODIAN_SOCKET="$dir/$sock.sock"
  "$B" luksFormat "${fmt[@]}" --cipher "$c-xts-plain64" --key-size 512 "$img"
  name="wcab-$k-$$"
  spec=${v%@b}
  case $spec in
    waes-socket) WRAPCRYPT_CUSTODIAN_RING=off "$B" open --key-file "$dir/pass" "$img" "$name" ;;
    waes:*) WRAPCRYPT_CUSTODIAN_RING=${spec#waes:} "$B" open --key-file "$dir/pass" "$img" "$name" ;;
    *) env -u WRAPCRYPT_CUSTODIAN_RING "$B" open --key-file "$dir/pass" "$img" "$name" ;;
  esac
  names+=("$name")
  dev[$v]=/dev/mapper/$name
  pid[$v]=$(jq -r .pid "/run/wrapcrypt/$name/state.json")
  dd if=/dev/zero of="${dev[$v]}" bs=1M count="$MIB" oflag=direct status=none
  cust[$v]=$(cat "$dir/$sock.state/custodiand.lock" 2>/dev/null || echo 0)
done
cpus() { # server (+ custodian for waes) CPU seconds
  local s
  s=$(cpu "${pid[$1]}")
  case $1 in waes*) s=$(python3 -c "print($s + $(cpu "${cust[$1]}"))") ;; esac
  echo "$s"
}
fio_r() { # dev randread|randwrite -> IOPS
  local k=read j
  [ "$2" = randwrite ] && k=write
  j=$(fio --name=r32 --filename="$1" --rw="$2" --bs=4k --direct=1 --ioengine=libaio \
    --iodepth=32 --size="${MIB}M" --time_based --runtime="$RUNTIME" --output-format=json 2>/dev/null)
  jq -r ".jobs[0].$k.iops | round" <<<"$j"
}
declare -A RR RW CPUS IOS
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= ROUNDS; r++)); do
  for v in $VOLS; do
    c0=$(cpus "$v")
    rr=$(fio_r "${dev[$v]}" randread)
    rw=$(fio_r "${dev[$v]}" randwrite)
    c1=$(cpus "$v")
    RR[$v]+=" $rr"
    RW[$v]+=" $rw"
    CPUS[$v]=$(python3 -c "print(${CPUS[$v]:-0} + $c1 - $c0)")
    IOS[$v]=$(python3 -c "print(${IOS[$v]:-0} + ($rr + $rw) * $RUNTIME)")
    echo "round $r $v: randread $rr IOPS, randwrite $rw IOPS (load $(cut -d' ' -f1 /proc/loadavg))"
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
for v in $VOLS; do
  # shellcheck disable=SC2086
  python3 - "$v" "${CPUS[$v]}" "${IOS[$v]}" ${RR[$v]} / ${RW[$v]} <<'EOF'
import sys
v, cpu, ios = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
rest = sys.argv[4:]
k = rest.index("/")
rr, rw = [int(x) for x in rest[:k]], [int(x) for x in rest[k + 1:]]
print(f"{v}: best randread {max(rr)} IOPS, best randwrite {max(rw)} IOPS; "
      f"CPU {cpu / ios * 1e6:.1f} µs per I/O (server{' + custodian' if v.startswith('waes') else ''})")
EOF
done
if [ "${PERF:-0}" = 1 ]; then
  for v in $VOLS; do
    p=${pid[$v]}
    case $v in waes*) p="$p,${cust[$v]}" ;; esac
    perf stat -e context-switches,cpu-clock -p "$p" -o "$dir/perf.out" -- sleep "$RUNTIME" &
    sp=$!
    iops=$(fio_r "${dev[$v]}" randread)
    wait $sp || true
    python3 - "$v" "$iops" "$RUNTIME" "$dir/perf.out" <<'EOF'
import re, sys
v, iops, t, f = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
txt = open(f).read()
cs = float(re.search(r"([\d,.]+)\s+context-switches", txt).group(1).replace(",", ""))
ms = float(re.search(r"([\d,.]+)\s+msec cpu-clock", txt).group(1).replace(",", ""))
n = iops * t
print(f"perf stat {v}: {iops:.0f} IOPS randread, {cs / n:.2f} context switches and "
      f"{ms * 1e3 / n:.1f} µs CPU per I/O (server{' + custodian' if v.startswith('waes') else ''})")
EOF
  done
fi
