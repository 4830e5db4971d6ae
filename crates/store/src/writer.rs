//! Group commit: one connection applies every write, many writes per transaction.
//!
//! Callers hand the writer a job (a closure that runs SQL on the writer's connection). The writer
//! takes every job that is waiting, runs each inside its own savepoint within one transaction,
//! commits once, and only then answers each caller. A job that fails is rolled back to its
//! savepoint alone, so one client's bad request cannot undo another's. With a commit costing an
//! fsync, this turns "one fsync per task" into "one fsync per batch" without giving up anything:
//! no caller hears "done" before its rows are durable.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::AnyConnection;
use tokio::sync::{mpsc, oneshot};

use crate::{Backend, Error, Result};

/// Jobs waiting beyond this answer `Overloaded` (`5003`) instead of queueing without bound.
const QUEUE_CAPACITY: usize = 8192;
/// Most jobs in one transaction; bounds the latency a batch adds to its first job.
const MAX_BATCH: usize = 256;

/// Called after the commit with its outcome; answers the caller.
type Completion = Box<dyn FnOnce(std::result::Result<(), Arc<str>>) + Send>;
/// A job as the writer sees it: runs its SQL, says whether it succeeded, and how to answer.
type Job =
    Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, (bool, Completion)> + Send>;

enum Message {
    Job(Job),
    Flush(oneshot::Sender<()>),
}

/// Handle to the writer task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    queue: mpsc::Sender<Message>,
}

impl Writer {
    /// Starts the writer task on `connection`.
    pub(crate) fn start(connection: AnyConnection, backend: Backend) -> Writer {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run_writer(connection, backend, receiver));
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
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => Error::Overloaded,
                mpsc::error::TrySendError::Closed(_) => {
                    Error::Unavailable("the store is closed".into())
                }
            })?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the database writer stopped".into()))?
    }

    /// Returns once every job queued before this call has been committed (or failed).
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
    mut receiver: mpsc::Receiver<Message>,
) {
    let begin = match backend {
        // IMMEDIATE takes the write lock up front, so a batch never fails half-way on SQLITE_BUSY.
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::Postgres => "BEGIN",
    };
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = receiver.recv().await {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Job(job) => batch.push(job),
                Message::Flush(reply) => flushes.push(reply),
            }
            if batch.len() < MAX_BATCH {
                next = receiver.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            commit_batch(&mut connection, begin, &mut batch).await;
        }
        for reply in flushes.drain(..) {
            let _ = reply.send(());
        }
    }
}

async fn commit_batch(connection: &mut AnyConnection, begin: &str, batch: &mut Vec<Job>) {
    let mut completions: Vec<Completion> = Vec::with_capacity(batch.len());
    let outcome: std::result::Result<(), Arc<str>> = async {
        execute(connection, begin).await?;
        for job in std::mem::take(batch) {
            execute(connection, "SAVEPOINT job").await?;
            let (succeeded, completion) = job(connection).await;
            completions.push(completion);
            if !succeeded {
                execute(connection, "ROLLBACK TO SAVEPOINT job").await?;
            }
            execute(connection, "RELEASE SAVEPOINT job").await?;
        }
        execute(connection, "COMMIT").await
    }
    .await;
    if let Err(reason) = &outcome {
        tracing::error!(%reason, "database transaction failed; rolling back the batch");
        let _ = execute(connection, "ROLLBACK").await;
    }
    // Jobs never reached because the transaction broke still owe their callers an answer: their
    // reply senders are dropped with them, which the caller sees as "writer stopped".
    batch.clear();
    for completion in completions {
        completion(outcome.clone());
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
