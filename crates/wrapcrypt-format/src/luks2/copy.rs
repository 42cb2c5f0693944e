//! Which of the two metadata copies: a leaf type shared by the binary
//! header codec and the error types, so neither depends on the other.

/// Which of the two metadata copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copy {
    /// The copy at offset 0.
    Primary,
    /// The copy right after the primary (at `hdr_size`).
    Secondary,
}

impl std::fmt::Display for Copy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Copy::Primary => "primary",
            Copy::Secondary => "secondary",
        })
    }
}
