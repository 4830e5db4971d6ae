//! `GET /cdn_api/{prefetch,refresh}/{reqId}/events`: a task's progress as Server-Sent Events.
//!
//! Each event's data is the task's status answer (the `zt_api` object of the status query),
//! sent when it changes: `progress` events while the task runs, then one `end` event with the
//! final state, and the stream closes. The stream reads the database, so it follows a task
//! whichever control-plane process runs its pairs.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use precache_model::{TaskId, TaskKind};

use crate::envelope::{ApiError, Ret};
use crate::openapi::{ret_codes, TOKEN};
use crate::routes::tasks::parse_req_id;
use crate::state::AppState;
use crate::store_errors::from_store;
use crate::task_view::detail_json;
use crate::token_auth::Caller;

/// How often the stream looks at the task.
const POLL_EVERY: Duration = Duration::from_millis(250);

struct Follow {
    state: AppState,
    caller: Caller,
    id: TaskId,
    last: Option<String>,
    ended: bool,
}

impl Follow {
    /// The next event: the task's view when it changed, `None` once the end was sent.
    async fn next(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        loop {
            let detail = match self
                .state
                .inner
                .store
                .task_detail(self.caller.account_id, self.id)
                .await
            {
                Ok(Some(detail)) => detail,
                // Gone (it cannot be) or the store is failing: say so and end.
                Ok(None) | Err(_) => {
                    self.ended = true;
                    return Some(Event::default().event("error").data("task unavailable"));
                }
            };
            let mut view = detail_json(&detail);
            view["ret"] = 0.into();
            view["msg"] = "OK".into();
            let text = view.to_string();
            let last = detail.summary.status.is_final();
            if self.last.as_deref() != Some(text.as_str()) || last {
                self.last = Some(text.clone());
                self.ended = last;
                let name = if last { "end" } else { "progress" };
                return Some(Event::default().event(name).data(text));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

/// The event stream of the caller's task `req_id`, of this kind when one is given (`3001` when
/// there is none).
pub(crate) async fn task_events(
    state: AppState,
    caller: Caller,
    req_id: &str,
    kind: Option<TaskKind>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = parse_req_id(req_id)?;
    let detail = state
        .inner
        .store
        .task_detail(caller.account_id, id)
        .await
        .map_err(from_store)?;
    if !detail.is_some_and(|detail| kind.is_none_or(|kind| detail.summary.kind == kind)) {
        let what = kind.map_or_else(
            || "task".to_string(),
            |kind| format!("{} task", kind.as_str()),
        );
        return Err(ApiError::new(
            Ret::NoSuchTask,
            format!("no {what} {req_id} for your account"),
        ));
    }
    let follow = Follow {
        state,
        caller,
        id,
        last: None,
        ended: false,
    };
    let stream = futures_util::stream::unfold(follow, |mut follow| async move {
        let event = follow.next().await?;
        Some((Ok(event), follow))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// `GET /cdn_api/prefetch/{reqId}/events`.
#[utoipa::path(
    get,
    path = "/cdn_api/prefetch/{reqId}/events",
    tag = "prefetch",
    operation_id = "prefetch_events",
    summary = "Follow a prefetch task: Server-Sent Events until it ends",
    description = "A `text/event-stream`. Each `progress` event's data is the task's status \
                   (the `zt_api` object of `GET` on the task, with `ret` and `msg`, on one line), \
                   sent when it changes (looked at every 250 ms); then one `end` event with the \
                   final state, and the stream closes. An `error` event (data `task \
                   unavailable`) ends it when the store fails. Keep-alive comments keep proxies \
                   from timing it out. Before the stream starts, failures are JSON envelopes.",
    params((
        "reqId" = String,
        Path,
        format = "uuid",
        description = "The task's id; a task that is not the caller's (or not a prefetch) is \
                       `3001`."
    )),
    responses((
        status = 200,
        description = "Events `progress` and `end` whose data is a `PrefetchTask` (with `ret` and `msg`).",
        content_type = "text/event-stream",
        body = String
    )),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, &[Ret::NoSuchTask]])))),
)]
pub(crate) async fn prefetch(
    State(state): State<AppState>,
    caller: Caller,
    Path(req_id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    task_events(state, caller, &req_id, Some(TaskKind::Prefetch)).await
}

/// `GET /cdn_api/refresh/{reqId}/events`.
#[utoipa::path(
    get,
    path = "/cdn_api/refresh/{reqId}/events",
    tag = "refresh",
    operation_id = "refresh_events",
    summary = "Follow a refresh task: Server-Sent Events until it ends",
    description = "A `text/event-stream`. Each `progress` event's data is the task's status \
                   (the `zt_api` object of `GET` on the task, with `ret` and `msg`, on one line), \
                   sent when it changes (looked at every 250 ms); then one `end` event with the \
                   final state, and the stream closes. An `error` event (data `task \
                   unavailable`) ends it when the store fails. Keep-alive comments keep proxies \
                   from timing it out. Before the stream starts, failures are JSON envelopes.",
    params((
        "reqId" = String,
        Path,
        format = "uuid",
        description = "The task's id; a task that is not the caller's (or not a refresh) is \
                       `3001`."
    )),
    responses((
        status = 200,
        description = "Events `progress` and `end` whose data is a `RefreshTask` (with `ret` and `msg`).",
        content_type = "text/event-stream",
        body = String
    )),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, &[Ret::NoSuchTask]])))),
)]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    caller: Caller,
    Path(req_id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    task_events(state, caller, &req_id, Some(TaskKind::Refresh)).await
}
