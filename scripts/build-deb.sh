#!/usr/bin/env bash
# Builds wrapcrypt_VERSION_ARCH.deb with dpkg-deb from the release binaries
# (`make build`), without debhelper or a source package: docs/packaging.md.
#
#   WRAPCRYPT_BIN_DIR      the binaries (default $CARGO_TARGET_DIR/release)
#   DEB_OUT_DIR            where the .deb goes (default $CARGO_TARGET_DIR/debian)
#   WRAPCRYPT_SYSTEMD_DIR  units to ship (default packaging/systemd)
#   DEBFULLNAME, DEBEMAIL  the Maintainer field
#   SOURCE_DATE_EPOCH      timestamps (default: the last commit's date)
#
# Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
bin_dir=${WRAPCRYPT_BIN_DIR:-$target/release}
out_dir=${DEB_OUT_DIR:-$target/debian}
units_dir=${WRAPCRYPT_SYSTEMD_DIR:-$root/packaging/systemd}
maintainer="${DEBFULLNAME:-wrapcrypt maintainers} <${DEBEMAIL:-maintainers@users.noreply.r-seed-6081424d.example}>"

die() {
	echo "build-deb: $*" >&2
	exit 1
}

for b in wrapcrypt wrapcrypt-custodiand; do
	[ -x "$bin_dir/$b" ] || die "$bin_dir/$b not found: run make build (or set WRAPCRYPT_BIN_DIR)"
done
for t in dpkg-deb dpkg-shlibdeps strip gzip; do
	command -v "$t" >/dev/null || die "$t not found: run make deps"
done

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

version=$("$bin_dir/wrapcrypt" --version | awk '{print $2; exit}')
[ -n "$version" ] || die "$bin_dir/wrapcrypt --version printed no version"
arch=$(dpkg --print-architecture)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pkg=$work/wrapcrypt
umask 022

# Admin tools that need root (section 8) go to /usr/sbin (Policy 9.1.1);
# the daemon sits beside the CLI, where find_daemon looks first.
install -d "$pkg/usr/sbin"
for b in wrapcrypt wrapcrypt-custodiand; do
	install -m 0755 "$bin_dir/$b" "$pkg/usr/sbin/$b"
done
if [ -x "$bin_dir/wrapcrypt-generator" ]; then
	install -d "$pkg/usr/lib/systemd/system-generators"
	install -m 0755 "$bin_dir/wrapcrypt-generator" \
		"$pkg/usr/lib/systemd/system-generators/wrapcrypt-generator"
fi
# As dh_strip does; the debug info of the release profile stays in target/.
while IFS= read -r -d '' f; do
	strip --remove-section=.comment --remove-section=.note --strip-unneeded "$f"
done < <(find "$pkg/usr" -type f -perm -0100 -print0)

shopt -s nullglob
units=("$units_dir"/*.service "$units_dir"/*.socket)
shopt -u nullglob
if [ ${#units[@]} -gt 0 ]; then
	install -d "$pkg/usr/lib/systemd/system"
	for u in "${units[@]}"; do
		install -m 0644 "$u" "$pkg/usr/lib/systemd/system/"
	done
fi

# Man pages and completions from the clap definitions, by the binaries
# being packaged (wrapcrypt runs the wrapcrypt-custodiand beside it).
gen=$work/gen
"$pkg/usr/sbin/wrapcrypt" __generate "$gen" >/dev/null
for sec_dir in "$gen"/man*; do
	sec=$(basename "$sec_dir")
	install -d "$pkg/usr/share/man/$sec"
	for page in "$sec_dir"/*; do
		gzip -9n <"$page" >"$pkg/usr/share/man/$sec/$(basename "$page").gz"
	done
done
[ -f "$pkg/usr/share/man/man8/wrapcrypt-custodiand.8.gz" ] ||
	die "wrapcrypt __generate wrote no wrapcrypt-custodiand.8"
comp=$gen/completions
install -D -m 0644 "$comp/wrapcrypt.bash" "$pkg/usr/share/bash-completion/completions/wrapcrypt"
install -D -m 0644 "$comp/_wrapcrypt" "$pkg/usr/share/zsh/vendor-completions/_wrapcrypt"
install -D -m 0644 "$comp/wrapcrypt.fish" "$pkg/usr/share/fish/vendor_completions.d/wrapcrypt.fish"

doc=$pkg/usr/share/doc/wrapcrypt
install -d "$doc"
install -m 0644 packaging/debian/copyright "$doc/copyright"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
	echo "wrapcrypt ($version) unstable; urgency=medium"
	echo
	echo "  * Built with scripts/build-deb.sh from commit $commit."
	echo
	echo " -- $maintainer  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.gz"
if [ -f packaging/debian/lintian-overrides ]; then
	install -D -m 0644 packaging/debian/lintian-overrides "$pkg/usr/share/lintian/overrides/wrapcrypt"
fi

# Depends from the ELF files' NEEDED entries, as dh_shlibdeps computes it.
shl=$work/shlibdeps
mkdir -p "$shl/debian"
printf 'Source: wrapcrypt\n\nPackage: wrapcrypt\nArchitecture: any\n' >"$shl/debian/control"
elves=()
while IFS= read -r -d '' f; do elves+=("-e$f"); done < <(find "$pkg/usr" -type f -perm -0100 -print0 | sort -z)
depends=$(cd "$shl" && dpkg-shlibdeps -O "${elves[@]}" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || die "dpkg-shlibdeps computed no Depends"

install -d "$pkg/DEBIAN"
for s in postinst prerm postrm; do
	install -m 0755 "packaging/debian/$s" "$pkg/DEBIAN/$s"
done
(cd "$pkg" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$pkg/DEBIAN/md5sums"
chmod 0644 "$pkg/DEBIAN/md5sums"
installed_size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
cat >"$pkg/DEBIAN/control" <<EOF
Package: wrapcrypt
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $depends
Suggests: cryptsetup-bin, softhsm2
Section: admin
Priority: optional
Description: cryptsetup-compatible LUKS2 manager with wrapped keys
 wrapcrypt manages LUKS1 and LUKS2 volumes with cryptsetup's actions,
 options and exit codes. Its waes-xts-plain64 volumes use a wrapped volume
 key: generated by a key provider (the wrapcrypt-custodiand key custodian,
 a PKCS#11 token or a TPM-sealed master key), stored on disk only wrapped,
 and never present in clear in a wrapcrypt process.
 .
 This package contains the wrapcrypt command, the key custodian daemon,
 their systemd integration, man pages and shell completions.
EOF

# Timestamps from SOURCE_DATE_EPOCH, so the same commit builds the same .deb.
find "$pkg" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$out_dir"
deb=$out_dir/wrapcrypt_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "$deb"
