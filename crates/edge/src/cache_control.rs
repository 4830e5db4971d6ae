//! Strict reading of the freshness directives of `Cache-Control` and `CDN-Cache-Control`
//! (RFC 9111 §5.2, RFC 9213), where a malformed value must make a response stale rather than
//! be skipped.
//!
//! pingora's parser is kept for what it gets right (`no-store`, `private`, the serve-stale
//! windows); this one answers only what a lenient parser gets wrong: a `max-age` that is
//! negative, quoted or written with spaces around `=` is not absent, it is invalid, and an
//! invalid freshness lifetime means "stale" (RFC 9111 §4.2.1).

use http::header::HeaderValue;

/// A delta-seconds directive (`max-age`, `s-maxage`) as the origin wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeltaSeconds {
    /// Not present.
    Absent,
    /// Present with a valid value.
    Seconds(u64),
    /// Present more than once, or with a value that is not `1*DIGIT`.
    Invalid,
}

impl DeltaSeconds {
    fn add(self, value: Option<&str>) -> DeltaSeconds {
        match (self, value.and_then(parse_delta_seconds)) {
            (DeltaSeconds::Absent, Some(seconds)) => DeltaSeconds::Seconds(seconds),
            _ => DeltaSeconds::Invalid,
        }
    }
}

/// The freshness directives of one cache-control field (all its lines together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FreshnessDirectives {
    /// `s-maxage`.
    pub s_maxage: DeltaSeconds,
    /// `max-age`.
    pub max_age: DeltaSeconds,
    /// `no-cache`, with or without a field list: the edge does not keep partial responses, so
    /// a qualified `no-cache` is treated like the unqualified one.
    pub no_cache: bool,
}

impl FreshnessDirectives {
    /// Reads every line of a cache-control field.
    pub(crate) fn parse<'a>(lines: impl IntoIterator<Item = &'a HeaderValue>) -> Self {
        let mut directives = FreshnessDirectives {
            s_maxage: DeltaSeconds::Absent,
            max_age: DeltaSeconds::Absent,
            no_cache: false,
        };
        for line in lines {
            // A line that is not visible ASCII holds no directive this parser could trust.
            let Ok(text) = line.to_str() else {
                continue;
            };
            for item in split_list(text) {
                let item = item.trim();
                if item.is_empty() {
                    continue;
                }
                let (name, value) = match item.split_once('=') {
                    Some((name, value)) => (name, Some(value)),
                    None => (item, None),
                };
                if !is_token(name) || value.is_some_and(|value| !is_token_or_quoted(value)) {
                    // `max-age = 60` still says the origin meant a max-age: it is invalid, not
                    // absent, so the response is stale rather than fresh by a default.
                    let name = name.trim().to_ascii_lowercase();
                    match name.as_str() {
                        "max-age" => directives.max_age = DeltaSeconds::Invalid,
                        "s-maxage" => directives.s_maxage = DeltaSeconds::Invalid,
                        _ => {}
                    }
                    continue;
                }
                match name.to_ascii_lowercase().as_str() {
                    "max-age" => directives.max_age = directives.max_age.add(value),
                    "s-maxage" => directives.s_maxage = directives.s_maxage.add(value),
                    "no-cache" => directives.no_cache = true,
                    _ => {}
                }
            }
        }
        directives
    }

    /// The lifetime the field states for a shared cache: `s-maxage` first, else `max-age`.
    pub(crate) fn shared_max_age(&self) -> DeltaSeconds {
        match self.s_maxage {
            DeltaSeconds::Absent => self.max_age,
            stated => stated,
        }
    }
}

/// `1*DIGIT`, no sign, no quotes; values past `u64` saturate (RFC 9111 §1.2.2).
fn parse_delta_seconds(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse::<u64>().unwrap_or(u64::MAX))
}

/// Splits at commas outside quoted strings.
fn split_list(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    for (at, byte) in text.bytes().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match byte {
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => {
                items.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

/// RFC 9110 §5.6.2 `token`.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

fn is_token_or_quoted(text: &str) -> bool {
    is_token(text) || (text.len() >= 2 && text.starts_with('"') && text.ends_with('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> FreshnessDirectives {
        let values: Vec<HeaderValue> = lines
            .iter()
            .map(|line| HeaderValue::from_str(line).expect("header value"))
            .collect();
        FreshnessDirectives::parse(values.iter())
    }

    #[test]
    fn valid_directives_are_read_from_every_line() {
        let d = parse(&["public, max-age=60", "S-MaxAge=600"]);
        assert_eq!(d.max_age, DeltaSeconds::Seconds(60));
        assert_eq!(d.shared_max_age(), DeltaSeconds::Seconds(600));
        assert!(!d.no_cache);
        assert!(parse(&["no-cache=\"set-cookie, x-a\", max-age=5"]).no_cache);
        assert_eq!(
            parse(&["max-age=99999999999999999999999"]).max_age,
            DeltaSeconds::Seconds(u64::MAX)
        );
    }

    #[test]
    fn negative_quoted_spaced_and_repeated_max_age_are_invalid_not_absent() {
        for text in [
            "max-age=-1",
            "max-age='3600'",
            "max-age=\"3600\"",
            "max-age = 60",
            "max-age =60",
            "max-age= 60",
            "max-age=",
            "max-age",
            "max-age=60, max-age=60",
            "max-age=1.5",
        ] {
            assert_eq!(parse(&[text]).max_age, DeltaSeconds::Invalid, "{text}");
        }
        assert_eq!(
            parse(&["s-maxage=-5, max-age=60"]).shared_max_age(),
            DeltaSeconds::Invalid
        );
    }

    #[test]
    fn commas_inside_quotes_do_not_split() {
        let d = parse(&["private=\"a, max-age=5\", max-age=7"]);
        assert_eq!(d.max_age, DeltaSeconds::Seconds(7));
    }
}
