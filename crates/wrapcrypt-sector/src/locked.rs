//! Key schedules of foreign cipher types kept in locked, non-dumpable memory.

use std::marker::PhantomData;

use wrapcrypt_secret::SecretBytes;

/// A value of any type `T` placed in a [`SecretBytes`] mapping.
///
/// Cipher crates build their key schedules by value (`KeyInit::new`), so the
/// value is written into locked memory as soon as it is returned, and the
/// stack below the caller is overwritten afterwards ([`burn_stack`]) so that
/// the temporary the constructor used does not survive the call.
pub(crate) struct Locked<T> {
    mem: SecretBytes,
    _t: PhantomData<T>,
}

impl<T> Locked<T> {
    /// Builds the value with `f` and moves it into locked memory.
    pub(crate) fn try_new<E>(f: impl FnOnce() -> Result<T, E>) -> Result<Locked<T>, E> {
        let mut mem = SecretBytes::zeroed(std::mem::size_of::<T>().max(1));
        let p = mem.expose_secret_mut().as_mut_ptr() as *mut T;
        // The mapping is page aligned, far beyond any cipher's alignment.
        assert_eq!(p as usize % std::mem::align_of::<T>(), 0);
        let built = build(f);
        burn_stack();
        let v = built?;
        // SAFETY: p is valid, aligned, large enough and holds no live T yet.
        unsafe { p.write(v) };
        Ok(Locked {
            mem,
            _t: PhantomData,
        })
    }

    /// Infallible [`Locked::try_new`].
    pub(crate) fn new(f: impl FnOnce() -> T) -> Locked<T> {
        match Self::try_new(|| Ok::<T, std::convert::Infallible>(f())) {
            Ok(v) => v,
            Err(e) => match e {},
        }
    }

    /// Shared access.
    pub(crate) fn get(&self) -> &T {
        // SAFETY: written in try_new, dropped only in Drop.
        unsafe { &*(self.mem.expose_secret().as_ptr() as *const T) }
    }

    /// Exclusive access.
    pub(crate) fn get_mut(&mut self) -> &mut T {
        // SAFETY: as in get, and &mut self is unique.
        unsafe { &mut *(self.mem.expose_secret_mut().as_mut_ptr() as *mut T) }
    }
}

#[inline(never)]
fn build<T, E>(f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    f()
}

impl<T> Drop for Locked<T> {
    fn drop(&mut self) {
        // SAFETY: the value is live; the mapping itself is zeroized by SecretBytes.
        unsafe { std::ptr::drop_in_place(self.mem.expose_secret_mut().as_mut_ptr() as *mut T) }
    }
}

/// Overwrites the stack area that key-schedule constructors and hash
/// compressions just used, so no copy of key material outlives the call
/// (the same idea as libgcrypt's `_gcry_burn_stack`).
#[inline(never)]
pub(crate) fn burn_stack() {
    let mut buf = [0u8; 16 * 1024];
    zeroize::Zeroize::zeroize(&mut buf[..]);
    std::hint::black_box(&buf);
}
