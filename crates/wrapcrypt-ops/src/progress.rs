//! The one progress hook of long work (reencrypt, the luksFormat wipe,
//! re-enciphering many keyslots, benchmark rows). Workflows call
//! [`Progress::update`]; they never touch a terminal. The CLI renders the
//! calls (a redrawn line on a TTY, nothing otherwise); a program may log
//! them or ignore them ([`Silent`]).

/// What one unit of work counts, so a renderer can name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Bytes written (reencrypt, wipes): rate in MiB/s.
    Bytes,
    /// Whole items (keyslots, benchmark rows), named in the plural.
    Items(&'static str),
}

/// Receives how far a piece of long work is. `done` grows from 0 to
/// `total`; the call with `done == total` is the last one of that work.
pub trait Progress {
    /// `done` of `total` units are finished.
    fn update(&mut self, done: u64, total: u64);
}

/// Any `FnMut(done, total)` is a progress hook (the engine crates below
/// ops take closures, so a `&mut dyn Progress` passes through as one).
impl<F: FnMut(u64, u64)> Progress for F {
    fn update(&mut self, done: u64, total: u64) {
        self(done, total)
    }
}

/// A hook that ignores every update.
pub struct Silent;

impl Progress for Silent {
    fn update(&mut self, _done: u64, _total: u64) {}
}

/// A `&mut dyn Progress` as the closure the volume engine takes.
pub fn as_fn(p: &mut dyn Progress) -> impl FnMut(u64, u64) + '_ {
    move |done, total| p.update(done, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closures_and_silent_are_hooks() {
        let mut seen = Vec::new();
        {
            let mut f = |d: u64, t: u64| seen.push((d, t));
            let p: &mut dyn Progress = &mut f;
            p.update(1, 4);
            let mut g = as_fn(p);
            g(4, 4);
        }
        assert_eq!(seen, vec![(1, 4), (4, 4)]);
        Silent.update(1, 2);
    }
}
