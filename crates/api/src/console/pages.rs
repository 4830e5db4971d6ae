//! The console's pages and the forms they post.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use precache_model::time::{now_millis, rfc3339_millis};
use precache_model::{ObjectUrl, QuotaKind, TaskKind, TaskStatus};
use precache_store::TaskQuery;
use serde::Deserialize;
use serde_json::Value;

use super::session::{csrf_matches, same_origin, set_cookie, NoSession, Session};
use crate::audit::AuditActor;
use crate::client_address::ClientAddress;
use crate::envelope::{ApiError, RetCode};
use crate::routes::tasks::{accept, check_count_and_domain, parse_req_id, Submission};
use crate::routes::tokens::log_in;
use crate::state::AppState;
use crate::store_errors::from_store;
use crate::task_view::detail_json;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Tasks on the list page.
const LISTED: i64 = 100;

fn render(template: &impl Template, status: StatusCode) -> Response {
    match template.render() {
        Ok(page) => (status, Html(page)).into_response(),
        Err(error) => {
            tracing::error!(%error, "could not render a console page");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn to_login() -> Response {
    Redirect::to("/console/login").into_response()
}

/// A refused change: its status, and its `ret` for the audit log.
fn refused(status: StatusCode, ret: i64, text: &'static str) -> Response {
    let mut response = (status, text).into_response();
    response.extensions_mut().insert(RetCode(ret));
    response
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    version: &'static str,
    error: Option<String>,
}

pub(crate) async fn login_form(session: Result<Session, NoSession>) -> Response {
    if session.is_ok() {
        return Redirect::to("/console/").into_response();
    }
    render(
        &LoginPage {
            version: VERSION,
            error: None,
        },
        StatusCode::OK,
    )
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    username: String,
    password: String,
}

/// Logs in as the API does (same throttling, same audit entry), and keeps the token in the
/// session cookie for the token's lifetime.
pub(crate) async fn login(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    actor: AuditActor,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !same_origin(&headers) {
        return refused(StatusCode::FORBIDDEN, 1004, "cross-site log-in refused\n");
    }
    match log_in(&state, &form.username, &form.password, client, &actor).await {
        Ok(issued) => {
            let max_age = (issued.expires_at - now_millis()) / 1000;
            let mut response = Redirect::to("/console/").into_response();
            response.headers_mut().insert(
                header::SET_COOKIE,
                set_cookie(&issued.token, max_age, served_over_tls(&headers)),
            );
            response
        }
        Err(error) => login_refused(error),
    }
}

fn login_refused(error: ApiError) -> Response {
    let status = error.ret.http_status();
    let mut response = render(
        &LoginPage {
            version: VERSION,
            error: Some(error.msg),
        },
        status,
    );
    response.extensions_mut().insert(RetCode(error.ret as i64));
    response
}

/// Whether the browser reached the console over https (a TLS proxy in front of the API): its
/// `Origin` says so, and then the cookie is `Secure`.
fn served_over_tls(headers: &HeaderMap) -> bool {
    headers
        .get(header::ORIGIN)
        .and_then(|origin| origin.to_str().ok())
        .is_some_and(|origin| origin.starts_with("https://"))
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    csrf: String,
}

/// Ends the session: the token is revoked, the cookie dropped.
pub(crate) async fn logout(
    State(state): State<AppState>,
    session: Result<Session, NoSession>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let Ok(session) = session else {
        return to_login();
    };
    if !same_origin(&headers) || !csrf_matches(&session, &form.csrf) {
        return refused(StatusCode::FORBIDDEN, 1004, "form not from this session\n");
    }
    if let Err(error) = state
        .inner
        .store
        .revoke_token(&session.caller.token_hash, now_millis())
        .await
    {
        tracing::error!(%error, "could not revoke a console session's token");
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    state.inner.tokens.forget(&session.caller.token_hash);
    let mut response = to_login();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie("", 0, served_over_tls(&headers)),
    );
    response
}

/// What every signed-in page shows in its navigation: who is signed in, and the form proof of
/// the log-out button.
struct Frame {
    user: String,
    csrf: String,
    admin: bool,
}

impl Frame {
    fn of(session: &Session) -> Frame {
        Frame {
            user: session.caller.name.clone(),
            csrf: session.csrf.clone(),
            admin: session.caller.role == precache_model::Role::Admin,
        }
    }
}

/// An option of a filter's list, and whether the current filter chose it.
struct Choice {
    value: &'static str,
    selected: bool,
}

fn choices(values: &[&'static str], current: Option<&str>) -> Vec<Choice> {
    values
        .iter()
        .map(|value| Choice {
            value,
            selected: current == Some(*value),
        })
        .collect()
}

/// A row of today's quota.
struct QuotaRow {
    kind: &'static str,
    used: String,
    limit: String,
    remaining: String,
}

struct TaskRow {
    id: String,
    kind: &'static str,
    domain: String,
    created_at: String,
    status: &'static str,
    finished: i64,
    pairs: i64,
}

#[derive(Template)]
#[template(path = "console/tasks.html")]
struct TasksPage {
    version: &'static str,
    frame: Frame,
    quota_day: String,
    resets_at: String,
    quota: Vec<QuotaRow>,
    kinds: Vec<Choice>,
    statuses: Vec<Choice>,
    domain: String,
    tasks: Vec<TaskRow>,
}

/// The task list's filters (an empty or unknown value filters nothing).
#[derive(Deserialize, Default)]
pub(crate) struct Filters {
    kind: Option<String>,
    status: Option<String>,
    domain: Option<String>,
}

/// Today's quota of the signed-in account, as `GET /cdn_api/quota` answers it.
async fn quota_rows(
    state: &AppState,
    session: &Session,
) -> Result<(String, String, Vec<QuotaRow>), ApiError> {
    let fields =
        crate::routes::quota::quota_fields(state, session.caller.account_id, &session.caller.name)
            .await?;
    let rows = QuotaKind::ALL
        .into_iter()
        .map(|kind| {
            let numbers = &fields[kind.api_name()];
            QuotaRow {
                kind: kind.api_name(),
                used: text(&numbers["used"]),
                limit: text(&numbers["limit"]),
                remaining: text(&numbers["remaining"]),
            }
        })
        .collect();
    Ok((text(&fields["day"]), text(&fields["resets_at"]), rows))
}

/// Today's quota, and the task list, newest first, filtered by kind, status and domain.
pub(crate) async fn home(
    State(state): State<AppState>,
    session: Result<Session, NoSession>,
    Query(filters): Query<Filters>,
) -> Response {
    let Ok(session) = session else {
        return to_login();
    };
    let kind = filters
        .kind
        .as_deref()
        .and_then(|kind| kind.parse::<TaskKind>().ok());
    let status = filters
        .status
        .as_deref()
        .and_then(|status| status.parse::<TaskStatus>().ok());
    let domain = filters
        .domain
        .as_deref()
        .map(str::trim)
        .filter(|domain| !domain.is_empty())
        .map(str::to_ascii_lowercase);
    let query = TaskQuery {
        account_id: session.caller.account_id,
        kind,
        status,
        domain: domain.clone(),
        since: None,
        until: None,
        before: None,
        limit: LISTED,
    };
    let (quota_day, resets_at, quota) = match quota_rows(&state, &session).await {
        Ok(quota) => quota,
        Err(error) => return error.into_response(),
    };
    let tasks = match state.inner.store.list_tasks(&query).await {
        Ok(tasks) => tasks,
        Err(error) => {
            tracing::error!(%error, "could not list tasks for the console");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    let tasks = tasks
        .into_iter()
        .map(|task| TaskRow {
            id: task.id.to_string(),
            kind: task.kind.as_str(),
            domain: task.domain,
            created_at: rfc3339_millis(task.created_at),
            status: task.status.as_str(),
            finished: task.n_finished,
            pairs: task.n_pairs,
        })
        .collect();
    render(
        &TasksPage {
            version: VERSION,
            frame: Frame::of(&session),
            quota_day,
            resets_at,
            quota,
            kinds: choices(&["prefetch", "refresh"], kind.map(TaskKind::as_str)),
            statuses: choices(
                &["waiting", "running", "done", "failed", "cancelled"],
                status.map(TaskStatus::as_str),
            ),
            domain: domain.unwrap_or_default(),
            tasks,
        },
        StatusCode::OK,
    )
}

#[derive(Template)]
#[template(path = "console/submit.html")]
struct SubmitPage {
    version: &'static str,
    frame: Frame,
    max_urls: usize,
    urls: String,
    error: Option<String>,
}

pub(crate) async fn submit_form(
    State(state): State<AppState>,
    session: Result<Session, NoSession>,
) -> Response {
    let Ok(session) = session else {
        return to_login();
    };
    render(
        &SubmitPage {
            version: VERSION,
            frame: Frame::of(&session),
            max_urls: state.inner.config.max_urls_per_request,
            urls: String::new(),
            error: None,
        },
        StatusCode::OK,
    )
}

#[derive(Deserialize)]
pub(crate) struct SubmitForm {
    csrf: String,
    kind: String,
    urls: String,
}

/// Parses the text box: one URL per line, blank lines skipped, duplicates dropped; for a
/// refresh, a line ending in `/` is a directory.
fn targets(text: &str, kind: TaskKind) -> Result<(Vec<ObjectUrl>, Vec<ObjectUrl>), String> {
    let (mut urls, mut dirs) = (Vec::new(), Vec::new());
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let url = ObjectUrl::parse(line).map_err(|reason| format!("{line}: {reason}"))?;
        let list = if kind == TaskKind::Refresh && line.ends_with('/') {
            &mut dirs
        } else {
            &mut urls
        };
        if !list.contains(&url) {
            list.push(url);
        }
    }
    if urls.is_empty() && dirs.is_empty() {
        return Err("no URL given".into());
    }
    Ok((urls, dirs))
}

/// Submits the text box's URLs as tasks of at most `--max-urls-per-request` each, through the
/// same acceptance as the API (ownership, quotas, audit); then shows the task (or the list, for
/// several).
pub(crate) async fn submit(
    State(state): State<AppState>,
    session: Result<Session, NoSession>,
    audit: AuditActor,
    headers: HeaderMap,
    Form(form): Form<SubmitForm>,
) -> Response {
    let Ok(session) = session else {
        return to_login();
    };
    if !same_origin(&headers) || !csrf_matches(&session, &form.csrf) {
        return refused(StatusCode::FORBIDDEN, 1004, "form not from this session\n");
    }
    let again = |error: String, status: StatusCode| {
        render(
            &SubmitPage {
                version: VERSION,
                frame: Frame::of(&session),
                max_urls: state.inner.config.max_urls_per_request,
                urls: form.urls.clone(),
                error: Some(error),
            },
            status,
        )
    };
    let kind = match form.kind.as_str() {
        "prefetch" => TaskKind::Prefetch,
        "refresh" => TaskKind::Refresh,
        _ => return again("choose prefetch or refresh".into(), StatusCode::BAD_REQUEST),
    };
    let (urls, dirs) = match targets(&form.urls, kind) {
        Ok(targets) => targets,
        Err(error) => return again(error, StatusCode::BAD_REQUEST),
    };
    let max = state.inner.config.max_urls_per_request.max(1);
    let all: Vec<ObjectUrl> = urls.iter().chain(&dirs).cloned().collect();
    if let Err(error) = check_count_and_domain(&all, usize::MAX) {
        return again(error.msg, error.ret.http_status());
    }
    let mut accepted = Vec::new();
    let chunks = urls
        .chunks(max)
        .map(|chunk| (chunk.to_vec(), Vec::new()))
        .chain(dirs.chunks(max).map(|chunk| (Vec::new(), chunk.to_vec())));
    for (urls, dirs) in chunks {
        let (url_count, dir_count) = (urls.len() as i64, dirs.len() as i64);
        let charges = match kind {
            TaskKind::Prefetch => vec![(QuotaKind::PrefetchUrls, url_count)],
            TaskKind::Refresh => vec![
                (QuotaKind::RefreshUrls, url_count),
                (QuotaKind::RefreshDirs, dir_count),
            ],
        };
        let submission = Submission {
            kind,
            urls,
            dirs,
            mode: (kind == TaskKind::Refresh).then(Default::default),
            dry_run: false,
            warm: false,
            charges,
            idempotency: None,
            callback_url: None,
            audit: audit.clone(),
        };
        match accept(&state, &session.caller, submission).await {
            Ok(id) => accepted.push(id),
            Err(error) => {
                let done = if accepted.is_empty() {
                    String::new()
                } else {
                    format!(" ({} requests were accepted before it)", accepted.len())
                };
                return again(format!("{}{done}", error.msg), error.ret.http_status());
            }
        }
    }
    match accepted.as_slice() {
        [one] => Redirect::to(&format!("/console/tasks/{one}")).into_response(),
        _ => Redirect::to("/console/").into_response(),
    }
}

struct Column {
    target: String,
    label: String,
}

struct Cell {
    status: String,
    error: String,
}

struct Row {
    index: usize,
    url: String,
    cells: Vec<Cell>,
}

#[derive(Template)]
#[template(path = "console/task.html")]
struct TaskPage {
    version: &'static str,
    frame: Frame,
    id: String,
    kind: String,
    status: String,
    progress: String,
    columns: Vec<Column>,
    rows: Vec<Row>,
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The URL × edge matrix of the task's status answer, columns in the order of the first URL's
/// pairs (every URL has one pair per target).
fn matrix(view: &Value) -> (Vec<Column>, Vec<Row>) {
    let urls = view["urls"].as_array().cloned().unwrap_or_default();
    let columns: Vec<Column> = urls
        .first()
        .and_then(|url| url["edges"].as_array())
        .map(|pairs| {
            pairs
                .iter()
                .map(|pair| {
                    let (edge, target) = (text(&pair["edge"]), text(&pair["target"]));
                    Column {
                        label: if edge == target || target.is_empty() {
                            edge
                        } else {
                            format!("{edge} {target}")
                        },
                        target,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let rows = urls
        .iter()
        .enumerate()
        .map(|(index, url)| {
            let pairs = url["edges"].as_array().cloned().unwrap_or_default();
            let cells = columns
                .iter()
                .map(|column| {
                    let pair = pairs
                        .iter()
                        .find(|pair| text(&pair["target"]) == column.target);
                    Cell {
                        status: pair.map(|pair| text(&pair["status"])).unwrap_or_default(),
                        error: pair.map(|pair| text(&pair["error"])).unwrap_or_default(),
                    }
                })
                .collect();
            Row {
                index,
                url: text(&url["url"]),
                cells,
            }
        })
        .collect();
    (columns, rows)
}

/// One task: its state and the URL × edge matrix, followed live by the page's script.
pub(crate) async fn task(
    State(state): State<AppState>,
    session: Result<Session, NoSession>,
    Path(req_id): Path<String>,
) -> Response {
    let Ok(session) = session else {
        return to_login();
    };
    let Ok(id) = parse_req_id(&req_id) else {
        return (StatusCode::NOT_FOUND, "no such task\n").into_response();
    };
    let detail = match state
        .inner
        .store
        .task_detail(session.caller.account_id, id)
        .await
    {
        Ok(Some(detail)) => detail,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such task\n").into_response(),
        Err(error) => return from_store(error).into_response(),
    };
    let view = detail_json(&detail);
    let (columns, rows) = matrix(&view);
    render(
        &TaskPage {
            version: VERSION,
            frame: Frame::of(&session),
            id: id.to_string(),
            kind: detail.summary.kind.as_str().to_string(),
            status: detail.summary.status.as_str().to_string(),
            progress: text(&view["progress"]),
            columns,
            rows,
        },
        StatusCode::OK,
    )
}

/// The task's progress events, as the API streams them, authenticated by the session cookie
/// (a browser's `EventSource` cannot send a header).
pub(crate) async fn task_events(
    State(state): State<AppState>,
    session: Result<Session, NoSession>,
    Path(req_id): Path<String>,
) -> Response {
    let Ok(session) = session else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    match crate::routes::events::task_events(state, session.caller, &req_id, None).await {
        Ok(events) => {
            let mut response = events.into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(error) => error.into_response(),
    }
}

struct EdgeRow {
    name: String,
    parent: String,
    state: String,
    last_seen: String,
    owed: String,
    pairs: String,
    objects: String,
    bytes: String,
    error: String,
}

#[derive(Template)]
#[template(path = "console/edges.html")]
struct EdgesPage {
    version: &'static str,
    frame: Frame,
    edges: Vec<EdgeRow>,
}

/// The edges (admins): state, last word, purges owed, what they cache.
pub(crate) async fn edges(
    State(state): State<AppState>,
    session: Result<Session, NoSession>,
) -> Response {
    let Ok(session) = session else {
        return to_login();
    };
    if let Err(error) = session.caller.require_admin() {
        return refused(
            StatusCode::FORBIDDEN,
            error.ret as i64,
            "the edges page is for admins\n",
        );
    }
    let listed = match crate::routes::edges::edges_json(&state).await {
        Ok(listed) => listed,
        Err(error) => return error.into_response(),
    };
    let edges = listed
        .iter()
        .map(|edge| EdgeRow {
            name: text(&edge["name"]),
            parent: text(&edge["parent"]),
            state: text(&edge["state"]),
            last_seen: text(&edge["last_seen_at"]),
            owed: text(&edge["backlog"]["owed_purges"]),
            pairs: text(&edge["backlog"]["pairs"]),
            objects: text(&edge["cached_objects"]),
            bytes: text(&edge["cached_bytes"]),
            error: text(&edge["error"]),
        })
        .collect();
    render(
        &EdgesPage {
            version: VERSION,
            frame: Frame::of(&session),
            edges,
        },
        StatusCode::OK,
    )
}
