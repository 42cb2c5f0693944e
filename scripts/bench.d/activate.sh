#!/usr/bin/env bash
# Opened devices (FUSE + loop, `wrapcrypt open`): an aes-xts-plain64 volume
# against a cipher_null-ecb volume on the same data path (the cost of the
# crypto) and against the raw backing file (the cost of the whole path);
# sequential O_DIRECT read/write in 1 MiB blocks, 4 KiB random-read IOPS,
# server RSS idle and under load. The aes volume runs on the default FUSE
# transport (io_uring where the kernel offers it), "aesdev" is the same
# volume type forced to /dev/fuse read/write (WRAPCRYPT_FUSE_TRANSPORT=dev):
# the transport A/B rows.
#
# Env: W (release wrapcrypt), WORK (scratch dir). Rows on stdout as
# "name|ratio|detail|command"; progress on stderr. BENCH_ACTIVATE_MIB sets
# the volume size (default 1024), BENCH_ACTIVATE_ROUNDS the rounds (best of).
set -euo pipefail
: "${W:?W must name the wrapcrypt binary}" "${WORK:?WORK must name a scratch dir}"
MIB=${BENCH_ACTIVATE_MIB:-1024}
ROUNDS=${BENCH_ACTIVATE_ROUNDS:-6}
RAND_SECS=${BENCH_ACTIVATE_RAND_SECS:-5}
command -v fio >/dev/null || { echo "activate.sh: fio missing (scripts/install-deps.sh)" >&2; exit 1; }

# The backing lives on disk (O_DIRECT works there; tmpfs would hide nothing
# but also test nothing of the loop/backing path).
dir=$(mktemp -d /var/tmp/wrapcrypt-bench-activate.XXXXXX)
names=()
sampler=
cleanup() {
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
  for n in "${names[@]}"; do "$W" close "$n" >/dev/null 2>&1 || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
log() { echo "activate.sh: $*" >&2; }

printf 'bench-passphrase' >"$dir/pass"
fmt=(-q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --sector-size 4096 --key-file "$dir/pass")
hdr_mib=16

# fio helpers: MB/s of a sequential pass, IOPS of random 4 KiB reads.
fio_seq() { # dev read|write
  local j
  j=$(fio --name=seq --filename="$1" --rw="$2" --bs=1M --direct=1 --ioengine=psync \
    --size="${MIB}M" --end_fsync=1 --output-format=json 2>/dev/null)
  jq -r ".jobs[0].$2.bw_bytes / 1e6 | . * 10 | round / 10" <<<"$j"
}
fio_rand() { # dev
  local j
  j=$(fio --name=rand --filename="$1" --rw=randread --bs=4k --direct=1 --ioengine=psync \
    --size="${MIB}M" --time_based --runtime="$RAND_SECS" --output-format=json 2>/dev/null)
  jq -r '.jobs[0].read.iops | round' <<<"$j"
}
fio_rand32() { # dev randread|randwrite: IOPS at queue depth 32 (libaio)
  local j key=read
  [ "$2" = randwrite ] && key=write
  j=$(fio --name=rand32 --filename="$1" --rw="$2" --bs=4k --direct=1 --ioengine=libaio --iodepth=32 \
    --size="${MIB}M" --time_based --runtime="$RAND_SECS" --output-format=json 2>/dev/null)
  jq -r ".jobs[0].$key.iops | round" <<<"$j"
}
# CPU seconds (user + system) of a process so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
maxf() { python3 -c 'import sys; print(max(float(x) for x in sys.argv[1:]))' "$@"; }
ratio() { python3 -c 'import sys; print(f"{float(sys.argv[1])/float(sys.argv[2]):.3f}")' "$1" "$2"; }

# Raw backing: a plain file of the data size, fully allocated.
raw="$dir/raw.img"
dd if=/dev/zero of="$raw" bs=1M count="$MIB" oflag=direct status=none

# Two LUKS2 volumes of the same size: aes-xts-plain64 and cipher_null-ecb.
declare -A dev pid
for c in aes null aesdev; do
  img="$dir/$c.img"
  truncate -s $((MIB + hdr_mib))M "$img"
  if [ "$c" != null ]; then
    "$W" luksFormat "${fmt[@]}" --cipher aes-xts-plain64 --key-size 512 "$img"
  else
    "$W" luksFormat "${fmt[@]}" --cipher cipher_null-ecb "$img"
  fi
  name="wcbench-$c-$$"
  tr=auto
  [ "$c" = aesdev ] && tr=dev
  WRAPCRYPT_FUSE_TRANSPORT=$tr "$W" open --key-file "$dir/pass" "$img" "$name"
  log "$c: $("$W" status "$name" | grep 'fuse:' || echo 'fuse: ?')"
  names+=("$name")
  dev[$c]=/dev/mapper/$name
  pid[$c]=$(jq -r .pid "/run/wrapcrypt/$name/state.json")
  # Allocate the backing's blocks: every measured write overwrites.
  dd if=/dev/zero of="${dev[$c]}" bs=1M count="$MIB" oflag=direct status=none
done
dev[raw]=$raw
sleep 0.5
idle_aes=$(rss "${pid[aes]}")
idle_null=$(rss "${pid[null]}")

# Peak RSS of both servers while the rounds run.
(
  pa=0 pn=0
  while :; do
    a=$(rss "${pid[aes]}") n=$(rss "${pid[null]}")
    [ "$a" -gt "$pa" ] && pa=$a
    [ "$n" -gt "$pn" ] && pn=$n
    echo "$pa $pn" >"$dir/peak.new" && mv "$dir/peak.new" "$dir/peak"
    sleep 0.1
  done
) &
sampler=$!

declare -A W_ R_ I_ CPU
for t in raw null aes aesdev; do W_[$t]=""; R_[$t]=""; CPU[$t]=0; done
load0=$(cut -d' ' -f1 /proc/loadavg)
for ((r = 1; r <= ROUNDS; r++)); do
  for t in raw null aes aesdev; do
    c0=$( [ "$t" = raw ] && echo 0 || cpu "${pid[$t]}")
    w=$(fio_seq "${dev[$t]}" write)
    rd=$(fio_seq "${dev[$t]}" read)
    c1=$( [ "$t" = raw ] && echo 0 || cpu "${pid[$t]}")
    CPU[$t]=$(python3 -c 'import sys; print(float(sys.argv[1]) + float(sys.argv[3]) - float(sys.argv[2]))' "${CPU[$t]}" "$c0" "$c1")
    W_[$t]+=" $w"
    R_[$t]+=" $rd"
    log "round $r $t: write $w MB/s, read $rd MB/s"
  done
done
declare -A Q_R Q_W
for t in raw null aes aesdev; do
  I_[$t]=$(fio_rand "${dev[$t]}")
  log "$t: 4 KiB random read ${I_[$t]} IOPS"
done
for t in raw aes aesdev; do
  Q_R[$t]=$(fio_rand32 "${dev[$t]}" randread)
  Q_W[$t]=$(fio_rand32 "${dev[$t]}" randwrite)
  log "$t: 4 KiB random QD32 read ${Q_R[$t]}, write ${Q_W[$t]} IOPS"
done
kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true; sampler=
read -r peak_aes peak_null <"$dir/peak"

declare -A BW BR
for t in raw null aes aesdev; do
  # shellcheck disable=SC2086
  BW[$t]=$(maxf ${W_[$t]})
  # shellcheck disable=SC2086
  BR[$t]=$(maxf ${R_[$t]})
done

load1=$(cut -d' ' -f1 /proc/loadavg)
# Server CPU seconds per GiB moved (written + read): independent of how busy
# the machine was, unlike the wall-clock MB/s.
gib=$(python3 -c "print(2 * $MIB * $ROUNDS / 1024)")
cpg() { python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}")' "$1" "$gib"; }
cpu_note="server CPU $(cpg "${CPU[aes]}") vs $(cpg "${CPU[null]}") s/GiB; load average $load0 → $load1"
cmd="fio --filename=/dev/mapper/NAME --rw=read,write --bs=1M --direct=1 --size=${MIB}M (best of $ROUNDS; scripts/bench.d/activate.sh)"
echo "opened aes-xts-plain64 seq read 1 MiB O_DIRECT ÷ cipher_null-ecb (same FUSE+loop path)|$(ratio "${BR[aes]}" "${BR[null]}")|${BR[aes]} vs ${BR[null]} MB/s; $cpu_note|$cmd"
echo "opened aes-xts-plain64 seq write 1 MiB O_DIRECT ÷ cipher_null-ecb (same FUSE+loop path)|$(ratio "${BW[aes]}" "${BW[null]}")|${BW[aes]} vs ${BW[null]} MB/s; $cpu_note|$cmd"
echo "opened aes-xts-plain64 seq read ÷ raw backing file O_DIRECT|$(ratio "${BR[aes]}" "${BR[raw]}")|${BR[aes]} vs ${BR[raw]} MB/s (null: ${BR[null]})|$cmd"
echo "opened aes-xts-plain64 seq write ÷ raw backing file O_DIRECT|$(ratio "${BW[aes]}" "${BW[raw]}")|${BW[aes]} vs ${BW[raw]} MB/s (null: ${BW[null]})|$cmd"
rcmd="fio --rw=randread --bs=4k --direct=1 --ioengine=psync --runtime=${RAND_SECS}s"
echo "opened aes-xts-plain64 4 KiB random read IOPS ÷ cipher_null-ecb|$(ratio "${I_[aes]}" "${I_[null]}")|${I_[aes]} vs ${I_[null]} IOPS (raw file: ${I_[raw]})|$rcmd"
echo "opened aes-xts-plain64 4 KiB random read IOPS ÷ raw backing file|$(ratio "${I_[aes]}" "${I_[raw]}")|${I_[aes]} vs ${I_[raw]} IOPS|$rcmd"
qcmd="fio --rw=randread|randwrite --bs=4k --direct=1 --ioengine=libaio --iodepth=32 --runtime=${RAND_SECS}s"
echo "opened aes-xts-plain64 4 KiB random read IOPS at QD32 ÷ raw backing file|$(ratio "${Q_R[aes]}" "${Q_R[raw]}")|${Q_R[aes]} vs ${Q_R[raw]} IOPS|$qcmd"
echo "opened aes-xts-plain64 4 KiB random write IOPS at QD32 ÷ raw backing file|$(ratio "${Q_W[aes]}" "${Q_W[raw]}")|${Q_W[aes]} vs ${Q_W[raw]} IOPS|$qcmd"
echo "server RSS under load ÷ idle (aes-xts-plain64 server)|$(ratio "$peak_aes" "$idle_aes")|idle $idle_aes KiB, peak $peak_aes KiB (null server: idle $idle_null, peak $peak_null KiB)|VmRSS of the server pid in /run/wrapcrypt/NAME/state.json, sampled every 0.1 s"
tcmd="WRAPCRYPT_FUSE_TRANSPORT=auto (io_uring) vs dev; same fio commands"
tnote="server CPU $(cpg "${CPU[aes]}") vs $(cpg "${CPU[aesdev]}") s/GiB"
echo "opened aes-xts-plain64 seq read 1 MiB: FUSE io_uring ÷ /dev/fuse transport|$(ratio "${BR[aes]}" "${BR[aesdev]}")|${BR[aes]} vs ${BR[aesdev]} MB/s; $tnote|$tcmd"
echo "opened aes-xts-plain64 seq write 1 MiB: FUSE io_uring ÷ /dev/fuse transport|$(ratio "${BW[aes]}" "${BW[aesdev]}")|${BW[aes]} vs ${BW[aesdev]} MB/s; $tnote|$tcmd"
echo "opened aes-xts-plain64 4 KiB random read QD1: FUSE io_uring ÷ /dev/fuse transport|$(ratio "${I_[aes]}" "${I_[aesdev]}")|${I_[aes]} vs ${I_[aesdev]} IOPS|$tcmd"
echo "opened aes-xts-plain64 4 KiB random read QD32: FUSE io_uring ÷ /dev/fuse transport|$(ratio "${Q_R[aes]}" "${Q_R[aesdev]}")|${Q_R[aes]} vs ${Q_R[aesdev]} IOPS|$tcmd"
echo "opened aes-xts-plain64 4 KiB random write QD32: FUSE io_uring ÷ /dev/fuse transport|$(ratio "${Q_W[aes]}" "${Q_W[aesdev]}")|${Q_W[aes]} vs ${Q_W[aesdev]} IOPS|$tcmd"
