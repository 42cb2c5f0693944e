//! wrapcrypt-volume (see README.md).
