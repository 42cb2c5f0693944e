//! wrapcrypt-provider (see README.md).
