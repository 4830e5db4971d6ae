//! The edge protocol's messages (`precache_model::edge_protocol`) read from bytes, as the edge
//! and the control plane read them from each other (and the edge from its persisted domain
//! table): no panic, and whatever is read serialises and reads back to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use precache_model::edge_protocol::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(bytes: &[u8]) {
    let Ok(message) = serde_json::from_slice::<T>(bytes) else {
        return;
    };
    let written = serde_json::to_vec(&message).expect("a message read serialises");
    let again = serde_json::from_slice::<T>(&written).unwrap_or_else(|e| {
        panic!(
            "{} does not read back: {e}: {}",
            std::any::type_name::<T>(),
            String::from_utf8_lossy(&written)
        )
    });
    assert_eq!(again, message, "{}", String::from_utf8_lossy(&written));
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 17 {
        0 => round_trip::<DomainRoute>(bytes),
        1 => round_trip::<DomainTable>(bytes),
        2 => round_trip::<EdgeStatus>(bytes),
        3 => round_trip::<PurgeCommand>(bytes),
        4 => round_trip::<PurgeOutcome>(bytes),
        5 => round_trip::<PrefetchCommand>(bytes),
        6 => {
            // Progress arrives as NDJSON: every line is one event.
            for line in bytes.split(|b| *b == b'\n') {
                round_trip::<PrefetchEvent>(line);
            }
        }
        7 => round_trip::<PairOutcome>(bytes),
        8 => round_trip::<JoinRequest>(bytes),
        9 => round_trip::<JoinAnswer>(bytes),
        10 => round_trip::<Hello>(bytes),
        11 => round_trip::<HelloAnswer>(bytes),
        12 => round_trip::<OwedPurge>(bytes),
        13 => round_trip::<CaughtUp>(bytes),
        14 => round_trip::<AppliedPurge>(bytes),
        15 => round_trip::<CachePolicy>(bytes),
        _ => round_trip::<OriginLimits>(bytes),
    }
});
