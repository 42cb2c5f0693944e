#!/usr/bin/env bash
# Benchmarks. Every figure is a ratio against a reference measured in the
# same invocation (openssl speed, cryptsetup, a null cipher), written to
# BENCHMARKS.md together with the command that produced it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W="$ROOT/target/release/wrapcrypt"
OUT="$ROOT/BENCHMARKS.md"
work=$(mktemp -d /tmp/wrapcrypt-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
RUNS=${BENCH_RUNS:-5}

cargo build -q --release --workspace --bins --examples

rows=()
row() { rows+=("| $1 | $2 | $3 | \`$4\` |"); printf '%-55s %s  (%s)\n' "$1" "$2" "$3"; }

# hyperfine mean seconds of a command
hmean() { # name cmd...
  local json="$work/h.json"
  hyperfine -N -w 1 -r "$RUNS" --export-json "$json" "$@" >/dev/null 2>&1
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["mean"])' "$json"
}
# Commands of a few milliseconds scatter by tens of percent over 5 runs:
# median of 40 after 5 warm-ups, the two tools alternating in one hyperfine.
hpair() { # cmdA cmdB -> "medianA medianB"
  local json="$work/h2.json"
  hyperfine -N -w 5 -r 40 --export-json "$json" "$1" "$2" >/dev/null 2>&1
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"]; print(r[0]["median"], r[1]["median"])' "$json"
}
ratio() { python3 -c 'import sys; print(f"{float(sys.argv[1])/float(sys.argv[2]):.3f}")' "$1" "$2"; }
peak_kib() { /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -1; }

echo "== sector engine vs openssl speed, every AES-XTS path this CPU has"
# One invocation measures every path and openssl speed -bytes 4096 and -bytes
# 512 alternately (best of 5 rounds each), so all ratios share the same load.
cmd="cargo run -q --release -p wrapcrypt-sector --example xts_speed -- --openssl --path all --rounds 5"
load0=$(cut -d' ' -f1 /proc/loadavg)
out=$($cmd)
load1=$(cut -d' ' -f1 /proc/loadavg)
while IFS='|' read -r n r d; do row "$n" "$r" "$d; load average $load0 → $load1" "$cmd"; done < <(
  python3 - "$out" <<'PY'
import json, sys
for line in sys.argv[1].splitlines():
    d = json.loads(line)
    p = d["path"] + (", the default" if d["path"] == d["default_path"] else "")
    big = f"4 KiB sectors × {d['batch_sectors']} per call"
    for label, key, ref, oref in [
        (f"{big}, encrypt ÷ openssl -bytes 4096", "encrypt", "encrypt_ratio", "openssl_mb_s"),
        (f"{big}, decrypt ÷ openssl -bytes 4096", "decrypt", "decrypt_ratio", "openssl_mb_s"),
        ("one 512-byte sector per call, encrypt ÷ openssl -bytes 512", "encrypt_512", "encrypt_512_ratio", "openssl_512_mb_s"),
        ("one 512-byte sector per call, decrypt ÷ openssl -bytes 512", "decrypt_512", "decrypt_512_ratio", "openssl_512_mb_s"),
    ]:
        print(f"engine aes-xts-plain64 512-bit [{p}], {label}|{d[ref]}|{d[key + '_mb_s']} vs {d[oref]} MB/s")
PY
)

echo "== serpent-xts and twofish-xts vs aes-xts, and vs the RustCrypto reference"
# One invocation measures aes-xts, serpent-xts and twofish-xts on their
# default engines and serpent/twofish on the portable RustCrypto code they
# replaced (512-bit keys, 4 KiB sectors × 256 per call, one thread, best of 5
# alternating rounds), so every ratio of one invocation shares the same load.
# --sector-size 512 is the shape `wrapcrypt benchmark` measures (512-byte
# sectors, 1 MiB per call).
for ss in 4096 512; do
cmd="cargo run -q --release -p wrapcrypt-sector --example cipher_speed -- --rounds 5 --sector-size $ss"
load0=$(cut -d' ' -f1 /proc/loadavg)
out=$($cmd)
load1=$(cut -d' ' -f1 /proc/loadavg)
while IFS='|' read -r n r d; do row "$n" "$r" "$d; load average $load0 → $load1" "$cmd"; done < <(
  python3 - "$out" <<'PY'
import json, sys
for line in sys.argv[1].splitlines():
    d = json.loads(line)
    if d["cipher"].startswith("aes") or d["cipher"].endswith("]"):
        continue
    c, e, a = d["cipher"], d["engine"], d["aes_engine"]
    ss = d["sector_size"]
    big = f"{ss // 1024} KiB sectors" if ss >= 1024 else f"{ss}-byte sectors"
    big += f" × {d['batch_sectors']} per call"
    for op in ("encrypt", "decrypt"):
        print(f"engine {c} 512-bit [{e}] ÷ aes-xts-plain64 [{a}], {big}, {op}|{d[op + '_vs_aes']}|{d[op + '_mb_s']} vs {d['aes_' + op + '_mb_s']} MB/s")
    for op in ("encrypt", "decrypt"):
        print(f"engine {c} 512-bit [{e}] ÷ RustCrypto reference [portable], {big}, {op}|{d[op + '_vs_reference']}|{d[op + '_mb_s']} vs {d['reference_' + op + '_mb_s']} MB/s")
PY
)
done

echo "== passphrase unlock vs cryptsetup open --test-passphrase"
img="$work/kdf.img"; truncate -s 32M "$img"
printf 'benchpass' > "$work/pass"
cryptsetup luksFormat -q --pbkdf argon2id --pbkdf-memory 262144 --pbkdf-force-iterations 4 --pbkdf-parallel 4 "$img" "$work/pass"
c=$(hmean "cryptsetup open --test-passphrase --key-file $work/pass $img")
w=$(hmean "$W open --test-passphrase --key-file $work/pass $img")
row "unlock argon2id m=256MiB t=4 p=4: wrapcrypt ÷ cryptsetup time" "$(ratio "$w" "$c")" "${w}s vs ${c}s" "hyperfine '$W open --test-passphrase …' 'cryptsetup open --test-passphrase …'"
cm=$(peak_kib cryptsetup open --test-passphrase --key-file "$work/pass" "$img")
wm=$(peak_kib "$W" open --test-passphrase --key-file "$work/pass" "$img")
row "unlock argon2id peak RSS: wrapcrypt ÷ cryptsetup" "$(ratio "$wm" "$cm")" "${wm} KiB vs ${cm} KiB" "/usr/bin/time -f %M … open --test-passphrase"
img2="$work/pb.img"; truncate -s 32M "$img2"
cryptsetup luksFormat -q --pbkdf pbkdf2 --hash sha256 --pbkdf-force-iterations 1000000 "$img2" "$work/pass"
c=$(hmean "cryptsetup open --test-passphrase --key-file $work/pass $img2")
w=$(hmean "$W open --test-passphrase --key-file $work/pass $img2")
row "unlock pbkdf2-sha256 1e6 iterations: wrapcrypt ÷ cryptsetup time" "$(ratio "$w" "$c")" "${w}s vs ${c}s" "hyperfine '$W open --test-passphrase …' 'cryptsetup open --test-passphrase …'"

echo "== luksDump and luksFormat vs cryptsetup"
read -r c w < <(hpair "cryptsetup luksDump $img2" "$W luksDump $img2")
row "luksDump: wrapcrypt ÷ cryptsetup time (median of 40)" "$(ratio "$w" "$c")" "${w}s vs ${c}s" "hyperfine -w 5 -r 40 'cryptsetup luksDump IMG' '$W luksDump IMG'"
f="$work/fmt.img"; truncate -s 32M "$f"
fa="-q --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file $work/pass $f"
c=$(hmean "cryptsetup luksFormat $fa")
w=$(hmean "$W luksFormat $fa")
row "luksFormat (pbkdf2, 1000 iterations): wrapcrypt ÷ cryptsetup time" "$(ratio "$w" "$c")" "${w}s vs ${c}s" "hyperfine '$W luksFormat …' 'cryptsetup luksFormat …'"

# Further sections (activated devices, custodian, PKCS#11) are added by
# scripts/bench.d/*.sh when present; each prints rows as "name|ratio|detail|cmd".
for s in scripts/bench.d/*.sh; do
  [ -e "$s" ] || continue
  echo "== $s"
  while IFS='|' read -r n r d c; do row "$n" "$r" "$d" "$c"; done < <(W="$W" WORK="$work" bash "$s")
done

{
  echo "# Benchmarks"
  echo
  echo "Produced by \`make bench\` (scripts/bench.sh) on $(date -u +%Y-%m-%d), $(nproc) cores,"
  echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')."
  echo "AES-related CPU flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(aes|pclmulqdq|avx2|vaes|vpclmulqdq|gfni|avx512(f|bw|vl|_vbmi2))$' | tr '\n' ' ')"
  echo "Each ratio is measured against its reference in the same run."
  echo
  echo "| measure | ratio | detail | command |"
  echo "|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  # Notes on the figures (what limits them, how they were checked).
  if [ -e scripts/bench.d/NOTES.md ]; then echo; cat scripts/bench.d/NOTES.md; fi
} > "$OUT"
echo "wrote $OUT"
