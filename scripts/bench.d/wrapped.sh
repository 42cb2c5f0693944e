#!/usr/bin/env bash
# Wrapped keys: waes-xts-plain64 through the key custodian (memfd sessions)
# against the in-process software engine; an opened waes volume against an
# opened aes-xts-plain64 volume (same FUSE + loop path); PKCS#11 (SoftHSM2
# in-process and through p11-kit server) against the software engine.
#
# Env: W (release wrapcrypt), WORK (scratch dir). Rows on stdout as
# "name|ratio|detail|command"; progress on stderr. BENCH_WRAPPED_MIB sets
# the volume size (default 1024), BENCH_WRAPPED_ROUNDS the rounds (best of).
set -euo pipefail
: "${W:?W must name the wrapcrypt binary}" "${WORK:?WORK must name a scratch dir}"
MIB=${BENCH_WRAPPED_MIB:-1024}
ROUNDS=${BENCH_WRAPPED_ROUNDS:-4}
REL=$(dirname "$W")
command -v fio >/dev/null || { echo "wrapped.sh: fio missing (scripts/install-deps.sh)" >&2; exit 1; }
log() { echo "wrapped.sh: $*" >&2; }
ratio() { python3 -c 'import sys; print(f"{float(sys.argv[1])/float(sys.argv[2]):.3f}")' "$1" "$2"; }
maxf() { python3 -c 'import sys; print(max(float(x) for x in sys.argv[1:]))' "$@"; }

dir=$(mktemp -d /var/tmp/wrapcrypt-bench-wrapped.XXXXXX)
names=()
export WRAPCRYPT_CUSTODIAN_SOCKET="$dir/c.sock"
cleanup() {
  for n in "${names[@]}"; do "$W" close "$n" >/dev/null 2>&1 || true; done
  # The custodian started on demand for this run (its pid is in its lock file).
  local p
  p=$(cat "$dir/c.state/custodiand.lock" 2>/dev/null || true)
  [ -n "$p" ] && kill "$p" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# 1. Sector crypto: custodian ÷ in-process engine, same buffer sizes.
# 1 GiB per measurement: 256 MiB (10–50 ms) scattered by ±40 % here.
j=$(WRAPCRYPT_CUSTODIAND="$REL/wrapcrypt-custodiand" "$REL/examples/custodian_speed" --total-mib 1024 | tee /dev/stderr | tail -1)
cmd="cargo run --release -p wrapcrypt-provider --example custodian_speed -- --total-mib 1024"
python3 - "$j" "$cmd" <<'EOF'
import json, sys
rows, cmd = json.loads(sys.argv[1]), sys.argv[2]
for r in rows:
    k = f"{r['call'] >> 10} KiB calls, {r['threads']} thread(s)"
    print(f"waes via custodian (shared-memory buffer, in place) ÷ in-process engine, {k}|{r['shared_ratio']:.3f}|"
          f"{r['shared_mb_s']:.0f} vs {r['inprocess_mb_s']:.0f} MB/s wall; CPU s {r['shared_cpu_s']:.2f} vs {r['inprocess_cpu_s']:.2f}|{cmd}")
for r in rows:
    if r['call'] == 1 << 20:
        k = f"{r['call'] >> 10} KiB calls, {r['threads']} thread(s)"
        print(f"waes via custodian (caller's buffer, copied through a slot) ÷ in-process engine, {k}|{r['copy_ratio']:.3f}|"
              f"{r['copy_mb_s']:.0f} vs {r['inprocess_mb_s']:.0f} MB/s wall; CPU s {r['copy_cpu_s']:.2f} vs {r['inprocess_cpu_s']:.2f}|{cmd}")
EOF

# 2. Opened devices: waes (custodian) ÷ aes-xts-plain64 (in-process engine).
# waes uses protocol version 2's shared-memory request ring (the default);
# "waes1" is a second waes volume opened with WRAPCRYPT_CUSTODIAN_RING=off,
# so its CRYPTs are version-1 socket round trips (QD32 rows only).
printf 'bench-passphrase' >"$dir/pass"
fmt=(-q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --sector-size 4096 --key-file "$dir/pass")
fio_seq() { # dev read|write
  local j
  j=$(fio --name=seq --filename="$1" --rw="$2" --bs=1M --direct=1 --ioengine=psync \
    --size="${MIB}M" --end_fsync=1 --output-format=json 2>/dev/null)
  jq -r ".jobs[0].$2.bw_bytes / 1e6 | . * 10 | round / 10" <<<"$j"
}
# CPU seconds (user + system) of a process so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0; }
add() { python3 -c 'import sys; print(sum(float(x) for x in sys.argv[1:]))' "$@"; }
declare -A dev pid
for c in aes waes waes1; do
  img="$dir/$c.img"
  truncate -s $((MIB + 16))M "$img"
  "$W" luksFormat "${fmt[@]}" --cipher "${c%1}-xts-plain64" --key-size 512 "$img"
  name="wcbench-$c-$$"
  if [ "$c" = waes1 ]; then
    WRAPCRYPT_CUSTODIAN_RING=off "$W" open --key-file "$dir/pass" "$img" "$name"
  else
    env -u WRAPCRYPT_CUSTODIAN_RING "$W" open --key-file "$dir/pass" "$img" "$name"
  fi
  names+=("$name")
  dev[$c]=/dev/mapper/$name
  pid[$c]=$(jq -r .pid "/run/wrapcrypt/$name/state.json")
  dd if=/dev/zero of="${dev[$c]}" bs=1M count="$MIB" oflag=direct status=none
done
cust=$(cat "$dir/c.state/custodiand.lock")
# The waes figures count the custodian's CPU too: it does that path's crypto.
cpus() { if [ "$1" != aes ]; then add "$(cpu "${pid[$1]}")" "$(cpu "$cust")"; else cpu "${pid[aes]}"; fi; }
declare -A W_ R_ CPU=([aes]=0 [waes]=0)
load0=$(cut -d' ' -f1 /proc/loadavg)
for ((r = 1; r <= ROUNDS; r++)); do
  for c in aes waes; do
    c0=$(cpus $c)
    w=$(fio_seq "${dev[$c]}" write)
    rd=$(fio_seq "${dev[$c]}" read)
    CPU[$c]=$(python3 -c 'import sys; print(float(sys.argv[1]) + float(sys.argv[3]) - float(sys.argv[2]))' "${CPU[$c]}" "$c0" "$(cpus $c)")
    W_[$c]+=" $w"
    R_[$c]+=" $rd"
    log "round $r $c: write $w MB/s, read $rd MB/s"
  done
done
# shellcheck disable=SC2086
{ wa=$(maxf ${W_[waes]}); aa=$(maxf ${W_[aes]}); wr=$(maxf ${R_[waes]}); ar=$(maxf ${R_[aes]}); }
load1=$(cut -d' ' -f1 /proc/loadavg)
gib=$(python3 -c "print(2 * $MIB * $ROUNDS / 1024)")
cpg() { python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}")' "$1" "$gib"; }
note="CPU (server + custodian) $(cpg "${CPU[waes]}") vs (server) $(cpg "${CPU[aes]}") s/GiB; load average $load0 → $load1"
cmd="fio --filename=/dev/mapper/NAME --rw=read,write --bs=1M --direct=1 --size=${MIB}M (best of $ROUNDS; scripts/bench.d/wrapped.sh)"
echo "opened waes-xts-plain64 (custodian) seq read ÷ opened aes-xts-plain64|$(ratio "$wr" "$ar")|$wr vs $ar MB/s; $note|$cmd"
echo "opened waes-xts-plain64 (custodian) seq write ÷ opened aes-xts-plain64|$(ratio "$wa" "$aa")|$wa vs $aa MB/s; $note|$cmd"

# 2b. Small random I/O at queue depth 32 (issue 12: waes ÷ aes ≥ 0.9):
# 4 KiB, libaio, O_DIRECT, alternating aes / waes, best of the rounds.
fio_rand32() { # dev randread|randwrite -> IOPS
  local j
  j=$(fio --name=r32 --filename="$1" --rw="$2" --bs=4k --direct=1 --ioengine=libaio \
    --iodepth=32 --size="${MIB}M" --time_based --runtime=5 --output-format=json 2>/dev/null)
  local k=read
  [ "$2" = randwrite ] && k=write
  jq -r ".jobs[0].$k.iops | round" <<<"$j"
}
declare -A RR RW CPU4=([aes]=0 [waes]=0 [waes1]=0) IO4=([aes]=0 [waes]=0 [waes1]=0)
load0=$(cut -d' ' -f1 /proc/loadavg)
for ((r = 1; r <= ROUNDS; r++)); do
  for c in aes waes waes1; do
    c0=$(cpus $c)
    rr=$(fio_rand32 "${dev[$c]}" randread)
    rw=$(fio_rand32 "${dev[$c]}" randwrite)
    CPU4[$c]=$(python3 -c 'import sys; print(float(sys.argv[1]) + float(sys.argv[3]) - float(sys.argv[2]))' "${CPU4[$c]}" "$c0" "$(cpus $c)")
    IO4[$c]=$(add "${IO4[$c]}" "$rr" "$rw")
    RR[$c]+=" $rr"
    RW[$c]+=" $rw"
    log "round $r $c: 4 KiB QD32 randread $rr IOPS, randwrite $rw IOPS"
  done
done
load1=$(cut -d' ' -f1 /proc/loadavg)
# shellcheck disable=SC2086
{ wr=$(maxf ${RR[waes]}); ar=$(maxf ${RR[aes]}); ww=$(maxf ${RW[waes]}); aw=$(maxf ${RW[aes]}); }
# shellcheck disable=SC2086
{ w1r=$(maxf ${RR[waes1]}); w1w=$(maxf ${RW[waes1]}); }
# CPU seconds per GiB moved (4 KiB per I/O).
cpg4() { python3 -c 'import sys; print(f"{float(sys.argv[1]) / (float(sys.argv[2]) * 5 * 4096 / 2**30):.2f}")' "$1" "$2"; }
note="CPU (server + custodian) $(cpg4 "${CPU4[waes]}" "${IO4[waes]}") vs (server) $(cpg4 "${CPU4[aes]}" "${IO4[aes]}") s/GiB; load average $load0 → $load1"
cmd="fio --filename=/dev/mapper/NAME --rw=randread|randwrite --bs=4k --direct=1 --ioengine=libaio --iodepth=32 --runtime=5s (best of $ROUNDS; scripts/bench.d/wrapped.sh)"
note1="CPU (server + custodian) $(cpg4 "${CPU4[waes1]}" "${IO4[waes1]}") vs (server) $(cpg4 "${CPU4[aes]}" "${IO4[aes]}") s/GiB; load average $load0 → $load1"
echo "opened waes-xts-plain64 (custodian, v2 request ring) 4 KiB random read IOPS at QD32 ÷ opened aes-xts-plain64|$(ratio "$wr" "$ar")|$wr vs $ar IOPS; $note|$cmd"
echo "opened waes-xts-plain64 (custodian, v2 request ring) 4 KiB random write IOPS at QD32 ÷ opened aes-xts-plain64|$(ratio "$ww" "$aw")|$ww vs $aw IOPS; $note|$cmd"
echo "opened waes-xts-plain64 (custodian, v1 socket CRYPTs) 4 KiB random read IOPS at QD32 ÷ opened aes-xts-plain64|$(ratio "$w1r" "$ar")|$w1r vs $ar IOPS; $note1|$cmd"
echo "opened waes-xts-plain64 (custodian, v1 socket CRYPTs) 4 KiB random write IOPS at QD32 ÷ opened aes-xts-plain64|$(ratio "$w1w" "$aw")|$w1w vs $aw IOPS; $note1|$cmd"

# 3. PKCS#11: SoftHSM2 in-process and through p11-kit server.
j=$("$REL/examples/pkcs11_speed" | tee /dev/stderr | tail -1)
cmd="cargo run --release -p wrapcrypt-provider --example pkcs11_speed"
python3 - "$j" "$cmd" <<'EOF'
import json, sys
d, cmd = json.loads(sys.argv[1]), sys.argv[2]
for name, label in [("softhsm_in_process", "PKCS#11 SoftHSM2 in-process (wrapped key, WKB mechanism 2)"),
                    ("softhsm_via_p11_kit_server", "PKCS#11 SoftHSM2 via p11-kit server (token-held key, WKB mechanism 3)"),
                    ("softhsm_via_p11_kit_server_session_key", "PKCS#11 SoftHSM2 via p11-kit server (session key from a clear key, for comparison)")]:
    if f"{name}_t1_encrypt_mb_s" not in d:
        continue
    for t in (1, 2):
        e, s = d[f"{name}_t{t}_encrypt_mb_s"], d[f"software_t{t}_encrypt_mb_s"]
        dd = d[f"{name}_t{t}_decrypt_mb_s"]
        print(f"{label} encrypt ÷ software engine, 128 KiB calls, {t} thread(s)|{e / s:.3f}|"
              f"encrypt {e:.0f}, decrypt {dd:.0f} vs {s:.0f} MB/s|{cmd}")
EOF
