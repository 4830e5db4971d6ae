//! The caching edge: a Pingora reverse proxy with a disk cache, driven by the edge protocol.

pub mod disk_cache;
