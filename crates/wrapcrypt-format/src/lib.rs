//! wrapcrypt-format (see README.md).
