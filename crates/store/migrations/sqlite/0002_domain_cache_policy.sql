-- The operator's per-domain caching overrides, as the JSON of `CachePolicy`; NULL = defaults.
ALTER TABLE domains ADD COLUMN cache_policy TEXT;
