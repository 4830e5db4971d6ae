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

/// The account alice, the edge `local` and alice's domain.
async fn alice_and_an_edge(store: &Store) -> (precache_store::Account, precache_store::Edge) {
    let alice = store
        .create_account("alice", "h", Role::User)
        .await
        .expect("alice");
    let edge = store
        .upsert_edge("local", "http://127.0.0.1:1", "s", 1)
        .await
        .expect("edge");
    register_domain(store, "alice").await;
    (alice, edge)
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
        audit: None,
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
    let (alice, edge) = alice_and_an_edge(&store).await;

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
    let (alice, edge) = alice_and_an_edge(&store).await;
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

/// Retention deletes ended tasks, oldest first and in batches, with their URLs and pairs; a task
/// still running, one that ended later, and a refresh whose purge its edge still owes stay (the
/// last until the edge is revoked).
async fn ended_tasks_go_after_the_retention_window_unless_a_purge_is_owed(store: Store) {
    let (alice, edge) = alice_and_an_edge(&store).await;
    let edges = std::slice::from_ref(&edge);
    let finish = |task_id, url_idx, success, finished_at| PairResult {
        key: PairKey {
            task_id,
            url_idx,
            edge_id: edge.id,
        },
        success,
        attempts: 1,
        http_status: success.then_some(200),
        bytes: None,
        objects: None,
        error: (!success).then(|| "edge away".to_string()),
        finished_at,
        unsupported: false,
        confirmed: None,
    };
    let mut ended = Vec::new();
    for finished_at in [20, 10, 5000] {
        let task = new_task(&alice, edges, &["http://game.example.com/a"], 100);
        let id = task.id;
        store.submit_task(task).await.expect("submit");
        store
            .pair_finished(finish(id, 0, true, finished_at))
            .await
            .expect("finish");
        ended.push(id);
    }
    let running = new_task(&alice, edges, &["http://game.example.com/b"], 100);
    let running_id = running.id;
    store.submit_task(running).await.expect("submit");
    let mut refresh = new_task(&alice, edges, &["http://game.example.com/a"], 100);
    refresh.kind = TaskKind::Refresh;
    refresh.mode = Some("delete".to_string());
    refresh.charges[0].kind = QuotaKind::RefreshUrls;
    let refresh_id = refresh.id;
    store.submit_task(refresh).await.expect("submit");
    store
        .pair_finished(finish(refresh_id, 0, false, 30))
        .await
        .expect("finish");

    let exists = |id| {
        let store = store.clone();
        async move {
            store
                .task_detail(alice.id, id)
                .await
                .expect("detail")
                .is_some()
        }
    };
    // One per batch here: the older one first.
    assert_eq!(store.delete_ended_tasks(1000, 1).await.expect("delete"), 1);
    assert!(!exists(ended[1]).await, "ended at 10");
    assert!(exists(ended[0]).await, "ended at 20");
    assert_eq!(
        store.delete_ended_tasks(1000, 100).await.expect("delete"),
        1
    );
    assert!(!exists(ended[0]).await);
    assert!(exists(ended[2]).await, "ended after the cutoff");
    assert!(exists(running_id).await, "not ended");
    assert!(exists(refresh_id).await, "its purge is owed to the edge");
    assert_eq!(
        store.delete_ended_tasks(1000, 100).await.expect("delete"),
        0
    );

    store.revoke_edge("local", 40).await.expect("revoke");
    assert_eq!(
        store.delete_ended_tasks(1000, 100).await.expect("delete"),
        1
    );
    assert!(!exists(refresh_id).await, "a revoked edge owes nothing");
    assert!(store
        .owed_purges(edge.id, 10)
        .await
        .expect("owed")
        .is_empty());
}

/// A submission's audit entry is written with its task, and only with it: a submission the
/// quota refuses leaves none. The log's filters and pages answer newest first.
async fn a_submissions_audit_entry_commits_with_its_task(store: Store) {
    let (alice, edge) = alice_and_an_edge(&store).await;
    let entry = |action: &str, at: i64| precache_store::NewAuditEntry {
        at,
        actor_id: Some(alice.id.0),
        actor: "alice".into(),
        client: Some("127.0.0.1".into()),
        request_id: Some("r1".into()),
        action: action.into(),
        target: None,
        detail: None,
    };
    let mut accepted = new_task(
        &alice,
        std::slice::from_ref(&edge),
        &["http://game.example.com/a"],
        1,
    );
    accepted.audit = Some(entry("task.prefetch", 10));
    store.submit_task(accepted).await.expect("accepted");
    let mut refused = new_task(
        &alice,
        std::slice::from_ref(&edge),
        &["http://game.example.com/b"],
        1,
    );
    refused.audit = Some(entry("task.prefetch", 11));
    assert!(matches!(
        store.submit_task(refused).await,
        Err(Error::QuotaExceeded { .. })
    ));
    store
        .record_audit(entry("domain.create", 5))
        .await
        .expect("record");
    store
        .record_audit(entry("domain.delete", 20))
        .await
        .expect("record");
    let page = |query: precache_store::AuditQuery| {
        let store = store.clone();
        async move {
            store
                .audit_entries(&precache_store::AuditQuery { limit: 10, ..query })
                .await
                .expect("page")
                .into_iter()
                .map(|found| (found.entry.action, found.entry.at))
                .collect::<Vec<_>>()
        }
    };
    let all = page(Default::default()).await;
    assert_eq!(
        all,
        [
            ("domain.delete".to_string(), 20),
            ("domain.create".to_string(), 5),
            ("task.prefetch".to_string(), 10)
        ]
    );
    let family = page(precache_store::AuditQuery {
        action: Some("domain.".into()),
        since: Some(6),
        ..Default::default()
    })
    .await;
    assert_eq!(family, [("domain.delete".to_string(), 20)]);
    assert_eq!(store.delete_audit_before(10).await.expect("delete"), 1);
    assert_eq!(page(Default::default()).await.len(), 2);
}

on_both_backends!(
    submissions_for_a_domain_of_another_account_are_refused,
    bootstrap_admin_only_on_an_empty_database,
    concurrent_submissions_commit_and_quota_rejects_only_the_excess,
    pairs_drive_the_task_to_its_final_state_once,
    ended_tasks_go_after_the_retention_window_unless_a_purge_is_owed,
    a_submissions_audit_entry_commits_with_its_task,
);

/// Two engines on one database, with alice, an edge and alice's domain.
async fn two_engines(db: &Db) -> (Store, Store, precache_store::Account, precache_store::Edge) {
    let (first, second) = (db.store().await, db.store().await);
    first.register_worker().await.expect("first engine");
    second.register_worker().await.expect("second engine");
    let (alice, edge) = alice_and_an_edge(&first).await;
    (first, second, alice, edge)
}

/// Two engines on one database: the live one takes the dead one's pairs, exactly once.
async fn a_dead_engines_pairs_are_taken_over_once(db: Db) {
    use std::time::Duration;
    let (first, second, alice, edge) = two_engines(&db).await;
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

/// Another engine's unfinished purge of a URL (or of a directory holding it), accepted no later,
/// is what a prefetch of that URL on that edge waits for; the engine's own purges, later ones,
/// other URLs and finished purges are not.
async fn another_engines_earlier_purge_of_a_url_is_seen(db: Db) {
    let (first, second, alice, edge) = two_engines(&db).await;
    let mut task = new_task(
        &alice,
        std::slice::from_ref(&edge),
        &["http://game.example.com/a.pak"],
        100,
    );
    task.kind = TaskKind::Refresh;
    task.dirs = vec!["http://game.example.com/patch/".to_string()];
    task.mode = Some("delete".to_string());
    task.charges[0].kind = QuotaKind::RefreshUrls;
    let (id, accepted) = (task.id, task.created_at);
    first.submit_task(task).await.expect("accepted");

    let pending = |store: &Store, url: &'static str, at: i64| {
        let store = store.clone();
        async move {
            store
                .purge_pending_elsewhere(edge.id, &format!("http://game.example.com{url}"), at)
                .await
                .expect("query")
        }
    };
    assert!(pending(&second, "/a.pak", accepted).await);
    assert!(pending(&second, "/patch/v2/b.pak", accepted + 5).await);
    assert!(!pending(&second, "/b.pak", accepted).await, "another URL");
    assert!(
        !pending(&second, "/a.pak", accepted - 1).await,
        "a prefetch accepted before"
    );
    assert!(
        !pending(&first, "/a.pak", accepted).await,
        "the engine's own purge"
    );
    let other_edge = precache_store::EdgeId(edge.id.0 + 1000);
    assert!(!second
        .purge_pending_elsewhere(other_edge, "http://game.example.com/a.pak", accepted)
        .await
        .expect("query"));

    for url_idx in 0..2 {
        let result = PairResult {
            key: PairKey {
                task_id: id,
                url_idx,
                edge_id: edge.id,
            },
            success: true,
            attempts: 1,
            http_status: Some(200),
            bytes: None,
            objects: Some(1),
            error: None,
            finished_at: accepted + 1,
            unsupported: false,
            confirmed: Some(true),
        };
        first.pair_finished(result).await.expect("finished");
    }
    assert!(!pending(&second, "/a.pak", accepted).await, "done");
    assert!(!pending(&second, "/patch/v2/b.pak", accepted).await, "done");
}

mod another_engines_earlier_purge_of_a_url_is_seen {
    #[tokio::test]
    async fn sqlite() {
        let db = super::Db::Sqlite(tempfile::tempdir().expect("tempdir"));
        super::another_engines_earlier_purge_of_a_url_is_seen(db).await
    }

    #[tokio::test]
    async fn postgres() {
        let Some(cluster) = super::pg_cluster::PgCluster::start() else {
            return;
        };
        super::another_engines_earlier_purge_of_a_url_is_seen(super::Db::Postgres(cluster)).await
    }
}

/// The database's text of `domain_certificates`, every column of every row (what a copy of the
/// database would reveal); on SQLite also the raw bytes of the file and its write-ahead log.
async fn certificate_rows_at_rest(db: &Db) -> String {
    let url = match db {
        Db::Sqlite(dir) => format!("sqlite://{}/precache.db", dir.path().display()),
        Db::Postgres(cluster) => cluster.url(),
    };
    let pool = sqlx::AnyPool::connect(&url).await.expect("raw connection");
    let rows = sqlx::query(
        "SELECT domain, cert_pem, key_sealed, subject, sans, sha256 FROM domain_certificates",
    )
    .fetch_all(&pool)
    .await
    .expect("raw rows");
    let mut text = String::new();
    for row in &rows {
        for column in 0..6 {
            text.push_str(&sqlx::Row::get::<String, _>(row, column));
            text.push('\n');
        }
    }
    pool.close().await;
    if let Db::Sqlite(dir) = db {
        for file in ["precache.db", "precache.db-wal"] {
            if let Ok(bytes) = std::fs::read(dir.path().join(file)) {
                text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    text
}

fn secret_keys(primary: u8, previous: Option<u8>) -> precache_store::sealed::SecretKeys {
    use precache_store::sealed::{SecretKey, SecretKeys};
    SecretKeys {
        primary: SecretKey::from_bytes(&[primary; 32]),
        previous: previous.map(|byte| SecretKey::from_bytes(&[byte; 32])),
    }
}

/// Issue 14: a domain's certificate is stored with its key sealed, answered as facts, pushed to
/// edges with the key opened, resealed after a key rotation, and removed (also with its domain).
async fn a_certificate_is_sealed_at_rest_and_bumps_the_revision(db: Db) {
    use precache_store::{CertificateFacts, NewCertificate};
    const KEY_BODY: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgSECRETsecretSECRET";
    let key_pem = format!("-----BEGIN PRIVATE KEY-----\n{KEY_BODY}\n-----END PRIVATE KEY-----\n");
    let facts = CertificateFacts {
        subject: "CN=game.example.com".into(),
        sans: vec!["game.example.com".into(), "*.game.example.com".into()],
        not_after: 1_900_000_000,
        sha256: "ab".repeat(32),
    };
    let certificate = NewCertificate {
        cert_pem: "-----BEGIN CERTIFICATE-----\nMIIBchain\n-----END CERTIFICATE-----\n".into(),
        key_pem: key_pem.clone(),
        facts: facts.clone(),
    };

    let unkeyed = db.store().await;
    unkeyed
        .create_account("alice", "h", Role::User)
        .await
        .expect("alice");
    register_domain(&unkeyed, "alice").await;
    let refused = unkeyed
        .set_domain_certificate("game.example.com", certificate.clone())
        .await;
    assert!(matches!(refused, Err(Error::Refused(_))), "{refused:?}");

    let store = db.store().await.with_secret_keys(secret_keys(1, None));
    let missing = store
        .set_domain_certificate("other.example.com", certificate.clone())
        .await;
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
    let (before, _) = store.domain_table().await.expect("table");
    store
        .set_domain_certificate("game.example.com", certificate.clone())
        .await
        .expect("set");
    let (after, domains) = store.domain_table().await.expect("table");
    assert!(after > before, "revision {before} then {after}");
    assert_eq!(domains[0].certificate.as_ref(), Some(&facts));
    let shown = store
        .domain("game.example.com")
        .await
        .expect("domain")
        .expect("registered");
    assert_eq!(shown.certificate, Some(facts.clone()));
    let for_edges = store.certificates_for_edges().await.expect("for edges");
    assert_eq!(for_edges.len(), 1);
    let opened = for_edges[0].certificate.as_ref().expect("opens");
    assert_eq!(
        (opened.cert_pem.as_str(), opened.key_pem.as_str()),
        (certificate.cert_pem.as_str(), key_pem.as_str())
    );
    store.flush().await;
    let at_rest = certificate_rows_at_rest(&db).await;
    assert!(
        at_rest.contains("MIIBchain"),
        "the chain is stored in clear"
    );
    assert!(!at_rest.contains(KEY_BODY), "the key is stored in clear");

    // A rotation: the previous key opens it, it is sealed again under the new one.
    let rotating = db.store().await.with_secret_keys(secret_keys(2, Some(1)));
    assert_eq!(rotating.reseal_credentials().await.expect("reseal"), 1);
    assert_eq!(rotating.reseal_credentials().await.expect("reseal"), 0);
    let rotated = db.store().await.with_secret_keys(secret_keys(2, None));
    let for_edges = rotated.certificates_for_edges().await.expect("for edges");
    assert_eq!(
        for_edges[0]
            .certificate
            .as_ref()
            .map(|c| c.key_pem.as_str()),
        Ok(key_pem.as_str())
    );
    let old_only = db.store().await.with_secret_keys(secret_keys(1, None));
    let error = old_only.certificates_for_edges().await.expect("for edges")[0]
        .certificate
        .clone()
        .expect_err("sealed under the new key");
    assert!(!error.contains(KEY_BODY), "{error}");

    let (before, _) = rotated.domain_table().await.expect("table");
    rotated
        .delete_domain_certificate("game.example.com")
        .await
        .expect("delete");
    let (after, domains) = rotated.domain_table().await.expect("table");
    assert!(after > before, "revision {before} then {after}");
    assert_eq!(domains[0].certificate, None);
    assert!(rotated
        .certificates_for_edges()
        .await
        .expect("none")
        .is_empty());
    let again = rotated.delete_domain_certificate("game.example.com").await;
    assert!(matches!(again, Err(Error::NotFound(_))), "{again:?}");

    // Deleting the domain deletes its certificate: registered again, it has none.
    rotated
        .set_domain_certificate("game.example.com", certificate)
        .await
        .expect("set again");
    rotated
        .delete_domain("game.example.com")
        .await
        .expect("delete domain");
    assert!(rotated
        .certificates_for_edges()
        .await
        .expect("none")
        .is_empty());
    register_domain(&rotated, "alice").await;
    let registered = rotated
        .domain("game.example.com")
        .await
        .expect("domain")
        .expect("registered");
    assert_eq!(registered.certificate, None);
}

mod a_certificate_is_sealed_at_rest_and_bumps_the_revision {
    #[tokio::test]
    async fn sqlite() {
        let db = super::Db::Sqlite(tempfile::tempdir().expect("tempdir"));
        super::a_certificate_is_sealed_at_rest_and_bumps_the_revision(db).await
    }

    #[tokio::test]
    async fn postgres() {
        let Some(cluster) = super::pg_cluster::PgCluster::start() else {
            return;
        };
        super::a_certificate_is_sealed_at_rest_and_bumps_the_revision(super::Db::Postgres(cluster))
            .await
    }
}
