//! Which AES-XTS implementation runs: chosen once from the CPU's features,
//! optionally lowered by `WRAPCRYPT_XTS_PATH` for tests and benchmarks.

use std::sync::OnceLock;

/// The implementations of AES-XTS, slowest first. Every path produces the
/// same bytes; they differ only in speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum XtsPath {
    /// RustCrypto's portable `aes` crate.
    Portable,
    /// 128-bit AES-NI with PCLMULQDQ tweaks, eight blocks in flight.
    AesNi,
    /// VAES and VPCLMULQDQ on 256-bit ymm registers (AVX2).
    Vaes256,
    /// VAES and VPCLMULQDQ on 512-bit zmm registers (AVX-512 F/BW/VL).
    Vaes512,
}

/// The environment variable that lowers the default path.
pub const XTS_PATH_ENV: &str = "WRAPCRYPT_XTS_PATH";

impl XtsPath {
    /// Every path, slowest first.
    pub const ALL: [XtsPath; 4] = [
        XtsPath::Portable,
        XtsPath::AesNi,
        XtsPath::Vaes256,
        XtsPath::Vaes512,
    ];

    /// The name `WRAPCRYPT_XTS_PATH` accepts and [`crate::xts_path`] prints.
    pub fn name(self) -> &'static str {
        match self {
            XtsPath::Portable => "portable",
            XtsPath::AesNi => "aesni",
            XtsPath::Vaes256 => "vaes256",
            XtsPath::Vaes512 => "vaes512",
        }
    }

    /// Reads a name written by [`XtsPath::name`].
    pub fn from_name(name: &str) -> Option<XtsPath> {
        XtsPath::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether this CPU can run the path.
    pub fn available(self) -> bool {
        self <= best()
    }

    /// The paths this CPU can run, slowest first.
    pub fn available_paths() -> Vec<XtsPath> {
        XtsPath::ALL.into_iter().filter(|p| p.available()).collect()
    }
}

/// The fastest path this CPU supports.
pub(crate) fn best() -> XtsPath {
    static BEST: OnceLock<XtsPath> = OnceLock::new();
    *BEST.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> XtsPath {
    use std::arch::is_x86_feature_detected as has;
    if !aes_ni() {
        XtsPath::Portable
    } else if has!("vaes")
        && has!("vpclmulqdq")
        && has!("avx512f")
        && has!("avx512bw")
        && has!("avx512vl")
    {
        XtsPath::Vaes512
    } else if has!("vaes") && has!("vpclmulqdq") && has!("avx2") {
        XtsPath::Vaes256
    } else {
        XtsPath::AesNi
    }
}

/// Whether this CPU can run the 128-bit AES-NI engine (which every faster
/// path also needs, for key expansion and the tweak encryption).
#[cfg(target_arch = "x86_64")]
pub(crate) fn aes_ni() -> bool {
    use std::arch::is_x86_feature_detected as has;
    has!("aes") && has!("pclmulqdq") && has!("sse4.1") && has!("ssse3")
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> XtsPath {
    XtsPath::Portable
}

/// The path new engines use by default: the best one, or the one
/// `WRAPCRYPT_XTS_PATH` names if that is slower (never one the CPU lacks; an
/// unknown name is ignored, and [`crate::xts_path`] shows what ran).
pub(crate) fn selected() -> XtsPath {
    static SELECTED: OnceLock<XtsPath> = OnceLock::new();
    *SELECTED.get_or_init(|| {
        let forced = std::env::var(XTS_PATH_ENV)
            .ok()
            .and_then(|v| XtsPath::from_name(v.trim()));
        clamp(forced.unwrap_or(XtsPath::Vaes512))
    })
}

/// `wanted`, or the fastest available path below it.
pub(crate) fn clamp(wanted: XtsPath) -> XtsPath {
    wanted.min(best())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order_is_by_speed() {
        for p in XtsPath::ALL {
            assert_eq!(XtsPath::from_name(p.name()), Some(p));
        }
        assert_eq!(XtsPath::from_name("vaes1024"), None);
        assert!(XtsPath::Portable < XtsPath::AesNi && XtsPath::Vaes256 < XtsPath::Vaes512);
        assert!(XtsPath::Portable.available());
        assert_eq!(clamp(XtsPath::Vaes512), best());
        assert_eq!(clamp(XtsPath::Portable), XtsPath::Portable);
        let avail = XtsPath::available_paths();
        assert_eq!(avail.last(), Some(&best()));
        assert_eq!(
            avail.len(),
            XtsPath::ALL.iter().position(|&p| p == best()).unwrap() + 1
        );
    }
}
