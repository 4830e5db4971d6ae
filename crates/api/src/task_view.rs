//! How tasks look on the wire: the status answer and the list entries.

pub(crate) mod schemas;

use precache_model::edge_protocol::{PurgeMode, DRY_RUN_MODE};
use precache_model::time::rfc3339_millis;
use precache_model::{PairStatus, TaskKind};
use precache_store::{PairRecord, TaskDetail, TaskSummary};
use serde_json::{json, Map, Value};

/// A percentage with two decimals, as a float (`50.0`, `33.33`).
fn percent(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 10_000.0 / whole as f64).round() / 100.0
}

/// `progress` and `success_rate` of a task.
fn rates(summary: &TaskSummary) -> (f64, f64) {
    let progress = if summary.n_pairs == 0 {
        100.0
    } else {
        percent(summary.n_finished, summary.n_pairs)
    };
    // Pairs their target cannot carry out are finished, but no measure of success: a task
    // with nothing it could do anywhere failed nowhere.
    let supported = summary.n_pairs - summary.n_unsupported;
    let success_rate = if supported == 0 {
        100.0
    } else {
        percent(summary.n_success, supported)
    };
    (progress, success_rate)
}

/// The fields every view of a task has.
pub(crate) fn summary_fields(summary: &TaskSummary) -> Map<String, Value> {
    let (progress, success_rate) = rates(summary);
    let mut fields = Map::new();
    fields.insert("reqId".into(), json!(summary.id.to_string()));
    fields.insert("type".into(), json!(summary.kind.as_str()));
    fields.insert("domain".into(), json!(summary.domain));
    fields.insert("status".into(), json!(summary.status.as_str()));
    fields.insert(
        "created_at".into(),
        json!(rfc3339_millis(summary.created_at)),
    );
    fields.insert(
        "started_at".into(),
        json!(summary.started_at.map(rfc3339_millis)),
    );
    fields.insert(
        "finished_at".into(),
        json!(summary.finished_at.map(rfc3339_millis)),
    );
    fields.insert("progress".into(), json!(progress));
    fields.insert("success_rate".into(), json!(success_rate));
    fields.insert("urls_total".into(), json!(summary.n_urls));
    fields.insert("pairs_total".into(), json!(summary.n_pairs));
    fields.insert("pairs_finished".into(), json!(summary.n_finished));
    fields.insert("pairs_success".into(), json!(summary.n_success));
    fields.insert("pairs_unsupported".into(), json!(summary.n_unsupported));
    fields
}

fn pair_json(pair: &PairRecord, kind: TaskKind) -> Value {
    let (backend, target) = match &pair.backend {
        Some((backend, url)) => (backend.as_str(), url.as_str()),
        None => (precache_store::EDGES_BACKEND, pair.edge_name.as_str()),
    };
    // On a success, the text is a note (e.g. "deleted: nginx cannot invalidate"), not an error.
    let (error, note) = match pair.status {
        PairStatus::Success => (None, pair.error.as_deref()),
        _ => (pair.error.as_deref(), None),
    };
    let mut fields = json!({
        "edge": if pair.backend.is_some() { target } else { pair.edge_name.as_str() },
        "backend": backend,
        "target": target,
        "status": pair.status.as_str(),
        "attempts": pair.attempts,
        "http_status": pair.http_status,
        "bytes": pair.bytes,
        "error": error,
        "started_at": pair.started_at.map(rfc3339_millis),
        "finished_at": pair.finished_at.map(rfc3339_millis),
    });
    if kind == TaskKind::Prefetch {
        // While it runs, `bytes` is what the edge has fetched so far, of this many.
        fields["expected_bytes"] = json!(pair.expected_bytes);
    }
    if kind == TaskKind::Refresh {
        // What the purge found on this target: for a URL, whether it was cached at all (null
        // where the target cannot tell: never a guess).
        fields["objects"] = json!(pair.objects);
        fields["was_cached"] = json!(pair.objects.map(|objects| objects > 0));
        // `false`: the target only accepted the purge (a CDN with nothing to poll).
        fields["confirmed"] = json!(pair.confirmed);
    }
    if let Some(note) = note {
        fields["note"] = json!(note);
    }
    fields
}

/// One URL's entry: its state over all edges, and each edge's.
///
/// A URL is `success` only when every target that can has it (`unsupported` when none can),
/// `failed` when every target finished and one did not; `edges_success` says how many have
/// it either way.
fn url_json(url: &str, is_dir: bool, kind: TaskKind, phase: i64, pairs: &[&PairRecord]) -> Value {
    let finished = pairs.iter().filter(|pair| pair.status.is_final()).count();
    let succeeded = pairs
        .iter()
        .filter(|pair| pair.status == PairStatus::Success)
        .count();
    let started = pairs
        .iter()
        .any(|pair| !matches!(pair.status, PairStatus::Waiting | PairStatus::Held));
    let cancelled = pairs
        .iter()
        .any(|pair| pair.status == PairStatus::Cancelled);
    let unsupported = pairs
        .iter()
        .filter(|pair| pair.status == PairStatus::Unsupported)
        .count();
    let status = if !pairs.is_empty() && finished == pairs.len() {
        if unsupported == pairs.len() {
            "unsupported"
        } else if succeeded + unsupported == pairs.len() {
            "success"
        } else if cancelled {
            "cancelled"
        } else {
            "failed"
        }
    } else if started {
        "running"
    } else if pairs.is_empty() {
        "failed"
    } else {
        "waiting"
    };
    let failure = pairs.iter().find(|pair| pair.status == PairStatus::Failed);
    let shown = failure
        .or_else(|| pairs.iter().find(|pair| pair.status == PairStatus::Success))
        .copied();
    let error = match (failure, pairs.len()) {
        (Some(pair), 1) => pair.error.clone(),
        (Some(pair), _) => pair
            .error
            .as_ref()
            .map(|error| format!("edge {}: {error}", pair.edge_name)),
        (None, _) if pairs.is_empty() => Some("no edge to run on".to_string()),
        (None, _) => None,
    };
    let mut fields = json!({
        "url": url,
        "status": status,
        "edges_total": pairs.len(),
        "edges_success": succeeded,
        "http_status": shown.and_then(|pair| pair.http_status),
        "bytes": shown.and_then(|pair| pair.bytes),
        "error": error,
        "edges": pairs.iter().map(|pair| pair_json(pair, kind)).collect::<Vec<_>>(),
    });
    if kind == TaskKind::Refresh && phase == 1 {
        // The warm phase after the purge: a prefetch, reported as one.
        fields["phase"] = json!("warm");
        return fields;
    }
    if kind == TaskKind::Refresh {
        fields["phase"] = json!("refresh");
        // Summed over the edges: what the refresh removed (or marked stale) everywhere.
        fields["dir"] = json!(is_dir);
        fields["objects"] = json!(pairs.iter().filter_map(|pair| pair.objects).sum::<i64>());
        fields["bytes"] = json!(pairs.iter().filter_map(|pair| pair.bytes).sum::<i64>());
    }
    fields
}

/// Progress of a refresh's two phases: the purge, then the warm.
fn phases_json(detail: &TaskDetail) -> Value {
    let phase_of = |pair: &PairRecord| {
        detail
            .phase
            .get(pair.url_idx as usize)
            .copied()
            .unwrap_or(0)
    };
    let counts = |phase: i64| {
        let pairs: Vec<&PairRecord> = detail
            .pairs
            .iter()
            .filter(|pair| phase_of(pair) == phase)
            .collect();
        let finished = pairs.iter().filter(|pair| pair.status.is_final()).count();
        let success = pairs
            .iter()
            .filter(|pair| pair.status == PairStatus::Success)
            .count();
        let state = if finished == pairs.len() {
            "done"
        } else if pairs.iter().all(|pair| pair.status == PairStatus::Held) {
            "held"
        } else {
            "running"
        };
        json!({"status": state, "pairs_total": pairs.len(), "pairs_finished": finished, "pairs_success": success})
    };
    json!({"refresh": counts(0), "warm": counts(1)})
}

/// The full status answer of a task.
pub(crate) fn detail_json(detail: &TaskDetail) -> Value {
    let mut fields = summary_fields(&detail.summary);
    let urls: Vec<Value> = detail
        .urls
        .iter()
        .enumerate()
        .map(|(url_idx, url)| {
            let pairs: Vec<&PairRecord> = detail
                .pairs
                .iter()
                .filter(|pair| pair.url_idx == url_idx as i64)
                .collect();
            let is_dir = detail.is_dir.get(url_idx).copied().unwrap_or(false);
            let phase = detail.phase.get(url_idx).copied().unwrap_or(0);
            url_json(url, is_dir, detail.summary.kind, phase, &pairs)
        })
        .collect();
    fields.insert("urls".into(), Value::Array(urls));
    let cancelled = detail
        .pairs
        .iter()
        .filter(|pair| pair.status == PairStatus::Cancelled)
        .count();
    fields.insert("pairs_cancelled".into(), json!(cancelled));
    if detail.summary.kind == TaskKind::Refresh {
        let dry_run = detail.mode.as_deref() == Some(DRY_RUN_MODE);
        let mode = detail
            .mode
            .as_deref()
            .and_then(PurgeMode::from_name)
            .unwrap_or_default();
        fields.insert("mode".into(), json!(mode.as_str()));
        fields.insert("dry_run".into(), json!(dry_run));
        if detail.phase.contains(&1) {
            fields.insert("phases".into(), phases_json(detail));
        }
        // Measured propagation: from acceptance to the last edge's confirmation.
        let propagation = detail
            .summary
            .finished_at
            .map(|finished| finished - detail.summary.created_at);
        fields.insert("propagation_ms".into(), json!(propagation));
    }
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::percent;

    #[test]
    fn percentages_have_two_decimals() {
        assert_eq!(percent(1, 2), 50.0);
        assert_eq!(percent(1, 3), 33.33);
        assert_eq!(percent(3, 3), 100.0);
        assert_eq!(percent(0, 0), 0.0);
    }
}
