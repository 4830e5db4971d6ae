//! A stand-in of the Amazon CloudFront API (`2020-05-31`) on loopback, doing with a request what
//! CloudFront does: it recomputes the SigV4 signature with the secret (with precache's signer,
//! pinned to AWS's SigV4 test suite by its unit tests), keeps invalidations `InProgress` for a
//! number of polls, enforces the in-progress limits (3,000 paths, 15 wildcard paths) with
//! `TooManyInvalidationsInProgress`, answers a reused `CallerReference` with its invalidation,
//! and answers CloudFront's XML shapes and errors. It records what reached it. Error codes are
//! CloudFront's (API reference, CreateInvalidation "Errors"); the messages are the stand-in's.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use quick_xml::events::Event;

const XMLNS: &str = "http://cloudfront.amazonaws.com/doc/2020-05-31/";
/// Paths CloudFront allows in progress per distribution.
const PATHS_IN_PROGRESS: usize = 3000;
/// Wildcard paths CloudFront allows in progress per distribution.
const WILDCARDS_IN_PROGRESS: usize = 15;

/// One invalidation the stand-in made.
#[derive(Debug, Clone)]
pub struct Invalidation {
    /// Its id.
    pub id: String,
    /// The caller's reference it was made for.
    pub caller_reference: String,
    /// Its paths, as sent.
    pub paths: Vec<String>,
    polls: usize,
    completed: bool,
}

/// One `CreateInvalidation` that reached the stand-in with a good signature.
#[derive(Debug, Clone)]
pub struct Call {
    /// The status answered.
    pub status: u16,
    /// The error code answered, empty for a `201`.
    pub code: String,
    /// The caller's reference.
    pub caller_reference: String,
    /// The paths sent.
    pub paths: Vec<String>,
}

#[derive(Default)]
struct CloudFrontState {
    access_key_id: String,
    secret_access_key: String,
    distribution_id: String,
    /// Polls of an invalidation answered `InProgress` before it is `Completed`.
    polls_in_progress: usize,
    never_completes: bool,
    /// Calls still to be answered `Throttling` before any is served.
    throttled_calls: usize,
    /// Paths CloudFront refuses (a batch holding one is refused with `InvalidArgument`).
    refused: HashSet<String>,
    invalidations: Vec<Invalidation>,
    calls: Vec<Call>,
    /// Requests whose signature was recomputed and matched.
    n_signed: usize,
    /// The `SignedHeaders` of every request with a good signature.
    signed_headers: BTreeSet<String>,
    /// Requests refused for their signature or key.
    n_bad_signatures: usize,
    n_polls: usize,
    /// Someone else's invalidation in progress, and the refusals it lasts for.
    foreign: Option<(usize, usize)>,
}

/// A CloudFront API stand-in.
pub struct CloudFrontStandIn {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<CloudFrontState>>,
    _server: tokio::task::JoinHandle<()>,
}

type Shared = Arc<Mutex<CloudFrontState>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, CloudFrontState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

fn xml(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "text/xml")], body).into_response()
}

/// CloudFront's error answer.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let kind = if status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    xml(
        status,
        format!(
            "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"{XMLNS}\"><Error><Type>{kind}</Type>\
             <Code>{code}</Code><Message>{}</Message></Error>\
             <RequestId>b5c4a2e0-stand-in</RequestId></ErrorResponse>",
            escape(message)
        ),
    )
}

/// The leaf elements' texts, as (local name, text), in document order.
fn leaves(body: &str) -> Option<Vec<(String, String)>> {
    let mut reader = quick_xml::Reader::from_str(body);
    let mut found = Vec::new();
    let mut open: Option<(String, String)> = None;
    loop {
        match reader.read_event().ok()? {
            Event::Start(start) => {
                open = Some((start.local_name().as_ref().to_string(), String::new()));
            }
            Event::Text(text) => {
                if let Some((_, value)) = open.as_mut() {
                    value.push_str(&text.into_inner());
                }
            }
            Event::GeneralRef(reference) => {
                if let Some((_, value)) = open.as_mut() {
                    value.push_str(quick_xml::escape::resolve_predefined_entity(&reference)?);
                }
            }
            Event::End(_) => found.extend(open.take()),
            Event::Eof => return Some(found),
            _ => {}
        }
    }
}

/// Checks the request's SigV4 signature as CloudFront does: the key must be the stand-in's, and
/// the signature recomputed with its secret over the headers the request says it signed must
/// be the one sent.
fn verify(
    state: &mut CloudFrontState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Box<Response>> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    };
    let authorization = header("authorization").to_string();
    let missing = || {
        Box::new(error(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        ))
    };
    let fields = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(missing)?;
    let field = |name: &str| {
        fields
            .split(", ")
            .find_map(|part| part.strip_prefix(name))
            .unwrap_or("")
    };
    let credential = field("Credential=");
    let key = credential.split('/').next().unwrap_or("");
    if key != state.access_key_id {
        state.n_bad_signatures += 1;
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        )));
    }
    let time = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", header("x-amz-date"))
        .ok()
        .and_then(|time| time.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|time| SystemTime::from(time.timestamp()))
        .ok_or_else(missing)?;
    let mut request = axum::http::Request::builder()
        .method(method.clone())
        .uri(format!("http://{}{uri}", header("host")));
    for name in field("SignedHeaders=").split(';') {
        if name != "x-amz-date" {
            request = request.header(name, header(name));
        }
    }
    let mut request = request.body(body.to_vec()).map_err(|_| missing())?;
    let recomputed = precache_tasks::backends::cloudfront::sign(
        &mut request,
        &state.access_key_id,
        &state.secret_access_key,
        time,
    )
    .ok()
    .and_then(|()| request.headers().get("authorization").cloned());
    if recomputed.as_ref().and_then(|value| value.to_str().ok()) != Some(authorization.as_str()) {
        state.n_bad_signatures += 1;
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method.",
        )));
    }
    state.n_signed += 1;
    state
        .signed_headers
        .insert(field("SignedHeaders=").to_string());
    Ok(())
}

fn invalidation_xml(invalidation: &Invalidation) -> String {
    let status = if invalidation.completed {
        "Completed"
    } else {
        "InProgress"
    };
    let paths: String = invalidation
        .paths
        .iter()
        .map(|path| format!("<Path>{}</Path>", escape(path)))
        .collect();
    format!(
        "<?xml version=\"1.0\"?><Invalidation xmlns=\"{XMLNS}\"><Id>{}</Id><Status>{status}</Status>\
         <CreateTime>2026-12-04T12:00:00Z</CreateTime><InvalidationBatch><Paths>\
         <Quantity>{}</Quantity><Items>{paths}</Items></Paths>\
         <CallerReference>{}</CallerReference></InvalidationBatch></Invalidation>",
        invalidation.id,
        invalidation.paths.len(),
        escape(&invalidation.caller_reference)
    )
}

async fn create_invalidation(
    State(state): State<Shared>,
    Path(distribution): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = lock(&state);
    if let Err(refused) = verify(&mut state, &method, &uri, &headers, &body) {
        return *refused;
    }
    let text = String::from_utf8_lossy(&body);
    let leaves = leaves(&text).unwrap_or_default();
    let caller_reference = leaves
        .iter()
        .find(|(name, _)| name == "CallerReference")
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    let paths: Vec<String> = leaves
        .iter()
        .filter(|(name, _)| name == "Path")
        .map(|(_, value)| value.clone())
        .collect();
    let (status, code, response) =
        invalidation_answer(&mut state, &distribution, &headers, &leaves, &paths);
    state.calls.push(Call {
        status: status.as_u16(),
        code: code.to_string(),
        caller_reference,
        paths,
    });
    response
}

fn invalidation_answer(
    state: &mut CloudFrontState,
    distribution: &str,
    headers: &HeaderMap,
    leaves: &[(String, String)],
    paths: &[String],
) -> (StatusCode, &'static str, Response) {
    let refuse = |status: StatusCode, code: &'static str, message: &str| {
        (status, code, error(status, code, message))
    };
    if distribution != state.distribution_id {
        return refuse(
            StatusCode::NOT_FOUND,
            "NoSuchDistribution",
            "The specified distribution does not exist.",
        );
    }
    if state.throttled_calls > 0 {
        state.throttled_calls -= 1;
        return refuse(StatusCode::BAD_REQUEST, "Throttling", "Rate exceeded");
    }
    let field = |name: &str| {
        leaves
            .iter()
            .find(|(leaf, _)| leaf == name)
            .map(|(_, value)| value.as_str())
    };
    let Some(caller_reference) = field("CallerReference").filter(|r| !r.is_empty()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "MissingBody",
            "This operation requires a body. Ensure that the body is present and the \
             Content-Type header is set.",
        );
    };
    if field("Quantity").and_then(|q| q.parse::<usize>().ok()) != Some(paths.len()) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "InconsistentQuantities",
            "The value of Quantity and the size of Items don't match.",
        );
    }
    if paths.len() > PATHS_IN_PROGRESS {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BatchTooLarge",
            "Invalidation batch specified is too large.",
        );
    }
    if paths
        .iter()
        .any(|path| !path.starts_with('/') || state.refused.contains(path))
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Your request contains one or more invalid invalidation paths.",
        );
    }
    if let Some(existing) = state
        .invalidations
        .iter()
        .find(|invalidation| invalidation.caller_reference == caller_reference)
    {
        // A reused reference with the same batch is the same invalidation, not a new one.
        if existing.paths == paths {
            return (
                StatusCode::CREATED,
                "",
                xml(StatusCode::CREATED, invalidation_xml(existing)),
            );
        }
        return refuse(
            StatusCode::CONFLICT,
            "InvalidationBatchAlreadyExists",
            "The CallerReference you sent is already in use for another invalidation batch.",
        );
    }
    let in_progress = state
        .invalidations
        .iter()
        .filter(|invalidation| !invalidation.completed)
        .flat_map(|invalidation| invalidation.paths.iter());
    let (mut n_wildcards, mut n_paths) = (0, 0);
    for path in in_progress.chain(paths.iter()) {
        match path.contains('*') {
            true => n_wildcards += 1,
            false => n_paths += 1,
        }
    }
    if n_wildcards > WILDCARDS_IN_PROGRESS || n_paths > PATHS_IN_PROGRESS {
        // Someone else's invalidation progresses while precache waits.
        if let Some((index, refusals)) = state.foreign.take() {
            match refusals <= 1 {
                true => state.invalidations[index].completed = true,
                false => state.foreign = Some((index, refusals - 1)),
            }
        }
    }
    if n_wildcards > WILDCARDS_IN_PROGRESS {
        return refuse(
            StatusCode::BAD_REQUEST,
            "TooManyInvalidationsInProgress",
            "Processing your request will cause you to exceed the maximum number of in-progress \
             wildcard invalidations.",
        );
    }
    if n_paths > PATHS_IN_PROGRESS {
        return refuse(
            StatusCode::BAD_REQUEST,
            "TooManyInvalidationsInProgress",
            "Processing your request will cause you to exceed the maximum number of in-progress \
             invalidation paths.",
        );
    }
    let invalidation = Invalidation {
        id: format!("I{:013}", state.invalidations.len() + 1),
        caller_reference: caller_reference.to_string(),
        paths: paths.to_vec(),
        polls: 0,
        completed: false,
    };
    let location = format!(
        "http://{}/2020-05-31/distribution/{distribution}/invalidation/{}",
        headers
            .get("host")
            .and_then(|host| host.to_str().ok())
            .unwrap_or(""),
        invalidation.id
    );
    let mut response = xml(StatusCode::CREATED, invalidation_xml(&invalidation));
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert("location", location);
    }
    state.invalidations.push(invalidation);
    (StatusCode::CREATED, "", response)
}

async fn get_invalidation(
    State(state): State<Shared>,
    Path((distribution, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut state = lock(&state);
    if let Err(refused) = verify(&mut state, &method, &uri, &headers, b"") {
        return *refused;
    }
    if distribution != state.distribution_id {
        return error(
            StatusCode::NOT_FOUND,
            "NoSuchDistribution",
            "The specified distribution does not exist.",
        );
    }
    state.n_polls += 1;
    let (polls_in_progress, never_completes) = (state.polls_in_progress, state.never_completes);
    let Some(invalidation) = state
        .invalidations
        .iter_mut()
        .find(|invalidation| invalidation.id == id)
    else {
        return error(
            StatusCode::NOT_FOUND,
            "NoSuchInvalidation",
            "The specified invalidation does not exist.",
        );
    };
    invalidation.polls += 1;
    if !never_completes && invalidation.polls > polls_in_progress {
        invalidation.completed = true;
    }
    xml(StatusCode::OK, invalidation_xml(invalidation))
}

async fn list_invalidations(
    State(state): State<Shared>,
    Path(distribution): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut state = lock(&state);
    if let Err(refused) = verify(&mut state, &method, &uri, &headers, b"") {
        return *refused;
    }
    if distribution != state.distribution_id {
        return error(
            StatusCode::NOT_FOUND,
            "NoSuchDistribution",
            "The specified distribution does not exist.",
        );
    }
    let n = state.invalidations.len().min(1);
    xml(
        StatusCode::OK,
        format!(
            "<?xml version=\"1.0\"?><InvalidationList xmlns=\"{XMLNS}\"><Marker></Marker>\
             <MaxItems>1</MaxItems><IsTruncated>false</IsTruncated><Quantity>{n}</Quantity>\
             </InvalidationList>"
        ),
    )
}

impl CloudFrontStandIn {
    /// A distribution `distribution_id` that accepts the key `access_key_id` with its secret;
    /// each invalidation is `InProgress` for its first poll, then `Completed`.
    pub async fn start(
        access_key_id: &str,
        secret_access_key: &str,
        distribution_id: &str,
    ) -> std::io::Result<CloudFrontStandIn> {
        let state = Arc::new(Mutex::new(CloudFrontState {
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret_access_key.to_string(),
            distribution_id: distribution_id.to_string(),
            polls_in_progress: 1,
            ..CloudFrontState::default()
        }));
        let router = Router::new()
            .route(
                "/2020-05-31/distribution/{distribution}/invalidation",
                post(create_invalidation).get(list_invalidations),
            )
            .route(
                "/2020-05-31/distribution/{distribution}/invalidation/{id}",
                get(get_invalidation),
            )
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(CloudFrontStandIn {
            addr,
            state,
            _server: server,
        })
    }

    /// `settings.endpoint` for it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next `calls` invalidation calls are answered `Throttling`.
    pub fn throttle_next(&self, calls: usize) {
        lock(&self.state).throttled_calls = calls;
    }

    /// Batches holding `path` are refused with `InvalidArgument`.
    pub fn refuse(&self, path: &str) {
        lock(&self.state).refused.insert(path.to_string());
    }

    /// Someone else (the console, another tool) has an invalidation of `n_wildcards` wildcard
    /// paths in progress, which completes after `refusals` calls were refused for it.
    pub fn busy_elsewhere(&self, n_wildcards: usize, refusals: usize) {
        let mut state = lock(&self.state);
        let index = state.invalidations.len();
        let invalidation = Invalidation {
            id: format!("I{:013}", index + 1),
            caller_reference: "console".into(),
            paths: (0..n_wildcards).map(|n| format!("/other{n}/*")).collect(),
            polls: 0,
            completed: false,
        };
        state.invalidations.push(invalidation);
        state.foreign = Some((index, refusals));
    }

    /// Invalidations stay `InProgress` however often they are polled.
    pub fn never_complete(&self) {
        lock(&self.state).never_completes = true;
    }

    /// Every invalidation made, in order.
    pub fn invalidations(&self) -> Vec<Invalidation> {
        lock(&self.state).invalidations.clone()
    }

    /// Every `CreateInvalidation` with a good signature, answered or refused.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state).calls.clone()
    }

    /// Requests whose signature was recomputed and matched, and requests refused for theirs.
    pub fn signatures(&self) -> (usize, usize) {
        let state = lock(&self.state);
        (state.n_signed, state.n_bad_signatures)
    }

    /// The distinct `SignedHeaders` lists of the requests with a good signature.
    pub fn signed_headers(&self) -> BTreeSet<String> {
        lock(&self.state).signed_headers.clone()
    }

    /// `GetInvalidation` requests answered.
    pub fn polls(&self) -> usize {
        lock(&self.state).n_polls
    }
}
