#!/usr/bin/env bash
# A/B of the FUSE transports: one aes-xts-plain64 LUKS2 volume reopened
# alternately with WRAPCRYPT_FUSE_TRANSPORT=uring and =dev, and a loop device
# over a raw file. Prints "round target test value cpu_s_per_gib".
set -euo pipefail
W=${W:?W must name the release wrapcrypt binary}
MIB=${MIB:-256}; SECS=${SECS:-4}; ROUNDS=${ROUNDS:-2}
dir=$(mktemp -d /var/tmp/wc-ab.XXXXXX)
name=wcab-$$
loopd=
cleanup() { "$W" close "$name" >/dev/null 2>&1 || true; [ -n "$loopd" ] && losetup -d "$loopd"; rm -rf "$dir"; }
trap cleanup EXIT
printf 'pw' >"$dir/pass"
truncate -s $((MIB + 16))M "$dir/aes.img"
"$W" luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --sector-size 4096 --key-file "$dir/pass" --cipher aes-xts-plain64 --key-size 512 "$dir/aes.img"
dd if=/dev/zero of="$dir/raw.img" bs=1M count="$MIB" oflag=direct status=none
loopd=$(losetup --direct-io=on --sector-size 4096 -f --show "$dir/raw.img")
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"; }
run() { # dev test -> value ; bytes in $dir/bytes
  local d=$1 t=$2 j
  case $t in
    seqw) j=$(fio --name=t --filename="$d" --rw=write --bs=1M --direct=1 --ioengine=psync --size=${MIB}M --output-format=json); jq -r '.jobs[0].write | "\(.bw_bytes/1e6|round) MB/s \(.io_bytes)"' <<<"$j";;
    seqr) j=$(fio --name=t --filename="$d" --rw=read --bs=1M --direct=1 --ioengine=psync --size=${MIB}M --output-format=json); jq -r '.jobs[0].read | "\(.bw_bytes/1e6|round) MB/s \(.io_bytes)"' <<<"$j";;
    rr1|rw1|rr32|rw32)
      local rw=randread k=read qd=1 eng=psync
      case $t in rw*) rw=randwrite k=write;; esac
      case $t in *32) qd=32 eng=libaio;; esac
      j=$(fio --name=t --filename="$d" --rw=$rw --bs=4k --direct=1 --ioengine=$eng --iodepth=$qd --size=${MIB}M --time_based --runtime=$SECS --output-format=json)
      jq -r ".jobs[0].$k | \"\(.iops|round) IOPS \(.io_bytes)\"" <<<"$j";;
  esac
}
tests="seqw seqr rr1 rw1 rr32 rw32"
for ((r=1; r<=ROUNDS; r++)); do
  for tr in uring dev; do
    WRAPCRYPT_FUSE_TRANSPORT=$tr "$W" open --key-file "$dir/pass" "$dir/aes.img" "$name"
    pid=$(jq -r .pid /run/wrapcrypt/$name/state.json)
    [ $r = 1 ] && "$W" status "$name" | grep fuse: >&2
    [ $r = 1 ] && [ $tr = uring ] && dd if=/dev/zero of=/dev/mapper/$name bs=1M count=$MIB oflag=direct status=none
    for t in $tests; do
      c0=$(cpu $pid); out=$(run /dev/mapper/$name $t); c1=$(cpu $pid)
      set -- $out
      echo "$r $tr $t $1 $2 $(python3 -c "print(f'{($c1-$c0)/($3/2**30):.2f}')") s/GiB"
    done
    "$W" close "$name"
  done
  for t in $tests; do out=$(run $loopd $t); set -- $out; echo "$r loop $t $1 $2 -"; done
done
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
