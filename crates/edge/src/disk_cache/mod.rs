//! The disk cache: pingora-cache `Storage` backed by plain files and an in-memory index.
