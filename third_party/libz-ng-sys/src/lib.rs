//! Stand-in for the `libz-ng-sys` crate.
//!
//! pingora-core enables flate2's `zlib-ng` feature, and the real `libz-ng-sys` builds zlib-ng with
//! cmake, which a fresh machine does not have. flate2 only uses the zlib-compatible names of that
//! crate (`deflate`, `z_stream`, `deflateInit2_`, ...), which `libz-sys` provides under the same
//! names, so re-exporting it is enough. The cost is speed of gzip in pingora's optional
//! compression module, which precache does not enable.
#![allow(missing_docs)]
pub use libz_sys::*;
