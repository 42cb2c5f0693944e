#!/usr/bin/env bash
# Offline reencryption benchmarks (docs/reencrypt.md). Prints rows
#   name|ratio|detail|command
# On an image of 256 MiB random data (cryptsetup's default LUKS2 layout,
# checksum resilience, default hotzone), best of REENC_ROUNDS alternating
# rounds of each:
# 1. wrapcrypt reencrypt MB/s ÷ an O_DIRECT dd copy of the same 256 MiB;
# 2. wrapcrypt reencrypt time ÷ cryptsetup reencrypt --force-offline-reencrypt.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
W=${WRAPCRYPT_BIN:-${W:-$ROOT/target/release/wrapcrypt}}
work=$(mktemp -d /tmp/wrapcrypt-reenc.XXXXXX)
trap 'rm -rf "$work"' EXIT
ROUNDS=${REENC_ROUNDS:-3}
FAST=(--pbkdf pbkdf2 --pbkdf-force-iterations 1000)

now() { date +%s.%N; }
secs() { python3 -c 'import sys; print(f"{float(sys.argv[2])-float(sys.argv[1]):.3f}")' "$1" "$2"; }
ratio() { python3 -c 'import sys; print(f"{float(sys.argv[1])/float(sys.argv[2]):.3f}")' "$1" "$2"; }
best() { python3 -c 'import sys; print(min(float(x) for x in sys.argv[1:]))' "$@"; }

printf 'bench passphrase' > "$work/pass"
base=$work/base.img
truncate -s 272M "$base"
cryptsetup luksFormat -q --type luks2 "${FAST[@]}" --key-file "$work/pass" "$base"
dd if=/dev/urandom of="$base" bs=4M seek=4 count=64 conv=notrunc status=none

w=() c=() d=()
for _ in $(seq "$ROUNDS"); do
  cp "$base" "$work/d.img"; sync
  t0=$(now)
  dd if="$base" of="$work/d.img" bs=16M skip=1 seek=1 count=16 iflag=direct oflag=direct conv=notrunc,fsync status=none
  d+=("$(secs "$t0" "$(now)")")
  cp "$base" "$work/w.img"; sync
  t0=$(now)
  "$W" reencrypt -q "${FAST[@]}" --key-file "$work/pass" "$work/w.img"
  w+=("$(secs "$t0" "$(now)")")
  cp "$base" "$work/c.img"; sync
  t0=$(now)
  cryptsetup reencrypt -q --force-offline-reencrypt "${FAST[@]}" --key-file "$work/pass" "$work/c.img"
  c+=("$(secs "$t0" "$(now)")")
  rm -f "$work/d.img" "$work/w.img" "$work/c.img"
done
bw=$(best "${w[@]}"); bc=$(best "${c[@]}"); bd=$(best "${d[@]}")
echo "offline reencrypt (checksum, 256 MiB): MB/s ÷ O_DIRECT dd copy|$(ratio "$bd" "$bw")|${bw}s vs dd ${bd}s|wrapcrypt reencrypt IMG; dd iflag=direct oflag=direct"
echo "offline reencrypt (checksum, 256 MiB): wrapcrypt ÷ cryptsetup time|$(ratio "$bw" "$bc")|${bw}s vs ${bc}s|cryptsetup reencrypt --force-offline-reencrypt IMG"

# 3. Online: fio 4 KiB random reads (QD16, libaio, O_DIRECT) on the open
# volume while `reencrypt --active-name` runs, ÷ the same fio on the same
# open volume without it, in one round each (alternating, best of ROUNDS).
# fio runs for as long as the reencryption takes (its time is printed).
name=wcbench-online$$
fio_iops() { # DEV SECONDS
  fio --name=r --filename="$1" --rw=randread --bs=4k --iodepth=16 --ioengine=libaio \
    --direct=1 --runtime="$2" --time_based --size=200M --output-format=json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["read"]["iops"])'
}
on=() off=() durs=()
for _ in $(seq "$ROUNDS"); do
  cp "$base" "$work/o.img"; sync
  "$W" open "$work/o.img" "$name" --key-file "$work/pass"
  t0=$(now)
  "$W" reencrypt -q --active-name "$name" "${FAST[@]}" --hotzone-size 4M --key-file "$work/pass" "$work/o.img" &
  rp=$!
  sleep 0.2
  dur_guess=1
  on+=("$(fio_iops "/dev/mapper/$name" "$dur_guess")")
  wait "$rp"
  durs+=("$(secs "$t0" "$(now)")")
  off+=("$(fio_iops "/dev/mapper/$name" "$dur_guess")")
  "$W" close "$name"
  rm -f "$work/o.img"
done
bon=$(python3 -c 'import sys; print(max(float(x) for x in sys.argv[1:]))' "${on[@]}")
boff=$(python3 -c 'import sys; print(max(float(x) for x in sys.argv[1:]))' "${off[@]}")
echo "online reencrypt (256 MiB, 4 MiB hotzones): fio 4 KiB randread QD16 IOPS during ÷ without|$(ratio "$bon" "$boff")|${bon%.*} vs ${boff%.*} IOPS; reencryption took $(best "${durs[@]}")s (fio 1 s inside it)|wrapcrypt reencrypt --active-name NAME; fio --rw=randread --bs=4k --iodepth=16 --direct=1"
