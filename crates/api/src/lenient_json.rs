//! Request bodies: JSON, plus the one liberty the seed's own sample needs.
//!
//! The sample request printed in the seed ends its URL list with a comma (`"...news3.jpg",\n ]`).
//! A client pasting it must be accepted, so a comma directly before a closing `]` or `}` (after
//! a value, whitespace allowed) is dropped before parsing. Nothing else is relaxed: any other
//! malformed body is `2001`.

use serde_json::Value;

/// Parses a body, tolerating trailing commas after the last element of an array or object.
pub fn parse(body: &[u8]) -> Result<Value, serde_json::Error> {
    match serde_json::from_slice(body) {
        Ok(value) => Ok(value),
        Err(strict_error) => match without_trailing_commas(body) {
            Some(relaxed) => serde_json::from_slice(&relaxed).map_err(|_| strict_error),
            None => Err(strict_error),
        },
    }
}

/// The body with trailing commas removed, or `None` when it has none.
fn without_trailing_commas(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut removed = false;
    for (index, &byte) in body.iter().enumerate() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            out.push(byte);
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b',' => {
                let next = body[index + 1..].iter().find(|b| !b.is_ascii_whitespace());
                let previous = out.iter().rev().find(|b| !b.is_ascii_whitespace());
                let closes = matches!(next, Some(b']') | Some(b'}'));
                let follows_value =
                    !matches!(previous, None | Some(b'[') | Some(b'{') | Some(b','));
                if closes && follows_value {
                    removed = true;
                    continue;
                }
            }
            _ => {}
        }
        out.push(byte);
    }
    removed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_seed_sample_as_printed() {
        let sample = br#"{
                 "urls": [
                     "http://hewenchina.com/static/images/news1.jpg",
                     "http://hewenchina.com/static/images/news2.jpg",
                     "http://hewenchina.com/static/images/news3.jpg",
                 ]
             }"#;
        let value = parse(sample).expect("the seed sample parses");
        assert_eq!(value["urls"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn rejects_everything_else_malformed() {
        for bad in [
            &b"{\"urls\": [\"a\",,]}"[..],
            b"{\"urls\": [,]}",
            b"{urls: []}",
            b"{\"urls\": ['a']}",
            b"",
            b"{\"a\": 1,}x",
        ] {
            assert!(
                parse(bad).is_err(),
                "{:?} should be rejected",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn commas_inside_strings_are_left_alone() {
        let value = parse(br#"{"urls": ["http://a.com/x,]",]}"#).expect("parses");
        assert_eq!(value["urls"][0], "http://a.com/x,]");
    }
}
