//! Framing fields of answers that have no body: what an origin sends wrongly there is removed
//! before a player sees it, so no client reads a body that is not coming.

use pingora::http::ResponseHeader;

/// Removes `Content-Length` and `Transfer-Encoding` from a `204` (RFC 9110 §8.6 and §6.4.1: a
/// server must not send them there). Pingora sends no body after a `204` whatever they say,
/// but a client that trusts an origin's `Content-Length: 26` waits for 26 bytes and then takes
/// the start of the next answer on the connection for them.
///
/// A `304` keeps its `Content-Length`: there it is the stored body's length (RFC 9110 §8.6),
/// which clients know not to read.
pub(crate) fn strip_from_bodiless(response: &mut ResponseHeader) {
    if response.status == http::StatusCode::NO_CONTENT {
        response.remove_header(&http::header::CONTENT_LENGTH);
        response.remove_header(&http::header::TRANSFER_ENCODING);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_204_loses_its_length_and_a_304_keeps_it() -> pingora::Result<()> {
        let mut no_content = ResponseHeader::build(204, None)?;
        no_content.insert_header("content-length", "26")?;
        strip_from_bodiless(&mut no_content);
        assert!(no_content.headers.get("content-length").is_none());

        let mut not_modified = ResponseHeader::build(304, None)?;
        not_modified.insert_header("content-length", "26")?;
        strip_from_bodiless(&mut not_modified);
        assert_eq!(not_modified.headers["content-length"], "26");
        Ok(())
    }
}
