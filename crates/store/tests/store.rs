//! The store against a real SQLite file: group commit, quotas, task and pair bookkeeping.

use precache_model::{
    DomainName, Origin, PairStatus, QuotaKind, Role, TaskId, TaskKind, TaskStatus,
};
use precache_store::{Error, NewTask, PairKey, PairResult, QuotaCharge, Store, TaskQuery};

async fn register_domain(store: &Store, owner: &str) {
    store
        .create_domain(
            DomainName::parse("game.example.com").expect("domain"),
            owner,
            Origin::parse("http://127.0.0.1:9").expect("origin"),
            None,
            precache_model::edge_protocol::CachePolicy::default(),
            vec!["edges".to_string()],
        )
        .await
        .expect("domain");
}

async fn submissions_for_a_domain_of_another_account_are_refused(store: Store) {
    let alice = store
        .create_account("alice", "h", Role::User)
        .await
        .expect("alice");
    let bob = store
        .create_account("bob", "h", Role::User)
        .await
        .expect("bob");
    let edge = store
        .upsert_edge("local", "http://127.0.0.1:1", "s", 1)
        .await
        .expect("edge");
    register_domain(&store, "alice").await;
    let refused = store
        .submit_task(new_task(
            &bob,
            std::slice::from_ref(&edge),
            &["http://game.example.com/a"],
            100,
        ))
        .await;
    assert!(
        matches!(refused, Err(Error::DomainNotOwned(_))),
        "{refused:?}"
    );
    let accepted = store
        .submit_task(new_task(
            &alice,
            std::slice::from_ref(&edge),
            &["http://game.example.com/a"],
            100,
        ))
        .await;
    assert_eq!(
        accepted
            .map(|submitted| submitted.origin.to_string())
            .ok()
            .as_deref(),
        Some("http://127.0.0.1:9")
    );
}

#[path = "support/pg_cluster.rs"]
mod pg_cluster;

/// A database for one test: an SQLite file, or a database on a throwaway PostgreSQL cluster.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(pg_cluster::PgCluster),
}

impl Db {
    async fn store(&self) -> Store {
        let url = match self {
            Db::Sqlite(dir) => format!("sqlite://{}/precache.db", dir.path().display()),
            Db::Postgres(cluster) => cluster.url(),
        };
        Store::open(&url).await.expect("open store")
    }
}

/// Every test runs against SQLite and, when PostgreSQL is installed, against PostgreSQL.
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    let db = super::Db::Sqlite(tempfile::tempdir().expect("tempdir"));
                    super::$name(db.store().await).await
                }

                #[tokio::test]
                async fn postgres() {
                    let Some(cluster) = super::pg_cluster::PgCluster::start() else {
                        return;
                    };
                    let db = super::Db::Postgres(cluster);
                    super::$name(db.store().await).await
                }
            }
        )+
    };
}

fn new_task(
    account: &precache_store::Account,
    edges: &[precache_store::Edge],
    urls: &[&str],
    limit: i64,
) -> NewTask {
    NewTask {
        id: TaskId::new_random(),
        account_id: account.id,
        kind: TaskKind::Prefetch,
        domain: DomainName::parse("game.example.com").expect("domain"),
        urls: urls.iter().map(|url| url.to_string()).collect(),
        dirs: Vec::new(),
        mode: None,
        warm: false,
        edges: edges.iter().map(|edge| edge.id).collect(),
        created_at: precache_model::time::now_millis(),
        charges: vec![QuotaCharge {
            kind: QuotaKind::PrefetchUrls,
            day: "2026-11-28".into(),
            amount: urls.len() as i64,
            default_limit: limit,
        }],
        idempotency: None,
        callback_url: None,
    }
}

async fn bootstrap_admin_only_on_an_empty_database(store: Store) {
    assert!(store
        .create_bootstrap_admin("hash-1")
        .await
        .expect("bootstrap"));
    assert!(!store
        .create_bootstrap_admin("hash-2")
        .await
        .expect("second bootstrap"));
    let admin = store
        .account_by_name("admin")
        .await
        .expect("lookup")
        .expect("admin exists");
    assert_eq!(
        (admin.role, admin.password_hash.as_str()),
        (Role::Admin, "hash-1")
    );
    assert!(matches!(
        store.delete_account("admin").await,
        Err(Error::Refused(_))
    ));
}

async fn concurrent_submissions_commit_and_quota_rejects_only_the_excess(store: Store) {
    let alice = store
        .create_account("alice", "h", Role::User)
        .await
        .expect("alice");
    let edge = store
        .upsert_edge("local", "http://127.0.0.1:1", "s", 1)
        .await
        .expect("edge");
    register_domain(&store, "alice").await;

    // 40 tasks of 2 URLs against a limit of 50 URLs: exactly 25 fit, whatever the batching.
    let mut handles = Vec::new();
    for n in 0..40 {
        let store = store.clone();
        let task = new_task(
            &alice,
            std::slice::from_ref(&edge),
            &[
                &format!("http://game.example.com/{n}/a"),
                &format!("http://game.example.com/{n}/b"),
            ],
            50,
        );
        handles.push(tokio::spawn(async move { store.submit_task(task).await }));
    }
    let mut accepted = Vec::new();
    let mut rejected = 0;
    for handle in handles {
        match handle.await.expect("join") {
            Ok(submitted) => accepted.push(submitted.task.id),
            Err(Error::QuotaExceeded { limit: 50, .. }) => rejected += 1,
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!((accepted.len(), rejected), (25, 15));
    let quota = store
        .quota_status(alice.id, "2026-11-28", QuotaKind::default_daily_limit)
        .await
        .expect("quota");
    assert_eq!(quota[0].used, 50);

    let page = store
        .list_tasks(&TaskQuery {
            account_id: alice.id,
            kind: Some(TaskKind::Prefetch),
            status: None,
            domain: None,
            since: None,
            until: None,
            before: None,
            limit: 100,
        })
        .await
        .expect("list");
    assert_eq!(page.len(), 25, "rejected submissions left no rows");
    assert_eq!(store.pending_pairs().await.expect("pending").len(), 50);
}

async fn pairs_drive_the_task_to_its_final_state_once(store: Store) {
    let alice = store
        .create_account("alice", "h", Role::User)
        .await
        .expect("alice");
    let edge = store
        .upsert_edge("local", "http://127.0.0.1:1", "s", 1)
        .await
        .expect("edge");
    register_domain(&store, "alice").await;
    let task = store
        .submit_task(new_task(
            &alice,
            std::slice::from_ref(&edge),
            &["http://game.example.com/a", "http://game.example.com/b"],
            100,
        ))
        .await
        .expect("submit")
        .task;
    let key = |url_idx| PairKey {
        task_id: task.id,
        url_idx,
        edge_id: edge.id,
    };
    store
        .pairs_started(vec![key(0), key(1)], 10)
        .expect("started");
    // Not waited for: a flush makes it visible.
    store.flush().await;
    let detail = store
        .task_detail(alice.id, task.id)
        .await
        .expect("detail")
        .expect("exists");
    assert_eq!(detail.summary.status, TaskStatus::Running);
    assert!(detail
        .pairs
        .iter()
        .all(|pair| pair.status == PairStatus::Running));

    let finish = |url_idx, success| PairResult {
        key: key(url_idx),
        success,
        attempts: 1,
        http_status: Some(if success { 200 } else { 404 }),
        bytes: Some(5),
        objects: None,
        error: (!success).then(|| "origin answered 404 Not Found".to_string()),
        finished_at: 20,
        unsupported: false,
        confirmed: None,
    };
    assert_eq!(
        store
            .pair_finished(finish(0, true))
            .await
            .expect("finish 0"),
        None
    );
    let ended = store
        .pair_finished(finish(1, false))
        .await
        .expect("finish 1")
        .expect("task ended");
    assert_eq!(
        (ended.status, ended.n_success, ended.n_finished),
        (TaskStatus::Done, 1, 2)
    );
    // Recording the same end again is harmless.
    assert_eq!(
        store.pair_finished(finish(1, false)).await.expect("again"),
        None
    );

    let detail = store
        .task_detail(alice.id, task.id)
        .await
        .expect("detail")
        .expect("exists");
    assert_eq!(detail.urls.len(), 2);
    assert_eq!(
        detail.pairs[1].error.as_deref(),
        Some("origin answered 404 Not Found")
    );
    assert_eq!(detail.summary.finished_at, Some(20));
    // Another account does not see it.
    let bob = store
        .create_account("bob", "h", Role::User)
        .await
        .expect("bob");
    assert!(store
        .task_detail(bob.id, task.id)
        .await
        .expect("lookup")
        .is_none());
}

on_both_backends!(
    submissions_for_a_domain_of_another_account_are_refused,
    bootstrap_admin_only_on_an_empty_database,
    concurrent_submissions_commit_and_quota_rejects_only_the_excess,
    pairs_drive_the_task_to_its_final_state_once,
);

/// Two engines on one database: the live one takes the dead one's pairs, exactly once.
async fn a_dead_engines_pairs_are_taken_over_once(db: Db) {
    use std::time::Duration;
    let (first, second) = (db.store().await, db.store().await);
    first.register_worker().await.expect("first engine");
    second.register_worker().await.expect("second engine");
    let alice = first
        .create_account("alice", "h", Role::User)
        .await
        .expect("alice");
    let edge = first
        .upsert_edge("local", "http://127.0.0.1:1", "s", 1)
        .await
        .expect("edge");
    register_domain(&first, "alice").await;
    let task = new_task(
        &alice,
        std::slice::from_ref(&edge),
        &["http://game.example.com/a", "http://game.example.com/b"],
        100,
    );
    let id = task.id;
    first.submit_task(task).await.expect("accepted");
    assert_eq!(first.pending_pairs().await.expect("pending").len(), 2);
    assert!(second.pending_pairs().await.expect("pending").is_empty());

    // Alive: nothing to take.
    let taken = second
        .take_over_pairs(Duration::from_secs(30), false)
        .await
        .expect("take over");
    assert_eq!(taken.pairs, 0);
    // Silent longer than the lease: its pairs move, once.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let taken = second
        .take_over_pairs(Duration::from_millis(10), false)
        .await
        .expect("take over");
    assert_eq!((taken.pairs, taken.tasks), (2, vec![id]));
    let again = second
        .take_over_pairs(Duration::from_millis(10), false)
        .await
        .expect("take over");
    assert_eq!(again.pairs, 0);
    assert_eq!(second.pending_pairs().await.expect("pending").len(), 2);
    assert!(first.pending_pairs().await.expect("pending").is_empty());
    assert!(
        !first.heartbeat().await.expect("heartbeat"),
        "a taken-over engine learns it at its next heartbeat"
    );
}

mod a_dead_engines_pairs_are_taken_over_once {
    #[tokio::test]
    async fn sqlite() {
        let db = super::Db::Sqlite(tempfile::tempdir().expect("tempdir"));
        super::a_dead_engines_pairs_are_taken_over_once(db).await
    }

    #[tokio::test]
    async fn postgres() {
        let Some(cluster) = super::pg_cluster::PgCluster::start() else {
            return;
        };
        super::a_dead_engines_pairs_are_taken_over_once(super::Db::Postgres(cluster)).await
    }
}
