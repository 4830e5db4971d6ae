//! The data plane: Pingora's proxy and cache, routed by `Host` to registered domains only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::key::HashBinary;
use pingora::cache::lock::CacheKeyLockImpl;
use pingora::cache::{
    CacheKey, CacheMeta, CachePhase, ForcedFreshness, HitHandler, NoCacheReason, RespCacheable,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::access_log::{AccessLog, AccessRecord};
use crate::cache_key::{cache_key, keyed_path};
use crate::control_link::LinkState;
use crate::disk_cache::{self, DiskCache};
use crate::domain_routes::{DomainRoutes, Route};
use crate::edge_metrics::{EdgeMetrics, RequestIds};
use crate::freshness;
use crate::hop_by_hop;
use crate::message_framing;
use crate::origin_tls::OriginCa;
use crate::vary;
use crate::OriginTimeouts;

/// Header that marks a request as the edge's own prefetch. Its value is a secret only this
/// process knows, so clients cannot force origin fetches with it.
pub(crate) const PREFETCH_HEADER: &str = "x-precache-prefetch";
/// On prefetch answers: `hit` when a complete cached copy was served, `fill` otherwise.
pub(crate) const PREFETCH_SOURCE_HEADER: &str = "x-precache-source";
/// On prefetch answers: why the response is not being cached.
pub(crate) const NO_CACHE_HEADER: &str = "x-precache-no-cache";
/// On answers the proxy generated because the origin could not be used: what went wrong.
pub(crate) const UPSTREAM_ERROR_HEADER: &str = "x-precache-upstream-error";

/// On requests a child edge sends its parent: the parent then keeps `CDN-Cache-Control`, which
/// binds every CDN tier, where it removes it from answers to players.
const EDGE_TIER_HEADER: &str = "x-precache-tier";

/// Request fields that make common origin frameworks serve another host, URL or method than the
/// request line and `Host` name. None is part of the cache key, so on a cacheable request they
/// would let one player choose what every other player is served (cache poisoning): they are
/// not forwarded on `GET` and `HEAD`.
const KEY_OVERRIDING_FIELDS: [&str; 8] = [
    "x-forwarded-host",
    "x-host",
    "x-forwarded-server",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// A prefetch does not revalidate a cached copy fetched from the origin more recently than this.
const JUST_FETCHED: Duration = Duration::from_secs(5);

/// The proxy application.
pub struct EdgeProxy {
    pub(crate) routes: Arc<DomainRoutes>,
    pub(crate) cache: &'static DiskCache,
    pub(crate) cache_lock: &'static CacheKeyLockImpl,
    pub(crate) prefetch_secret: Arc<str>,
    pub(crate) timeouts: OriginTimeouts,
    pub(crate) link: Arc<LinkState>,
    pub(crate) metrics: Arc<EdgeMetrics>,
    pub(crate) access_log: Option<AccessLog>,
    pub(crate) request_ids: RequestIds,
    /// Roots for https origins beside the system's, from `--origin-ca-file`.
    pub(crate) origin_ca: Option<OriginCa>,
}

/// Per-request state.
pub struct RequestContext {
    /// When the request arrived.
    started: Instant,
    /// Sent back as `X-Request-Id` and written in the access log.
    request_id: String,
    /// When the request was sent to the origin (or parent), and what came back.
    upstream_started: Option<Instant>,
    upstream_status: Option<u16>,
    upstream_ms: Option<f64>,
    host: String,
    route: Option<Arc<Route>>,
    is_prefetch: bool,
    served_complete_hit: bool,
    no_cache_reason: Option<&'static str>,
    /// The miss goes to the parent edge (the origin shield) rather than the origin.
    via_parent: bool,
    /// The parent could not be reached for this request; the origin is used instead.
    parent_failed: bool,
    /// The method may change the resource (not GET, HEAD, OPTIONS, TRACE): a success
    /// invalidates what is stored for its URL (RFC 9111 §4.4).
    unsafe_method: bool,
    /// The request came from a child edge.
    from_child_edge: bool,
    /// A `304` the origin answered to a revalidation: its fields update the stored ones.
    not_modified: Option<ResponseHeader>,
}

/// The domain a request is for: the authority of an absolute-form target (or HTTP/2's
/// `:authority`) before `Host`, as RFC 9112 §3.2.2 has servers do, so that the domain the edge
/// routes and keys by is the one the request names.
fn request_host(request: &RequestHeader) -> String {
    let raw = request
        .uri
        .host()
        .or_else(|| {
            request
                .headers
                .get(http::header::HOST)
                .and_then(|value| value.to_str().ok())
        })
        .unwrap_or("");
    normalize_host(raw)
}

/// A `Host` value as the edge routes and keys by it: without a port (but not the inside of an
/// IPv6 literal), a trailing dot, or upper case.
pub(crate) fn normalize_host(raw: &str) -> String {
    let without_port = match raw.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => raw,
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

async fn respond_plain(
    session: &mut Session,
    request_id: &str,
    status: u16,
    body: &'static str,
) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header("x-request-id", request_id)?;
    header.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
        .await
}

/// Says what went wrong reaching the origin, in words an operator understands.
fn describe_upstream_error(error: &Error) -> String {
    let what = match error.etype() {
        ErrorType::ConnectTimedout => "connecting to the origin timed out",
        ErrorType::ConnectRefused => "the origin refused the connection",
        ErrorType::ConnectNoRoute => "no route to the origin",
        ErrorType::ReadTimedout => "the origin did not answer in time",
        ErrorType::WriteTimedout => "sending the request to the origin timed out",
        ErrorType::ConnectionClosed => "the origin closed the connection",
        ErrorType::ReadError => "reading from the origin failed",
        ErrorType::WriteError => "writing to the origin failed",
        ErrorType::InvalidHTTPHeader => "the origin sent an invalid HTTP response",
        ErrorType::TLSHandshakeFailure => "the TLS handshake with the origin failed",
        ErrorType::InvalidCert => "the origin's certificate could not be checked",
        _ => "the origin could not be used",
    };
    // Pingora keeps rustls's verdict only in the handshake error's context, not as its cause.
    let whole = error.to_string();
    let text = match whole.split_once("invalid peer certificate: ") {
        Some((_, verdict)) if error.etype() == &ErrorType::TLSHandshakeFailure => {
            let verdict = verdict.split(", SNI:").next().unwrap_or(verdict).trim();
            format!("origin certificate not trusted: {verdict}")
        }
        _ => match error.root_cause().to_string() {
            cause if cause.is_empty() => what.to_string(),
            cause => format!("{what} ({cause})"),
        },
    };
    // It travels in a header: keep it to visible ASCII.
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = RequestContext;

    fn new_ctx(&self) -> RequestContext {
        RequestContext {
            started: Instant::now(),
            request_id: self.request_ids.next(),
            upstream_started: None,
            upstream_status: None,
            upstream_ms: None,
            host: String::new(),
            route: None,
            is_prefetch: false,
            served_complete_hit: false,
            no_cache_reason: None,
            via_parent: false,
            parent_failed: false,
            unsafe_method: false,
            from_child_edge: false,
            not_modified: None,
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestContext,
    ) -> Result<()> {
        // Interim answers from the origin (102, 103) are dropped, as most caches do: a hit
        // cannot replay them, so forwarding them on misses only would make the same request
        // look different by cache state. A 100 the client asked for with `Expect` and a 101
        // still pass (pingora keeps those).
        session.as_mut().set_ignore_info_resp(true);
        Ok(())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
    ) -> Result<bool> {
        // Other methods than GET and HEAD pass to the origin uncached, as nginx and Varnish
        // pass them: a studio's web site or API may sit behind the same edge.
        ctx.unsafe_method = !session.req_header().method.is_safe();
        ctx.host = request_host(session.req_header());
        ctx.route = self.routes.route(&ctx.host);
        if ctx.route.is_none() {
            // Unknown hosts end here: no cache lookup, no origin connection.
            respond_plain(session, &ctx.request_id, 404, "unknown host\n").await?;
            return Ok(true);
        }
        let presented = session.get_header_bytes(PREFETCH_HEADER);
        ctx.is_prefetch = !presented.is_empty()
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                presented,
                self.prefetch_secret.as_bytes(),
            ));
        session.req_header_mut().remove_header(PREFETCH_HEADER);
        ctx.from_child_edge = session
            .req_header_mut()
            .remove_header(EDGE_TIER_HEADER)
            .is_some();
        Ok(false)
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestContext) -> Result<()> {
        // Until the edge has applied every purge it may have missed, players are proxied past
        // the cache. A prefetch still fills it: it revalidates what it finds, so it is current.
        if !self.link.cache_open() && !ctx.is_prefetch {
            return Ok(());
        }
        let method = &session.req_header().method;
        if method != http::Method::GET && method != http::Method::HEAD {
            return Ok(());
        }
        session
            .cache
            .enable(self.cache, None, None, Some(self.cache_lock), None);
        let max_object = self.cache.limits().max_object;
        session
            .cache
            .set_max_file_size_bytes(usize::try_from(max_object).unwrap_or(usize::MAX));
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestContext) -> Result<CacheKey> {
        let path_and_query = session
            .req_header()
            .uri
            .path_and_query()
            .map_or("/", |path_and_query| path_and_query.as_str());
        let with_query = ctx
            .route
            .as_ref()
            .is_none_or(|route| route.cache.cache_query_string);
        Ok(cache_key(&ctx.host, keyed_path(path_and_query, with_query)))
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        meta: &CacheMeta,
        hit_handler: &mut HitHandler,
        is_fresh: bool,
        ctx: &mut RequestContext,
    ) -> Result<Option<ForcedFreshness>> {
        if !ctx.is_prefetch || disk_cache::is_partial_hit(hit_handler) {
            // A fill in progress is simply followed, prefetch or not: one origin fetch per object.
            return Ok(None);
        }
        ctx.served_complete_hit = true;
        // A copy the origin sent moments ago is as current as a revalidation would make it:
        // when a shield's children fetched it first, its own prefetch costs the origin nothing.
        let age = meta.updated().elapsed().unwrap_or(Duration::MAX);
        if is_fresh && age < JUST_FETCHED {
            return Ok(None);
        }
        // Otherwise a prefetch of a cached object makes sure it is the origin's current
        // version: a conditional request, answered by a bodiless 304 when nothing changed.
        Ok(Some(ForcedFreshness::ForceExpired))
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestContext,
    ) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no route for the request");
        };
        let parent = if ctx.parent_failed {
            None
        } else {
            self.link.parent()
        };
        ctx.via_parent = parent.is_some();
        if ctx.via_parent {
            self.metrics.parent_fetches.increment(1);
        } else {
            self.metrics.origin_fetches.increment(1);
        }
        let mut peer = match (parent, route.origin_addr) {
            // Edges talk plain HTTP to each other, whatever the origin's scheme.
            (Some(parent), _) => HttpPeer::new(parent, false, String::new()),
            (None, None) => {
                return Error::e_explain(
                    ErrorType::ConnectNoRoute,
                    format!("origin {} does not resolve", route.origin),
                )
            }
            (None, Some(origin_addr)) => self.origin_peer(route, origin_addr)?,
        };
        peer.options.connection_timeout = Some(self.timeouts.connect);
        // One read timeout covers waiting for the first byte and for every later chunk; the
        // prefetch client enforces each of the two separately.
        peer.options.read_timeout = Some(self.timeouts.first_byte.max(self.timeouts.idle));
        peer.options.write_timeout = Some(self.timeouts.idle);
        Ok(Box::new(peer))
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestContext,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(body) = body {
            self.metrics.upstream_bytes.increment(body.len() as u64);
            if let Some(route) = ctx.route.as_ref() {
                route.traffic.upstream_bytes.increment(body.len() as u64);
            }
        }
        // An origin that trickles never trips the read timeout; past the deadline the response
        // is cut (the player sees fewer bytes than announced) and the fill is dropped unpublished.
        let deadline = self.timeouts.fetch_deadline;
        if !end_of_stream
            && ctx
                .upstream_started
                .is_some_and(|at| at.elapsed() > deadline)
        {
            return Error::e_explain(
                ErrorType::ReadTimedout,
                format!(
                    "the origin did not send the whole response within the fetch deadline of {}s",
                    deadline.as_secs()
                ),
            );
        }
        Ok(None)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        ctx.upstream_status = Some(upstream_response.status.as_u16());
        ctx.upstream_ms = ctx
            .upstream_started
            .map(|started| started.elapsed().as_secs_f64() * 1000.0);
        hop_by_hop::strip_for_forwarding(upstream_response);
        if upstream_response.status == http::StatusCode::NOT_MODIFIED {
            ctx.not_modified = Some(upstream_response.clone());
        }
        let status = upstream_response.status;
        if ctx.unsafe_method && (status.is_success() || status.is_redirection()) {
            // Before the player hears of the change, so its next GET cannot get the old copy.
            self.invalidate_after_unsafe_request(session, upstream_response, ctx)
                .await;
        }
        Ok(())
    }

    async fn logging(
        &self,
        session: &mut Session,
        _error: Option<&Error>,
        ctx: &mut RequestContext,
    ) {
        if ctx.is_prefetch {
            // Prefetches are the control plane's (their outcome is in the task), not players'.
            return;
        }
        let phase = session.cache.phase();
        let bytes = session.body_bytes_sent();
        if let Some(route) = ctx.route.as_ref() {
            let (counter, domain_counter) = match phase {
                CachePhase::Hit
                | CachePhase::Revalidated
                | CachePhase::Stale
                | CachePhase::StaleUpdating => {
                    self.metrics.hit();
                    (None, &route.traffic.hits)
                }
                CachePhase::Miss | CachePhase::Expired => {
                    self.metrics.miss();
                    (None, &route.traffic.misses)
                }
                _ => (Some(&self.metrics.passes), &route.traffic.passes),
            };
            if let Some(counter) = counter {
                counter.increment(1);
            }
            domain_counter.increment(1);
            self.metrics.bytes_served.increment(bytes as u64);
            route.traffic.bytes_sent.increment(bytes as u64);
        }
        if let Some(log) = self.access_log.as_ref() {
            log_request(log, session, ctx, phase, bytes);
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestContext,
        mut error: Box<Error>,
    ) -> Box<Error> {
        if ctx.via_parent {
            // A parent that is down must not take its children's domains down with it.
            tracing::warn!(host = %ctx.host, %error, "parent edge unreachable; fetching from the origin");
            ctx.parent_failed = true;
            error.set_retry(true);
        }
        error
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        if ctx.via_parent {
            // The parent routes by the domain, like any edge.
            upstream_request.insert_header(http::header::HOST, ctx.host.as_str())?;
            upstream_request.insert_header(EDGE_TIER_HEADER, "child")?;
        } else if let Some(route) = ctx.route.as_ref() {
            upstream_request.insert_header(http::header::HOST, route.origin_host.as_str())?;
        }
        upstream_request.remove_header(PREFETCH_HEADER);
        if matches!(
            upstream_request.method,
            http::Method::GET | http::Method::HEAD
        ) {
            for field in KEY_OVERRIDING_FIELDS {
                upstream_request.remove_header(field);
            }
        }
        // The origin gets the origin form (path and query) only: an absolute-form target would
        // let a player name another of the origin server's hosts (which must then ignore
        // `Host`, RFC 9112 §3.2.2) and have its answer cached under this domain's key.
        // (pingora keeps a target's bytes for the wire: an absolute one is still written out.)
        if !upstream_request.raw_path().starts_with(b"/") {
            let origin_form = upstream_request
                .uri
                .path_and_query()
                .map_or("/", |path| path.as_str());
            let origin_form = http::Uri::try_from(origin_form).map_err(|error| {
                pingora::Error::because(
                    pingora::ErrorType::InvalidHTTPHeader,
                    "request target",
                    error,
                )
            })?;
            upstream_request.set_uri(origin_form);
        }
        ctx.upstream_started = Some(Instant::now());
        Ok(())
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        response: &ResponseHeader,
        ctx: &mut RequestContext,
    ) -> Result<RespCacheable> {
        let authorization_present = session
            .req_header()
            .headers
            .contains_key(http::header::AUTHORIZATION);
        let policy = ctx
            .route
            .as_ref()
            .map(|route| route.cache)
            .unwrap_or_default();
        // pingora merges only a few of a 304's fields into the stored response; RFC 9111 §4.3.4
        // wants them all (but the hop-by-hop ones and Content-Length), and `Vary` stays as
        // stored because pingora keeps the stored variance.
        let updated = ctx
            .not_modified
            .take()
            .map(|not_modified| with_fields_of_304(response, &not_modified));
        let response = updated.as_ref().unwrap_or(response);
        let mut cacheable = freshness::decide(response, authorization_present, &policy);
        if matches!(cacheable, RespCacheable::Cacheable(_)) && !self.cache.has_room() {
            // A full disk: serve the response, keep nothing (the cache logged why).
            cacheable = RespCacheable::Uncacheable(NoCacheReason::StorageError);
        }
        if let RespCacheable::Uncacheable(reason) = &cacheable {
            ctx.no_cache_reason = Some(reason.as_str());
        }
        Ok(cacheable)
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut RequestContext,
        request: &RequestHeader,
    ) -> Option<HashBinary> {
        vary::variance(meta.headers(), request)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        let from_cache = matches!(
            session.cache.phase(),
            CachePhase::Hit
                | CachePhase::Revalidated
                | CachePhase::Stale
                | CachePhase::StaleUpdating
        );
        message_framing::strip_from_bodiless(response);
        response.insert_header("x-cache", if from_cache { "HIT" } else { "MISS" })?;
        if !ctx.from_child_edge {
            response.remove_header(freshness::CDN_CACHE_CONTROL);
        }
        response.insert_header("x-request-id", ctx.request_id.as_str())?;
        if ctx.is_prefetch {
            let complete_hit = ctx.served_complete_hit
                && matches!(
                    session.cache.phase(),
                    CachePhase::Revalidated | CachePhase::Hit
                );
            response.insert_header(
                PREFETCH_SOURCE_HEADER,
                if complete_hit { "hit" } else { "fill" },
            )?;
            // Pingora itself disables caching for responses over the max object size.
            let reason = ctx.no_cache_reason.or(match session.cache.phase() {
                CachePhase::Disabled(reason) => Some(reason.as_str()),
                _ => None,
            });
            if let Some(reason) = reason {
                response.insert_header(NO_CACHE_HEADER, reason)?;
            }
        }
        Ok(())
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        ctx: &mut RequestContext,
        error: Option<&Error>,
    ) -> bool {
        // A prefetch must see the origin's answer, never a stale copy standing in for it.
        // Otherwise: while revalidating (`None`: within the object's stale-while-revalidate)
        // and when the origin fails (within its stale-if-error); pingora checks the windows.
        !ctx.is_prefetch && error.is_none_or(|e| e.esource() == &ErrorSource::Upstream)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        error: &Error,
        ctx: &mut RequestContext,
    ) -> FailToProxy {
        let code = match error.etype() {
            ErrorType::HTTPStatus(code) => *code,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => 504,
            _ => match error.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => 0,
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 {
            // Pingora closes the connection after this answer (`can_reuse_downstream` below), so
            // the answer must say so: with `Connection: keep-alive` a client sends its next
            // request on a connection that is going away and loses it unanswered (issue 16).
            session.set_keepalive(None);
            let written = async {
                let mut header = ResponseHeader::build(code, Some(3))?;
                header.insert_header(http::header::CONTENT_LENGTH, "0")?;
                header.insert_header("x-request-id", ctx.request_id.as_str())?;
                if error.esource() == &ErrorSource::Upstream {
                    header.insert_header(UPSTREAM_ERROR_HEADER, describe_upstream_error(error))?;
                }
                session.write_response_header(Box::new(header), true).await
            }
            .await;
            if let Err(write_error) = written {
                tracing::debug!(%write_error, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

impl EdgeProxy {
    /// The peer for a domain's own origin: over TLS for an https origin, its certificate checked
    /// against the name `origin_tls_name` and the trusted roots. Pingora's connection pool keys
    /// on the address, scheme and SNI, so two domains with the same origin address but other
    /// names never share a connection verified for the other's name.
    fn origin_peer(&self, route: &Route, origin_addr: std::net::SocketAddr) -> Result<HttpPeer> {
        let Some(server_name) = route.origin_tls_name.as_ref() else {
            return Ok(HttpPeer::new(origin_addr, false, String::new()));
        };
        if server_name.is_empty() {
            // Pingora skips verification altogether for a TLS peer without SNI.
            return Error::e_explain(
                ErrorType::InvalidCert,
                format!("origin {} has no name to verify", route.origin),
            );
        }
        let mut peer = HttpPeer::new(origin_addr, true, server_name.clone());
        if let Some(origin_ca) = self.origin_ca.as_ref() {
            peer.options.ca = Some(origin_ca.roots());
        }
        Ok(peer)
    }

    /// Removes what is stored for the request's URL and for the `Location` and
    /// `Content-Location` of the answer when they are on the same host (RFC 9111 §4.4).
    /// Removed rather than marked stale: a stale copy may still be served within its
    /// `stale-while-revalidate` window, and after a change it must not be served at all.
    async fn invalidate_after_unsafe_request(
        &self,
        session: &Session,
        response: &ResponseHeader,
        ctx: &RequestContext,
    ) {
        let request_path = session
            .req_header()
            .uri
            .path_and_query()
            .map_or("/", |path_and_query| path_and_query.as_str());
        let mut paths = vec![request_path.to_string()];
        for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
            let target = response
                .headers
                .get(&name)
                .and_then(|value| value.to_str().ok())
                .and_then(|text| same_host_path(&ctx.host, request_path, text));
            if let Some(path) = target {
                paths.push(path);
            }
        }
        paths.sort();
        paths.dedup();
        let primaries: Vec<String> = paths
            .iter()
            .map(|path| self.routes.primary_key(&ctx.host, path))
            .collect();
        let cache = self.cache;
        let invalidated = tokio::task::spawn_blocking(move || {
            primaries.iter().try_fold(0u64, |objects, primary| {
                cache
                    .purge_objects(primary, false, disk_cache::PurgeAction::Delete)
                    .map(|done| objects + done.objects)
            })
        })
        .await;
        match invalidated {
            Ok(Ok(objects)) => {
                tracing::debug!(host = %ctx.host, ?paths, objects, "invalidated after an unsafe request");
            }
            Ok(Err(error)) => {
                tracing::warn!(host = %ctx.host, ?paths, %error, "could not invalidate after an unsafe request");
            }
            Err(error) => {
                tracing::warn!(host = %ctx.host, %error, "invalidation after an unsafe request stopped");
            }
        }
    }
}

/// The path and query `reference` (a `Location` or `Content-Location`) names on `host`,
/// resolved against the request's path; `None` for another host or an unreadable reference.
fn same_host_path(host: &str, request_path: &str, reference: &str) -> Option<String> {
    let base = reqwest::Url::parse(&format!("http://{host}{request_path}")).ok()?;
    let target = base.join(reference.trim()).ok()?;
    let same_host = target
        .host_str()
        .is_some_and(|target_host| target_host.eq_ignore_ascii_case(host));
    if !same_host || !matches!(target.scheme(), "http" | "https") {
        return None;
    }
    Some(match target.query() {
        Some(query) => format!("{}?{query}", target.path()),
        None => target.path().to_string(),
    })
}

/// The stored response `stored` (as pingora merged it) with every field of the origin's `304`
/// in place of its own, but hop-by-hop fields, `Content-Length` and `Vary`.
fn with_fields_of_304(stored: &ResponseHeader, not_modified: &ResponseHeader) -> ResponseHeader {
    let mut updated = stored.clone();
    let names: Vec<&http::header::HeaderName> = not_modified.headers.keys().collect();
    for name in names {
        if *name == http::header::CONTENT_LENGTH
            || *name == http::header::VARY
            || hop_by_hop::is_hop_by_hop(name, &not_modified.headers)
        {
            continue;
        }
        updated.remove_header(name);
        for value in not_modified.headers.get_all(name) {
            if let Err(error) = updated.append_header(name.clone(), value.clone()) {
                tracing::debug!(%error, %name, "304 field not merged");
            }
        }
    }
    updated
}

/// The access log's name for how the cache answered.
fn cache_label(phase: CachePhase, reached_cache: bool) -> &'static str {
    if !reached_cache {
        return "NONE";
    }
    match phase {
        CachePhase::Hit => "HIT",
        CachePhase::Revalidated => "REVALIDATED",
        CachePhase::Stale | CachePhase::StaleUpdating => "STALE",
        CachePhase::Miss => "MISS",
        CachePhase::Expired => "EXPIRED",
        _ => "PASS",
    }
}

fn log_request(
    log: &AccessLog,
    session: &Session,
    ctx: &RequestContext,
    phase: CachePhase,
    bytes: usize,
) {
    let request = session.req_header();
    let header = |name: http::header::HeaderName| {
        request
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    let (time, ms) = crate::access_log::arrival(ctx.started.elapsed());
    log.record(&AccessRecord {
        time,
        client: session
            .client_addr()
            .and_then(|addr| addr.as_inet())
            .map(|addr| addr.ip().to_string())
            .unwrap_or_default(),
        scheme: if session
            .digest()
            .is_some_and(|digest| digest.ssl_digest.is_some())
        {
            "https"
        } else {
            "http"
        },
        protocol: match request.version {
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        },
        host: &ctx.host,
        method: request.method.as_str(),
        path: request
            .uri
            .path_and_query()
            .map_or("/", |path_and_query| path_and_query.as_str()),
        status: session
            .response_written()
            .map_or(0, |response| response.status.as_u16()),
        bytes,
        cache: cache_label(phase, ctx.route.is_some()),
        ms,
        request_id: &ctx.request_id,
        upstream_status: ctx.upstream_status,
        upstream_ms: ctx.upstream_ms.map(|ms| (ms * 1000.0).round() / 1000.0),
        range: header(http::header::RANGE),
        user_agent: header(http::header::USER_AGENT),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_host_locations_are_invalidated() {
        let host = "web.example.com";
        assert_eq!(
            same_host_path(host, "/form", "/items/7?x=1").as_deref(),
            Some("/items/7?x=1")
        );
        assert_eq!(
            same_host_path(host, "/a/form", "done").as_deref(),
            Some("/a/done")
        );
        assert_eq!(
            same_host_path(host, "/form", "https://WEB.example.com/x").as_deref(),
            Some("/x")
        );
        assert_eq!(
            same_host_path(host, "/form", "http://other.example/x"),
            None
        );
        assert_eq!(
            same_host_path(host, "/form", "mailto:a@web.example.com"),
            None
        );
    }

    #[test]
    fn a_304_replaces_stored_fields_but_hop_by_hop_length_and_vary() {
        let mut stored = ResponseHeader::build(200, None).expect("response");
        for (name, value) in [
            ("etag", "\"v1\""),
            ("x-version", "1"),
            ("content-length", "11"),
            ("vary", "accept-encoding"),
            ("content-type", "text/plain"),
        ] {
            stored.append_header(name, value).expect("header");
        }
        let mut not_modified = ResponseHeader::build(304, None).expect("response");
        for (name, value) in [
            ("etag", "\"v1\""),
            ("x-version", "2"),
            ("x-version", "2b"),
            ("content-length", "0"),
            ("vary", "*"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
        ] {
            not_modified.append_header(name, value).expect("header");
        }
        let updated = with_fields_of_304(&stored, &not_modified);
        let values = |name: &str| -> Vec<&str> {
            updated
                .headers
                .get_all(name)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .collect()
        };
        assert_eq!(values("x-version"), ["2", "2b"]);
        assert_eq!(values("content-length"), ["11"]);
        assert_eq!(values("vary"), ["accept-encoding"]);
        assert_eq!(values("content-type"), ["text/plain"]);
        assert!(values("x-secret").is_empty() && values("connection").is_empty());
    }

    #[test]
    fn host_header_loses_port_dot_and_case() {
        let mut request = RequestHeader::build("GET", b"/x", None).expect("request");
        request
            .insert_header("host", "Game.Example.com.:8081")
            .expect("header");
        assert_eq!(request_host(&request), "game.example.com");
    }
}
