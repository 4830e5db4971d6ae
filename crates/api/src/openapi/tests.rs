//! The description against the router, against the tags and codes it declares, and against the
//! committed `docs/openapi.json`.

use std::collections::BTreeSet;

use precache_model::edge_protocol::{CAUGHT_UP_PATH, HELLO_PATH, JOIN_PATH};
use serde_json::Value;

use super::*;

/// The route table, read as source: the test sees what the router really serves.
const ROUTER_SOURCE: &str = include_str!("../routes/mod.rs");

/// Constants the route table names paths by.
const PATH_CONSTANTS: &[(&str, &str)] = &[
    ("JOIN_PATH", JOIN_PATH),
    ("HELLO_PATH", HELLO_PATH),
    ("CAUGHT_UP_PATH", CAUGHT_UP_PATH),
];

/// Path parameters the description names otherwise than the router: the contract calls a task
/// id `reqId`, the router's pattern (also the `route` label of the metrics) `req_id`.
const PARAMETER_NAMES: &[(&str, &str)] = &[("{req_id}", "{reqId}")];

const METHODS: &[&str] = &["get", "post", "put", "delete", "patch", "head", "options"];

/// The text between the parenthesis that opens at `open` and the one that closes it.
fn parenthesized(text: &str, open: usize) -> &str {
    let mut depth = 0;
    for (index, character) in text[open..].char_indices() {
        match character {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[open + 1..open + index];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parentheses in routes/mod.rs after byte {open}");
}

/// Every (method, path) of `.route("PATH", get(..).post(..))` in the route table, with the
/// path as the description spells it.
fn routed() -> BTreeSet<(String, String)> {
    for unsupported in [".nest(", ".merge(", ".route_service(", ".nest_service("] {
        assert!(
            !ROUTER_SOURCE.contains(unsupported),
            "routes/mod.rs uses {unsupported}; teach this test to read it"
        );
    }
    let mut routes = BTreeSet::new();
    for (start, _) in ROUTER_SOURCE.match_indices(".route(") {
        let arguments = parenthesized(ROUTER_SOURCE, start + ".route".len());
        let (path, methods) = arguments
            .split_once(',')
            .unwrap_or_else(|| panic!("a route without a handler: {arguments}"));
        let path = path.trim();
        let mut path = match path.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
            Some(literal) => literal.to_string(),
            None => PATH_CONSTANTS
                .iter()
                .find(|(name, _)| *name == path)
                .unwrap_or_else(|| panic!("route path {path}: add it to PATH_CONSTANTS"))
                .1
                .to_string(),
        };
        for (router_name, described_name) in PARAMETER_NAMES {
            path = path.replace(router_name, described_name);
        }
        let mut found = false;
        for method in METHODS {
            let call = format!("{method}(");
            for (at, _) in methods.match_indices(&call) {
                let before = methods[..at].chars().next_back();
                if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    routes.insert((method.to_string(), path.clone()));
                    found = true;
                }
            }
        }
        assert!(found, "no method found in route {arguments}");
    }
    assert!(
        routes.len() > 30,
        "the route table was not read: {routes:?}"
    );
    routes
}

fn document_value() -> Value {
    serde_json::to_value(document()).expect("the document serializes")
}

/// Every (method, path) of the description.
fn described(doc: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(*method).is_some() {
                operations.insert((method.to_string(), path.clone()));
            }
        }
    }
    operations
}

#[test]
fn every_route_is_described_and_every_description_is_routed() {
    let routed = routed();
    let described = described(&document_value());
    let missing: Vec<_> = routed.difference(&described).collect();
    assert!(
        missing.is_empty(),
        "routes with no #[utoipa::path] listed in openapi.rs: {missing:?}"
    );
    let unrouted: Vec<_> = described.difference(&routed).collect();
    assert!(
        unrouted.is_empty(),
        "described but not routed: {unrouted:?}"
    );
}

#[test]
fn every_operation_has_its_codes_a_known_tag_and_a_unique_id() {
    let doc = document_value();
    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|tag| tag["name"].as_str())
        .collect();
    let mut ids = BTreeSet::new();
    for (method, path) in described(&doc) {
        let operation = &doc["paths"][&path][&method];
        let name = format!("{} {path}", method.to_uppercase());
        let codes: Vec<i64> = operation[RET_CODES]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has no {RET_CODES}"))
            .iter()
            .filter_map(Value::as_i64)
            .collect();
        assert_eq!(codes.first(), Some(&0), "{name}: {codes:?}");
        for code in &codes {
            let ret = Ret::from_code(*code).unwrap_or_else(|| panic!("{name}: no ret {code}"));
            let status = ret.http_status().as_u16().to_string();
            if ret != Ret::Ok {
                let response = &operation["responses"][&status];
                assert!(
                    response["description"]
                        .as_str()
                        .is_some_and(|text| text.contains(&format!("`ret` {code}:"))),
                    "{name}: the {status} response does not name ret {code}"
                );
            }
        }
        assert!(
            operation["responses"]
                .as_object()
                .is_some_and(|responses| responses.keys().any(|status| status.starts_with('2'))),
            "{name} has no success response"
        );
        for tag in operation["tags"].as_array().expect("tags") {
            let tag = tag.as_str().unwrap_or_default();
            assert!(tags.contains(tag), "{name}: undeclared tag {tag:?}");
        }
        let id = operation["operationId"].as_str().expect("operationId");
        assert!(ids.insert(id.to_string()), "{name}: operationId {id} twice");
    }
}

#[test]
fn the_description_lists_every_ret_code() {
    let doc = document_value();
    let description = doc["info"]["description"].as_str().expect("description");
    for ret in Ret::ALL {
        assert!(
            description.contains(&format!("| {} | ", ret as i64)),
            "ret {} is not in the table",
            ret as i64
        );
    }
}

/// `PRECACHE_WRITE_OPENAPI=1 cargo test -p precache-api openapi` writes the file instead.
#[test]
fn committed_docs_openapi_json_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let generated = document_json().expect("the document serializes");
    if std::env::var_os("PRECACHE_WRITE_OPENAPI").is_some() {
        std::fs::write(path, &generated).expect("write docs/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let parse = |text: &str| serde_json::from_str::<Value>(text).ok();
    assert!(
        parse(&committed).is_some() && parse(&committed) == parse(&generated),
        "docs/openapi.json is not the description this code generates; regenerate it with \
         `PRECACHE_WRITE_OPENAPI=1 cargo test -p precache-api openapi` and commit it"
    );
}
