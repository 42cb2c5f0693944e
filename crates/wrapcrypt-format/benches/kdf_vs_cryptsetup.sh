#!/usr/bin/env bash
# Compares one passphrase derivation of wrapcrypt-format (examples/kdf_time)
# with `cryptsetup open --test-passphrase` on a LUKS2 header with the same
# KDF parameters: wall time, CPU time and peak RSS, best of ROUNDS runs each,
# the two alternating so background load hits both alike.
#
# Cases: argon2id m=256 MiB t=4 p=4 (and p=2), pbkdf2-sha256 1,000,000
# iterations with a 512-bit key. cryptsetup 2.6 caps --pbkdf-parallel at the
# online CPU count even with forced parameters, so the p=4 header is made by
# changing the keyslot's "cpus" in a p=2 header (checksums recomputed); its
# passphrase test then fails after the KDF ran, which is what is timed.
#
# Usage: benches/kdf_vs_cryptsetup.sh [KDF_TIME_BINARY]   (ROUNDS=3 by default)
set -euo pipefail
cd "$(dirname "$0")/../../.."
KT="${1:-target/release/examples/kdf_time}"
[ -x "$KT" ] || cargo build --release -q -p wrapcrypt-format --example kdf_time
ROUNDS="${ROUNDS:-3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf 'benchpass' >"$work/pw"

fmt() { # name, cryptsetup args...
  local img="$work/$1.img"
  shift
  truncate -s 32M "$img"
  cryptsetup luksFormat -q --type luks2 --key-file "$work/pw" "$@" "$img"
}
fmt a2 --pbkdf argon2id --pbkdf-memory 262144 --pbkdf-force-iterations 4 --pbkdf-parallel 4
fmt p2 --pbkdf pbkdf2 --hash sha256 --pbkdf-force-iterations 1000000 --key-size 512
cp "$work/a2.img" "$work/a4.img"
python3 - "$work/a4.img" <<'EOF'
import hashlib, struct, sys, re
with open(sys.argv[1], 'r+b') as f:
    d = bytearray(f.read(1 << 20))
    hs = struct.unpack('>Q', d[8:16])[0]
    for off in (0, hs):
        h = d[off:off + hs]
        h[4096:] = re.sub(rb'"cpus":\d', b'"cpus":4', bytes(h[4096:]), count=1)
        h[448:512] = bytes(64)
        h[448:480] = hashlib.sha256(h).digest()
        d[off:off + hs] = h
    f.seek(0)
    f.write(d)
EOF

measure() { # label, command...  -> "label wall cpu rss" (best wall of ROUNDS)
  local label="$1"
  shift
  /usr/bin/time -f "%e %U %S %M" -o "$work/t" "$@" >/dev/null 2>&1 || true
  # A failing command gets an extra first line from time(1).
  tail -n 1 "$work/t" | awk -v l="$label" '{ printf "%s %s %.2f %s\n", l, $1, $2 + $3, $4 }'
}

printf '%-34s %8s %8s %10s\n' "case" "wall_s" "cpu_s" "maxrss_KiB"
for case in "argon2id-256M-t4-p4 a4 argon2id 4 262144 4" \
            "argon2id-256M-t4-p2 a2 argon2id 4 262144 2" \
            "pbkdf2-sha256-1M-512bit p2 pbkdf2 sha256 1000000 64"; do
  set -- $case
  name="$1" img="$2"
  shift 2
  for r in $(seq "$ROUNDS"); do
    measure "cryptsetup" cryptsetup open --test-passphrase --key-file "$work/pw" "$work/$img.img"
    measure "wrapcrypt" "$KT" "$@"
  done | sort -k1,1 -k2,2n | awk -v n="$name" '!seen[$1]++ { printf "%-34s %8s %8s %10s\n", n" "$1, $2, $3, $4 }'
done
