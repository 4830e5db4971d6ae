//! The edge's metrics: requests by cache result, bytes served, origin (or parent) fetches and
//! bytes, and the cache's size, evictions and fills as gauges. Counters are registered once and
//! kept, so a hit costs a few atomic adds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use metrics::{Counter, Gauge};

use crate::disk_cache::DiskCache;

/// Counter handles for the data plane.
pub(crate) struct EdgeMetrics {
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) passes: Counter,
    pub(crate) bytes_served: Counter,
    pub(crate) origin_fetches: Counter,
    pub(crate) parent_fetches: Counter,
    pub(crate) upstream_bytes: Counter,
    /// Hits answered by the edge's own hit path (`hit_path.rs`), also counted in `hits`.
    pub(crate) ready_hits: Counter,
    /// Hits and misses since start, for the hit ratio.
    hit_count: AtomicU64,
    miss_count: AtomicU64,
}

impl EdgeMetrics {
    pub(crate) fn register() -> EdgeMetrics {
        let requests = |cache: &'static str| metrics::counter!("precache_edge_requests_total", "cache" => cache);
        EdgeMetrics {
            hits: requests("hit"),
            misses: requests("miss"),
            passes: requests("pass"),
            bytes_served: metrics::counter!("precache_edge_bytes_served_total"),
            origin_fetches: metrics::counter!("precache_edge_upstream_fetches_total", "upstream" => "origin"),
            parent_fetches: metrics::counter!("precache_edge_upstream_fetches_total", "upstream" => "parent"),
            upstream_bytes: metrics::counter!("precache_edge_upstream_bytes_total"),
            ready_hits: metrics::counter!("precache_edge_ready_hits_total"),
            hit_count: AtomicU64::new(0),
            miss_count: AtomicU64::new(0),
        }
    }

    pub(crate) fn hit(&self) {
        self.hits.increment(1);
        self.hit_count.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn miss(&self) {
        self.misses.increment(1);
        self.miss_count.fetch_add(1, Ordering::Relaxed);
    }

    fn ratio(&self) -> Option<f64> {
        let hits = self.hit_count.load(Ordering::Relaxed);
        let misses = self.miss_count.load(Ordering::Relaxed);
        (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64)
    }
}

/// One registered domain's traffic: requests by cache result, body bytes sent to players, bytes
/// fetched from upstream. The label set is bounded: only domains in the table get handles.
#[derive(Debug, Clone)]
pub struct DomainTraffic {
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) passes: Counter,
    pub(crate) bytes_sent: Counter,
    pub(crate) upstream_bytes: Counter,
}

impl DomainTraffic {
    /// The handles of `domain`'s series (the same series whenever asked again).
    pub(crate) fn register(domain: &str) -> DomainTraffic {
        let requests = |cache: &'static str| metrics::counter!("precache_edge_domain_requests_total", "domain" => domain.to_string(), "cache" => cache);
        DomainTraffic {
            hits: requests("hit"),
            misses: requests("miss"),
            passes: requests("pass"),
            bytes_sent: metrics::counter!("precache_edge_domain_bytes_sent_total", "domain" => domain.to_string()),
            upstream_bytes: metrics::counter!("precache_edge_domain_upstream_bytes_total", "domain" => domain.to_string()),
        }
    }
}

/// Ids of the data plane's requests: a random prefix per process and a counter, so ids are
/// unique across restarts and edges without coordination.
#[derive(Clone)]
pub(crate) struct RequestIds {
    prefix: u32,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    pub(crate) fn new() -> RequestIds {
        RequestIds {
            prefix: rand::random(),
            next: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Twenty hex digits: the prefix, then the counter's low 48 bits. Written digit by digit,
    /// because `format!` was a percent of a small hit's CPU.
    pub(crate) fn next(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.next.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff_ffff;
        let id = (u128::from(self.prefix) << 48) | u128::from(n);
        (0..20)
            .rev()
            .map(|digit| char::from(HEX[((id >> (4 * digit)) & 0xf) as usize]))
            .collect()
    }
}

/// Gauges read from the cache (and the hit ratio since start), set about once a second.
pub(crate) struct CacheGauges {
    objects: Gauge,
    bytes: Gauge,
    stored_bytes: Gauge,
    budget: Gauge,
    evictions: Counter,
    fills: Gauge,
    hit_ratio: Gauge,
}

impl CacheGauges {
    pub(crate) fn register() -> CacheGauges {
        CacheGauges {
            objects: metrics::gauge!("precache_edge_cache_objects"),
            bytes: metrics::gauge!("precache_edge_cache_bytes"),
            stored_bytes: metrics::gauge!("precache_edge_cache_stored_bytes"),
            budget: metrics::gauge!("precache_edge_cache_budget_bytes"),
            evictions: metrics::counter!("precache_edge_cache_evictions_total"),
            fills: metrics::gauge!("precache_edge_fills_in_progress"),
            hit_ratio: metrics::gauge!("precache_edge_hit_ratio"),
        }
    }

    /// Sets every gauge from the cache's statistics and the hit ratio since start.
    pub(crate) fn update(&self, cache: &DiskCache, requests: &EdgeMetrics) {
        let stats = cache.stats();
        self.objects.set(stats.objects as f64);
        self.bytes.set(stats.bytes as f64);
        self.stored_bytes.set(stats.stored_bytes as f64);
        self.budget.set(stats.budget as f64);
        self.evictions.absolute(stats.evictions);
        self.fills.set(stats.fills_in_progress as f64);
        if let Some(ratio) = requests.ratio() {
            self.hit_ratio.set(ratio);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_the_prefix_then_the_counter_in_hex() {
        let ids = RequestIds {
            prefix: 0xf90d_d372,
            next: Arc::new(AtomicU64::new(0x1_0000_0000_002a)),
        };
        assert_eq!(ids.next(), "f90dd37200000000002a");
        assert_eq!(ids.next(), "f90dd37200000000002b");
    }
}
