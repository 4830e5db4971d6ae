//! The request-body reader (`crates/api/src/lenient_json.rs`) against serde_json: it must never
//! panic, must read every JSON document exactly as serde_json does, must accept a document
//! written with trailing commas after the last element of its arrays and objects, and must accept
//! nothing else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let lenient = precache_api::fuzzing::lenient_json(data).ok();
    match serde_json::from_slice::<Value>(data) {
        Ok(strict) => {
            assert_eq!(
                lenient.as_ref(),
                Some(&strict),
                "valid JSON read differently"
            );
            // The same document with a comma after every last element must read as it does
            // without them (compared on the rewritten text: serde_json's float reading does not
            // always give back the float it wrote).
            let mut with_commas = Vec::new();
            write(&strict, true, &mut with_commas);
            let mut without = Vec::new();
            write(&strict, false, &mut without);
            let expected = serde_json::from_slice::<Value>(&without).ok();
            assert!(expected.is_some(), "rewritten JSON does not read");
            assert_eq!(
                precache_api::fuzzing::lenient_json(&with_commas).ok(),
                expected,
                "trailing commas refused in {:?}",
                String::from_utf8_lossy(&with_commas)
            );
        }
        Err(_) => {
            if let Some(value) = lenient {
                // Forgiven: then dropping the trailing commas must give strict JSON of that value.
                let stripped = strip_trailing_commas(data);
                assert_eq!(
                    serde_json::from_slice::<Value>(&stripped).ok().as_ref(),
                    Some(&value),
                    "accepted more than trailing commas: {:?}",
                    String::from_utf8_lossy(data)
                );
            }
        }
    }
});

/// Serialises `value`, with `trailing` a comma (and some whitespace) after the last element of
/// every non-empty array and object, as the seed's sample does.
fn write(value: &Value, trailing: bool, out: &mut Vec<u8>) {
    let (array_comma, object_comma): (&[u8], &[u8]) = if trailing {
        (b",\n ", b" ,")
    } else {
        (b",", b",")
    };
    match value {
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                write(item, trailing, out);
                if trailing || i + 1 < items.len() {
                    out.extend_from_slice(array_comma);
                }
            }
            out.push(b']');
        }
        Value::Object(fields) => {
            out.push(b'{');
            for (i, (name, item)) in fields.iter().enumerate() {
                out.extend_from_slice(Value::String(name.clone()).to_string().as_bytes());
                out.push(b':');
                write(item, trailing, out);
                if trailing || i + 1 < fields.len() {
                    out.extend_from_slice(object_comma);
                }
            }
            out.push(b'}');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

/// An independent statement of the rule: a comma is trailing when, outside strings, the next
/// significant byte closes an array or object and the previous one ends a value.
fn strip_trailing_commas(data: &[u8]) -> Vec<u8> {
    // Mark which bytes are inside strings first, then decide on each comma.
    let mut in_string = vec![false; data.len()];
    let mut inside = false;
    let mut i = 0;
    while i < data.len() {
        if inside {
            in_string[i] = true;
            match data[i] {
                b'\\' => {
                    if i + 1 < data.len() {
                        in_string[i + 1] = true;
                    }
                    i += 1;
                }
                b'"' => inside = false,
                _ => {}
            }
        } else if data[i] == b'"' {
            inside = true;
            in_string[i] = true;
        }
        i += 1;
    }
    let significant = |b: u8| !matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c');
    let mut out = Vec::with_capacity(data.len());
    for (at, &byte) in data.iter().enumerate() {
        if byte == b',' && !in_string[at] {
            let next = data[at + 1..].iter().copied().find(|b| significant(*b));
            let previous = out.iter().rev().copied().find(|b| significant(*b));
            let closes = matches!(next, Some(b']' | b'}'));
            let after_value = previous.is_some_and(|b| !matches!(b, b'[' | b'{' | b',' | b':'));
            if closes && after_value {
                continue;
            }
        }
        out.push(byte);
    }
    out
}
