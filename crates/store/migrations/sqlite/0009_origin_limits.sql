-- Per-domain origin protection during prefetch (JSON: max_concurrent_fetches, max_bandwidth).
ALTER TABLE domains ADD COLUMN origin_limits TEXT;
