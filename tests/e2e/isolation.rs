//! Accounts see and touch only what is theirs: domains, prefetches and task status.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;

use crate::support::client::url;
use crate::support::{Api, Behavior, Origin, Server, TestResult};

type Error = Box<dyn std::error::Error + Send + Sync>;

const ALICE_DOMAIN: &str = "alice.example.com";
const BOB_DOMAIN: &str = "bob.example.org";
const WAIT: Duration = Duration::from_secs(30);

struct Two {
    _dir: tempfile::TempDir,
    _server: Server,
    api: Api,
    origin: Origin,
    admin: String,
    alice: String,
    bob: String,
}

/// A server where alice owns [`ALICE_DOMAIN`] and bob owns [`BOB_DOMAIN`], both on one origin.
async fn two_accounts() -> Result<Two, Error> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let alice = api
        .user_with_domain("alice", ALICE_DOMAIN, &origin.url())
        .await?;
    let bob = api
        .user_with_domain("bob", BOB_DOMAIN, &origin.url())
        .await?;
    let admin = api.admin().await?;
    Ok(Two {
        _dir: dir,
        _server: server,
        api,
        origin,
        admin,
        alice,
        bob,
    })
}

/// The `domain` names of `GET /cdn_api/domains` for this token.
async fn listed_domains(api: &Api, token: &str) -> Result<Vec<String>, Error> {
    let reply = api
        .call(Method::GET, "/cdn_api/domains", Some(token), None)
        .await?;
    reply.expect(200, 0)?;
    let domains = reply
        .get("domains")
        .as_array()
        .ok_or_else(|| format!("no domain list: {}", reply.text()))?;
    Ok(domains
        .iter()
        .filter_map(|domain| domain["domain"].as_str().map(String::from))
        .collect())
}

/// The `reqId`s of `GET /cdn_api/prefetch` for this token.
async fn listed_tasks(api: &Api, token: &str) -> Result<Vec<String>, Error> {
    let reply = api
        .call(Method::GET, "/cdn_api/prefetch", Some(token), None)
        .await?;
    reply.expect(200, 0)?;
    let tasks = reply
        .get("tasks")
        .as_array()
        .ok_or_else(|| format!("no task list: {}", reply.text()))?;
    Ok(tasks
        .iter()
        .filter_map(|task| task["reqId"].as_str().map(String::from))
        .collect())
}

#[tokio::test]
async fn each_account_lists_only_its_own_domains_and_admin_lists_all() -> TestResult {
    let t = two_accounts().await?;
    assert_eq!(listed_domains(&t.api, &t.alice).await?, vec![ALICE_DOMAIN]);
    assert_eq!(listed_domains(&t.api, &t.bob).await?, vec![BOB_DOMAIN]);
    let mut all = listed_domains(&t.api, &t.admin).await?;
    all.sort();
    assert_eq!(all, vec![ALICE_DOMAIN, BOB_DOMAIN]);

    // Each sees its own domain in full, with owner and origin.
    let own = t
        .api
        .call(
            Method::GET,
            &format!("/cdn_api/domains/{ALICE_DOMAIN}"),
            Some(&t.alice),
            None,
        )
        .await?;
    own.expect(200, 0)?;
    assert_eq!(own.get("domain")["domain"], ALICE_DOMAIN);
    assert_eq!(own.get("domain")["owner"], "alice");
    Ok(())
}

#[tokio::test]
async fn another_accounts_domain_is_2006_like_an_unregistered_one() -> TestResult {
    let t = two_accounts().await?;
    let get = |token: &str, domain: &str| {
        let api = t.api.clone();
        let (token, path) = (token.to_string(), format!("/cdn_api/domains/{domain}"));
        async move { api.call(Method::GET, &path, Some(&token), None).await }
    };
    let bobs = get(&t.alice, BOB_DOMAIN).await?;
    bobs.expect(403, 2006)?;
    assert!(bobs.msg().contains(BOB_DOMAIN), "{}", bobs.text());
    assert!(
        !bobs.text().contains("bob\""),
        "the owner is not revealed: {}",
        bobs.text()
    );
    let alices = get(&t.bob, ALICE_DOMAIN).await?;
    alices.expect(403, 2006)?;
    // The same answer as for a domain nobody registered (same length as bob's, so the bytes
    // can be compared whole).
    let nobodys = get(&t.alice, "nob.example.org").await?;
    nobodys.expect(403, 2006)?;
    assert_eq!(
        bobs.text().replace(BOB_DOMAIN, "DOMAIN"),
        nobodys.text().replace("nob.example.org", "DOMAIN")
    );
    // The admin sees both.
    get(&t.admin, ALICE_DOMAIN).await?.expect(200, 0)?;
    get(&t.admin, BOB_DOMAIN).await?.expect(200, 0)?;
    Ok(())
}

#[tokio::test]
async fn prefetching_another_accounts_domain_is_2006_and_fetches_nothing() -> TestResult {
    let t = two_accounts().await?;
    t.origin.set(
        "/secret.bin",
        Behavior::Body(Bytes::from_static(b"alice's")),
    );
    let reply = t
        .api
        .prefetch(&t.bob, &[url(ALICE_DOMAIN, "/secret.bin")])
        .await?;
    reply.expect(403, 2006)?;
    assert!(reply.msg().contains(ALICE_DOMAIN), "{}", reply.text());
    // Hiding it behind a URL of bob's own domain is 2004, not a way in.
    let reply = t
        .api
        .prefetch(
            &t.bob,
            &[
                url(BOB_DOMAIN, "/secret.bin"),
                url(ALICE_DOMAIN, "/secret.bin"),
            ],
        )
        .await?;
    reply.expect(400, 2004)?;
    // Case and a trailing dot do not make it someone else's name.
    for spelling in ["ALICE.Example.COM", "alice.example.com."] {
        let reply = t
            .api
            .prefetch(&t.bob, &[format!("http://{spelling}/secret.bin")])
            .await?;
        reply
            .expect(403, 2006)
            .map_err(|error| format!("{spelling}: {error}"))?;
    }
    assert!(listed_tasks(&t.api, &t.bob).await?.is_empty());
    assert!(listed_tasks(&t.api, &t.alice).await?.is_empty());
    assert_eq!(t.origin.total(), 0);
    Ok(())
}

#[tokio::test]
async fn another_accounts_task_is_invisible() -> TestResult {
    let t = two_accounts().await?;
    t.origin
        .set("/a.bin", Behavior::Body(Bytes::from_static(b"alice")));
    t.origin
        .set("/b.bin", Behavior::Body(Bytes::from_static(b"bob")));
    let alices = t
        .api
        .prefetch_ok(&t.alice, &[url(ALICE_DOMAIN, "/a.bin")])
        .await?;
    let bobs = t
        .api
        .prefetch_ok(&t.bob, &[url(BOB_DOMAIN, "/b.bin")])
        .await?;
    t.api.wait_final(&t.alice, &alices, WAIT).await?;
    t.api.wait_final(&t.bob, &bobs, WAIT).await?;

    let reply = t
        .api
        .call(
            Method::GET,
            &format!("/cdn_api/prefetch/{alices}"),
            Some(&t.bob),
            None,
        )
        .await?;
    reply.expect(404, 3001)?;
    assert!(!reply.text().contains(ALICE_DOMAIN), "{}", reply.text());
    assert_eq!(listed_tasks(&t.api, &t.bob).await?, vec![bobs.clone()]);
    assert_eq!(listed_tasks(&t.api, &t.alice).await?, vec![alices.clone()]);

    // Filters and paging do not leak it either.
    for query in ["?status=done", "?limit=1000", &format!("?before={bobs}")] {
        let reply = t
            .api
            .call(
                Method::GET,
                &format!("/cdn_api/prefetch{query}"),
                Some(&t.bob),
                None,
            )
            .await?;
        reply.expect(200, 0)?;
        assert!(!reply.text().contains(&alices), "{query}: {}", reply.text());
    }
    Ok(())
}
