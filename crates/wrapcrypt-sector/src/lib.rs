#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

/// Repeats `$body` for `$i` = 0..8 as separate statements. The vector
/// engines index their register arrays with it: with a literal index the
/// compiler keeps every element in a register, where a loop over the array
/// (not unrolled, since the body holds `asm!`) puts it on the stack.
#[cfg(target_arch = "x86_64")]
macro_rules! unroll8 {
    ($i:ident => $body:block) => {{
        {
            const $i: usize = 0;
            $body
        }
        {
            const $i: usize = 1;
            $body
        }
        {
            const $i: usize = 2;
            $body
        }
        {
            const $i: usize = 3;
            $body
        }
        {
            const $i: usize = 4;
            $body
        }
        {
            const $i: usize = 5;
            $body
        }
        {
            const $i: usize = 6;
            $body
        }
        {
            const $i: usize = 7;
            $body
        }
    }};
}

mod bench;
mod block;
mod iv;
mod locked;
mod lrw;
mod path;
mod serpent;
#[cfg(target_arch = "x86_64")]
mod serpent_avx2;
#[cfg(target_arch = "x86_64")]
mod serpent_avx512;
mod soft;
mod spec;
mod twofish;
#[cfg(target_arch = "x86_64")]
mod twofish_avx512;
mod wipe;

#[cfg(target_arch = "x86_64")]
mod aesni;
#[cfg(target_arch = "x86_64")]
mod vaes256;
#[cfg(target_arch = "x86_64")]
mod vaes512;
mod words;

/// Cipher block size in bytes (all supported ciphers). Kept at the root so
/// that the cipher modules share it without depending on one another.
pub(crate) const BLOCK: usize = 16;

pub use bench::{benchmark, benchmark_with, BenchError};
pub use block::Backend;
pub use path::{XtsPath, XTS_PATH_ENV};
pub use soft::{check_sector_size, new_soft_cipher, SoftCipher};
pub use spec::{Cipher, CipherSpec, EssivHash, IvMode, Mode, SpecError};

/// Error from a sector cipher (software engine or a key provider session).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SectorError {
    /// The buffer is not a whole number of sectors.
    #[error("buffer of {len} bytes is not a multiple of the {sector_size}-byte sector size")]
    Misaligned {
        /// buffer length
        len: usize,
        /// sector size
        sector_size: usize,
    },
    /// The provider that holds the key failed (custodian gone, token removed).
    #[error("key provider failed: {0}")]
    Provider(String),
}

/// Encrypts and decrypts batches of whole sectors in place, as dm-crypt does.
///
/// `iv_sector` is the IV sector number of the first sector of `data`, in
/// 512-byte units: (byte offset inside the segment / 512) + iv_tweak.
/// Following sectors of `sector_size` bytes advance it by `sector_size / 512`
/// (LUKS2 never uses dm-crypt's `iv_large_sectors`).
pub trait SectorCipher: Send + Sync {
    /// The encryption sector size in bytes (512..=4096, a power of two).
    fn sector_size(&self) -> usize;
    /// Encrypts `data` (whole sectors) in place.
    fn encrypt(&self, iv_sector: u64, data: &mut [u8]) -> Result<(), SectorError>;
    /// Decrypts `data` (whole sectors) in place.
    fn decrypt(&self, iv_sector: u64, data: &mut [u8]) -> Result<(), SectorError>;
    /// A page-aligned buffer of at least `len` bytes whose sectors this
    /// cipher processes without copying (memory shared with an
    /// out-of-process provider). `None`: ordinary memory is as fast.
    fn shared_buffer(&self, len: usize) -> Option<SharedBuffer> {
        let _ = len;
        None
    }
    /// A cipher whose layout can change while it serves (a volume in
    /// online reencryption) must not have it change under a request: a
    /// data path calls `io_begin` before it encrypts (or reads ciphertext)
    /// and `io_end` after it wrote the ciphertext (or decrypted), for the
    /// same sectors (`iv_sector` and `len` as for `encrypt`). `io_begin`
    /// may wait while those sectors move to another layout; its ticket
    /// goes back to `io_end`.
    fn io_begin(&self, iv_sector: u64, len: usize) -> IoTicket {
        let _ = (iv_sector, len);
        IoTicket::default()
    }
    /// Ends what `io_begin` started (same sectors, its ticket).
    fn io_end(&self, iv_sector: u64, len: usize, ticket: IoTicket) {
        let _ = (iv_sector, len, ticket);
    }
}

/// How [`SectorCipher::io_begin`] admitted a request (a cipher-defined
/// value, e.g. lock-free or registered), handed back to `io_end`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoTicket(pub u32);

/// Memory handed out by [`SectorCipher::shared_buffer`].
pub type SharedBuffer = Box<dyn std::ops::DerefMut<Target = [u8]> + Send>;

/// Whether this CPU runs AES on the AES-NI fast path.
pub fn aes_ni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        aesni::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The name of the AES-XTS implementation that new engines use by default
/// (`vaes512`, `vaes256`, `aesni` or `portable`): the fastest this CPU has,
/// or a slower one named by `WRAPCRYPT_XTS_PATH`. Benchmarks print it.
pub fn xts_path() -> &'static str {
    path::selected().name()
}
