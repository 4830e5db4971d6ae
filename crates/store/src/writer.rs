//! Group commit: one connection applies every write, many writes per transaction.
//!
//! Callers hand the writer a message and wait for its answer. The writer takes every message that
//! is waiting, applies them all in one transaction, commits once, and only then answers each
//! caller: no caller hears "done" before its rows are durable, and one fsync covers the batch.
//!
//! Two kinds of work:
//!
//! - The hot paths (submitting a task, marking pairs started, recording pair outcomes) are typed
//!   messages that the writer applies *together*: all submissions of a batch become one
//!   multi-row `INSERT` per table, all outcomes one `UPDATE ... FROM (VALUES ...)`. With sqlx,
//!   every statement is a round trip to the connection's worker thread, so the number of
//!   statements per batch, not per task, is what sets throughput.
//! - Everything else (accounts, domains, tokens, ...) is a job: a closure run on the connection
//!   inside its own savepoint, so a failing job is rolled back alone.
//!
//! Within a batch, jobs run first, then submissions, then started marks, then outcomes. That order
//! is one valid serialisation of concurrent requests, and keeps a pair's "started" before its
//! outcome when both land in the same batch.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, Connection};
use tokio::sync::{mpsc, oneshot};

use crate::task_pairs::{mark_started_many, record_finish_many};
use crate::tasks::submit_many;
use crate::{Backend, Error, NewTask, PairKey, PairResult, Result, SubmittedTask, TaskSummary};

/// Messages waiting beyond this answer `Overloaded` (`5003`) instead of queueing without bound.
const QUEUE_CAPACITY: usize = 16_384;
/// Most messages in one transaction; bounds the latency a batch adds to its first message.
const MAX_BATCH: usize = 512;
/// Longest wait to check or open the writer's connection after a failed batch; the batch that
/// waits fails (`5003`) rather than hang its callers.
const RECONNECT_WAIT: Duration = Duration::from_secs(3);

/// Called after the commit with its outcome; answers the caller.
type Completion = Box<dyn FnOnce(std::result::Result<(), Arc<str>>) + Send>;
/// A job as the writer sees it: runs its SQL, says whether it succeeded, and how to answer.
type Job =
    Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, (bool, Completion)> + Send>;

/// A submission waiting for its batch.
pub(crate) struct Submission {
    pub(crate) task: NewTask,
    pub(crate) reply: oneshot::Sender<Result<SubmittedTask>>,
}

/// A pair outcome waiting for its batch.
pub(crate) struct Outcome {
    pub(crate) result: PairResult,
    pub(crate) reply: oneshot::Sender<Result<Option<TaskSummary>>>,
}

enum Message {
    Job(Job),
    Submit(Box<Submission>),
    Started(Vec<PairKey>, i64),
    Finished(Box<Outcome>),
    Flush(oneshot::Sender<()>),
}

#[derive(Default)]
struct Batch {
    jobs: Vec<Job>,
    submissions: Vec<Submission>,
    started: Vec<(PairKey, i64)>,
    outcomes: Vec<Outcome>,
    flushes: Vec<oneshot::Sender<()>>,
}

impl Batch {
    fn len(&self) -> usize {
        self.jobs.len() + self.submissions.len() + self.started.len() + self.outcomes.len()
    }

    /// Moves the engine's bookkeeping out, when clients' messages are waiting too.
    fn split_bookkeeping(&mut self) -> Batch {
        if self.jobs.is_empty() && self.submissions.is_empty() {
            return Batch::default();
        }
        Batch {
            started: std::mem::take(&mut self.started),
            outcomes: std::mem::take(&mut self.outcomes),
            ..Batch::default()
        }
    }

    fn add(&mut self, message: Message) {
        match message {
            Message::Job(job) => self.jobs.push(job),
            Message::Submit(submission) => self.submissions.push(*submission),
            Message::Started(keys, at) => {
                self.started.extend(keys.into_iter().map(|key| (key, at)))
            }
            Message::Finished(outcome) => self.outcomes.push(*outcome),
            Message::Flush(reply) => self.flushes.push(reply),
        }
    }
}

/// Handle to the writer task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    queue: mpsc::Sender<Message>,
}

fn closed_or_full<T>(error: mpsc::error::TrySendError<T>) -> Error {
    match error {
        mpsc::error::TrySendError::Full(_) => Error::Overloaded,
        mpsc::error::TrySendError::Closed(_) => Error::Unavailable("the store is closed".into()),
    }
}

fn writer_gone<T>(_: T) -> Error {
    Error::Unavailable("the database writer did not complete the write".into())
}

impl Writer {
    /// Starts the writer task on `connection`.
    /// Pairs it commits belong to the engine `worker` (this process's). With `reconnect`, a
    /// connection lost (a database server restarted) is opened again after a failed batch.
    pub(crate) fn start(
        connection: AnyConnection,
        backend: Backend,
        worker: Arc<str>,
        reconnect: Option<AnyConnectOptions>,
    ) -> Writer {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run_writer(connection, backend, worker, reconnect, receiver));
        Writer { queue }
    }

    /// Runs `job` in the next transaction and returns its result once it is committed.
    pub(crate) async fn run<T, F>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let boxed: Job = Box::new(move |connection| {
            Box::pin(async move {
                let result = job(connection).await;
                let succeeded = result.is_ok();
                let completion: Completion = Box::new(move |commit| {
                    let answer = match commit {
                        Ok(()) => result,
                        Err(reason) if succeeded => {
                            Err(Error::Unavailable(format!("commit failed: {reason}")))
                        }
                        Err(_) => result,
                    };
                    // The caller may have gone away (client disconnected); the write stands.
                    let _ = reply.send(answer);
                });
                (succeeded, completion)
            })
        });
        self.queue
            .try_send(Message::Job(boxed))
            .map_err(closed_or_full)?;
        answer.await.map_err(writer_gone)?
    }

    /// Commits a task (see [`crate::Store::submit_task`]).
    pub(crate) async fn submit(&self, task: NewTask) -> Result<SubmittedTask> {
        let (reply, answer) = oneshot::channel();
        let message = Message::Submit(Box::new(Submission { task, reply }));
        self.queue.try_send(message).map_err(closed_or_full)?;
        answer.await.map_err(writer_gone)?
    }

    /// Queues "these pairs started"; not waited for (losing it to a crash loses nothing: a pair
    /// that was never marked running is still waiting, and is run again).
    pub(crate) fn started(&self, keys: Vec<PairKey>, at: i64) -> Result<()> {
        self.queue
            .try_send(Message::Started(keys, at))
            .map_err(closed_or_full)
    }

    /// Records a pair's outcome (see [`crate::Store::pair_finished`]).
    pub(crate) async fn finished(&self, result: PairResult) -> Result<Option<TaskSummary>> {
        let (reply, answer) = oneshot::channel();
        // Outcomes wait for room rather than fail: the work they record is already done.
        let message = Message::Finished(Box::new(Outcome { result, reply }));
        self.queue
            .send(message)
            .await
            .map_err(|_| Error::Unavailable("the store is closed".into()))?;
        answer.await.map_err(writer_gone)?
    }

    /// Returns once every message queued before this call has been committed (or failed).
    pub(crate) async fn flush(&self) {
        let (reply, done) = oneshot::channel();
        if self.queue.send(Message::Flush(reply)).await.is_ok() {
            let _ = done.await;
        }
    }
}

async fn run_writer(
    mut connection: AnyConnection,
    backend: Backend,
    worker: Arc<str>,
    reconnect: Option<AnyConnectOptions>,
    mut receiver: mpsc::Receiver<Message>,
) {
    let mut last_failed = false;
    while let Some(first) = receiver.recv().await {
        if let (true, Some(options)) = (last_failed, &reconnect) {
            reopen_if_lost(&mut connection, options).await;
        }
        let mut batch = Batch::default();
        batch.add(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(message) => batch.add(message),
                Err(_) => break,
            }
        }
        let flushes = std::mem::take(&mut batch.flushes);
        // Clients wait on submissions and jobs; the task engine's bookkeeping (started marks,
        // outcomes) can wait a commit longer. Committing the former first keeps a busy engine
        // from adding its rows to the latency of every answer.
        let bookkeeping = batch.split_bookkeeping();
        last_failed = false;
        for batch in [batch, bookkeeping] {
            if batch.len() > 0 {
                last_failed |= !commit_batch(&mut connection, backend, &worker, batch).await;
            }
        }
        for reply in flushes {
            let _ = reply.send(());
        }
    }
}

/// A reply owed to a caller, and what it will say if the commit succeeds.
type Answer<T> = (oneshot::Sender<Result<T>>, Result<T>);

/// The answers owed once the transaction's fate is known.
#[derive(Default)]
struct Answers {
    completions: Vec<Completion>,
    submissions: Vec<Answer<SubmittedTask>>,
    outcomes: Vec<Answer<Option<TaskSummary>>>,
}

/// After a failed batch: if the connection no longer answers, opens a new one. When that fails
/// too the old one stays, so the next batch fails fast and tries again.
async fn reopen_if_lost(connection: &mut AnyConnection, options: &AnyConnectOptions) {
    if let Ok(Ok(())) = tokio::time::timeout(RECONNECT_WAIT, connection.ping()).await {
        return;
    }
    match tokio::time::timeout(RECONNECT_WAIT, AnyConnection::connect_with(options)).await {
        Ok(Ok(fresh)) => {
            tracing::info!("the database writer reconnected");
            let lost = std::mem::replace(connection, fresh);
            // Closing a dead connection can only fail; dropping it is enough.
            drop(lost);
        }
        Ok(Err(error)) => tracing::warn!(%error, "the database writer could not reconnect"),
        Err(_) => tracing::warn!("the database writer could not reconnect in time"),
    }
}

/// Applies one batch and answers its callers; whether it committed.
async fn commit_batch(
    connection: &mut AnyConnection,
    backend: Backend,
    worker: &str,
    batch: Batch,
) -> bool {
    let Batch {
        jobs,
        submissions,
        started,
        outcomes,
        ..
    } = batch;
    let mut answers = Answers::default();
    let outcome: std::result::Result<(), Arc<str>> = async {
        execute(connection, begin_statement(backend)).await?;
        for job in jobs {
            execute(connection, "SAVEPOINT step").await?;
            let (succeeded, completion) = job(connection).await;
            answers.completions.push(completion);
            end_step(connection, !succeeded).await?;
        }
        if !submissions.is_empty() {
            let (tasks, replies): (Vec<NewTask>, Vec<_>) = submissions
                .into_iter()
                .map(|submission| (submission.task, submission.reply))
                .unzip();
            execute(connection, "SAVEPOINT step").await?;
            let results = submit_many(connection, &tasks, worker).await;
            end_step(connection, results.is_err()).await?;
            let results = match results {
                Ok(results) => results,
                Err(error) => {
                    let reason = error.to_string();
                    tasks
                        .iter()
                        .map(|_| Err(Error::Unavailable(reason.clone())))
                        .collect()
                }
            };
            answers.submissions.extend(replies.into_iter().zip(results));
        }
        if !started.is_empty() {
            execute(connection, "SAVEPOINT step").await?;
            let marked = mark_started_many(connection, &started).await;
            end_step(connection, marked.is_err()).await?;
            if let Err(error) = marked {
                tracing::warn!(%error, "could not mark pairs running");
            }
        }
        if !outcomes.is_empty() {
            let (results, replies): (Vec<PairResult>, Vec<_>) = outcomes
                .into_iter()
                .map(|outcome| (outcome.result, outcome.reply))
                .unzip();
            execute(connection, "SAVEPOINT step").await?;
            let recorded = record_finish_many(connection, &results).await;
            end_step(connection, recorded.is_err()).await?;
            let recorded = match recorded {
                Ok(recorded) => recorded.into_iter().map(Ok).collect(),
                Err(error) => {
                    let reason = error.to_string();
                    results
                        .iter()
                        .map(|_| Err(Error::Unavailable(reason.clone())))
                        .collect::<Vec<_>>()
                }
            };
            answers.outcomes.extend(replies.into_iter().zip(recorded));
        }
        execute(connection, "COMMIT").await
    }
    .await;
    if let Err(reason) = &outcome {
        tracing::error!(%reason, "database transaction failed; rolling back the batch");
        let _ = execute(connection, "ROLLBACK").await;
    }
    for completion in answers.completions {
        completion(outcome.clone());
    }
    let failed = |reason: &Arc<str>| Error::Unavailable(format!("commit failed: {reason}"));
    for (reply, result) in answers.submissions {
        let _ = reply.send(match &outcome {
            Ok(()) => result,
            Err(reason) => result.and(Err(failed(reason))),
        });
    }
    for (reply, result) in answers.outcomes {
        let _ = reply.send(match &outcome {
            Ok(()) => result,
            Err(reason) => result.and(Err(failed(reason))),
        });
    }
    outcome.is_ok()
}

/// Ends the savepoint `step`, undoing it first when the step failed, so a failed step leaves the
/// rest of the batch intact.
async fn end_step(
    connection: &mut AnyConnection,
    failed: bool,
) -> std::result::Result<(), Arc<str>> {
    if failed {
        execute(connection, "ROLLBACK TO SAVEPOINT step").await?;
    }
    execute(connection, "RELEASE SAVEPOINT step").await
}

fn begin_statement(backend: Backend) -> &'static str {
    match backend {
        // IMMEDIATE takes the write lock up front, so a batch never fails half-way on SQLITE_BUSY.
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::Postgres => "BEGIN",
    }
}

async fn execute(connection: &mut AnyConnection, sql: &str) -> std::result::Result<(), Arc<str>> {
    sqlx::query(sql)
        .persistent(false)
        .execute(&mut *connection)
        .await
        .map(|_| ())
        .map_err(|e| Arc::from(e.to_string()))
}
