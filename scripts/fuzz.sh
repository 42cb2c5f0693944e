#!/usr/bin/env bash
# Builds and runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS seconds
# each (default 30); exits non-zero on any crash, leak or timeout, leaving
# the reproducer in fuzz/artifacts/TARGET/.
#
# Seeds are valid LUKS2 headers made with cryptsetup here (several metadata
# sizes, KDFs, keyslots, tokens, a detached header) plus cryptsetup's
# reference images; they go into fuzz/corpus/TARGET (git-ignored), which
# also keeps what earlier runs found.
#
# Environment: FUZZ_SECONDS (per target), FUZZ_TARGETS (space-separated
# subset), FUZZ_SANITIZER (default none: the targets are safe Rust, where
# bounds and overflow checks already turn bugs into panics, and ASan costs
# 3-5x in speed; set "address" for code with unsafe or FFI), WRAPCRYPT_TESTDATA (reference images, default ../shared/testdata/cryptsetup).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
TARGETS=${FUZZ_TARGETS:-"luks2_binary luks2_json"}
SANITIZER=${FUZZ_SANITIZER:-none}
TESTDATA=${WRAPCRYPT_TESTDATA:-$ROOT/../shared/testdata/cryptsetup}

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz.sh: SKIPPED: cargo fuzz needs a nightly toolchain and none is installed" \
        "(rustup toolchain install nightly)" >&2
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# --- seeds ------------------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
make_seeds() {
    local bin json
    bin=$ROOT/fuzz/corpus/luks2_binary
    json=$ROOT/fuzz/corpus/luks2_json
    mkdir -p "$bin" "$json"
    local imgs=()
    if command -v cryptsetup >/dev/null; then
        printf 'seed passphrase' >"$work/key"
        printf 'other passphrase' >"$work/key2"
        local fast=(--batch-mode --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$work/key")
        local n=0
        fmt() { # fmt NAME [luksFormat options...]
            local img=$work/$1.img
            shift
            truncate -s 24M "$img"
            cryptsetup luksFormat "${fast[@]}" "$@" "$img"
            imgs+=("$img")
        }
        fmt plain
        fmt cbc --cipher aes-cbc-essiv:sha256 --key-size 256 --sector-size 512 \
            --label seedlabel --subsystem seedsub
        fmt md32k --luks2-metadata-size 32k --luks2-keyslots-size 1m
        fmt argon --pbkdf argon2id --pbkdf-memory 32 --pbkdf-force-iterations 4 --pbkdf-parallel 1
        fmt multi
        cryptsetup luksAddKey --batch-mode --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
            --key-file "$work/key" "$work/multi.img" "$work/key2"
        cryptsetup token add --key-description seed --key-slot 1 "$work/multi.img"
        cryptsetup config --priority prefer --key-slot 1 "$work/multi.img"
        truncate -s 1m "$work/detached.img"
        truncate -s 8M "$work/data.img"
        cryptsetup luksFormat "${fast[@]}" --header "$work/detached.img" --luks2-keyslots-size 512k \
            "$work/data.img"
        imgs+=("$work/detached.img")
    else
        echo "fuzz.sh: cryptsetup not found; seeding from reference images only" >&2
    fi
    if [ -f "$TESTDATA/luks2_mda_images.tar.xz" ]; then
        tar xJf "$TESTDATA/luks2_mda_images.tar.xz" -C "$work" test_image_16 test_image_32
        xz -dkc "$TESTDATA/compatimage2.img.xz" >"$work/compatimage2.img"
        imgs+=("$work/test_image_16" "$work/test_image_32" "$work/compatimage2.img")
    fi
    # Binary seeds: a mode byte (1 = re-seal checksums) and both copies.
    # JSON seeds: the JSON text of the primary and its NUL.
    python3 - "$bin" "$json" "${imgs[@]}" <<'EOF'
import os, sys
bin_dir, json_dir, imgs = sys.argv[1], sys.argv[2], sys.argv[3:]
for img in imgs:
    name = os.path.basename(img)
    with open(img, "rb") as f:
        head = f.read(4096)
        hs = int.from_bytes(head[8:16], "big")
        f.seek(0)
        both = f.read(2 * hs)
    text = both[4096:hs].split(b"\0", 1)[0]
    for mode in (0, 1):
        with open(os.path.join(bin_dir, f"seed-{name}-{mode}"), "wb") as o:
            o.write(bytes([mode]) + both)
    with open(os.path.join(json_dir, f"seed-{name}"), "wb") as o:
        o.write(text + b"\0")
EOF
    echo "fuzz.sh: ${#imgs[@]} seed headers" >&2
}
make_seeds

# --- build and run ----------------------------------------------------------
cd "$ROOT/fuzz"
# -a: debug assertions and overflow checks on, so arithmetic overflow is a
# crash instead of a silent wrap.
FLAGS=(-a --sanitizer "$SANITIZER")
cargo +nightly fuzz build "${FLAGS[@]}"
declare -A MAX_LEN=([luks2_binary]=70000 [luks2_json]=16384)
status=0
for t in $TARGETS; do
    log=$ROOT/fuzz/artifacts/$t.log
    mkdir -p "$ROOT/fuzz/artifacts/$t"
    echo "fuzz.sh: $t for ${FUZZ_SECONDS}s" >&2
    set +e
    cargo +nightly fuzz run "${FLAGS[@]}" "$t" -- \
        -max_total_time="$FUZZ_SECONDS" -max_len="${MAX_LEN[$t]:-65536}" \
        -dict="$ROOT/fuzz/luks2.dict" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 2>&1 | tee "$log" |
        grep -E '^(#[0-9]+[[:space:]]+(INITED|DONE)|==[0-9]+== ERROR|SUMMARY|stat::|thread .* panicked)' || true
    rc=${PIPESTATUS[0]}
    set -e
    if [ "$rc" -ne 0 ]; then
        echo "fuzz.sh: $t FAILED (exit $rc); log: $log; reproducers:" >&2
        ls -1 "$ROOT/fuzz/artifacts/$t" >&2 || true
        status=1
    else
        execs=$(grep -h 'stat::number_of_executed_units' "$log" | awk '{s += $2} END {print s + 0}')
        echo "fuzz.sh: $t ok: $execs executions in ${FUZZ_SECONDS}s ($((execs / FUZZ_SECONDS))/s)" >&2
    fi
done
exit $status
