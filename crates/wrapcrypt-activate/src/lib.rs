//! wrapcrypt-activate (see README.md).
