//! The web console in a real browser: Debian's Chromium, driven through its ChromeDriver over
//! WebDriver (fantoccini). Skipped with a message when they are not installed, unless
//! `PRECACHE_REQUIRE_BROWSER` is set (CI sets it and installs them).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::support::client::url;
use crate::support::{Api, Behavior, Origin, Server, TestResult};

type Error = Box<dyn std::error::Error + Send + Sync>;

const HOST: &str = "game.example.com";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A ChromeDriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts ChromeDriver, or says why the test cannot run here.
async fn driver() -> Result<Option<Driver>, Error> {
    let installed =
        std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists();
    if !installed {
        if std::env::var_os("PRECACHE_REQUIRE_BROWSER").is_some() {
            return Err(
                "PRECACHE_REQUIRE_BROWSER is set but chromium/chromedriver are missing".into(),
            );
        }
        eprintln!("skipped: apt-get install chromium chromium-driver to run the browser tests");
        return Ok(None);
    }
    let port = free_port()?;
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let driver = Driver { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            return Err("chromedriver did not start listening".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Some(driver))
}

/// A headless Chromium session with a profile of its own that talks to nothing but loopback.
async fn browser(driver: &Driver, profile: &std::path::Path) -> Result<Client, Error> {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await?;
    Ok(client)
}

/// Polls `condition` until it holds or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, Error>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if condition().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An operator logs in, prefetches two URLs from a slow origin, watches the URL × edge matrix
/// turn to `success` without reloading the page, and logs out.
#[tokio::test]
async fn an_operator_prefetches_and_watches_the_matrix_fill_in_chromium() -> TestResult {
    let Some(driver) = driver().await? else {
        return Ok(());
    };
    let origin = Origin::start().await?;
    for path in ["/a.pak", "/b.pak"] {
        origin.set(
            path,
            Behavior::Slow(
                Duration::from_millis(1500),
                Bytes::from_static(b"slow release"),
            ),
        );
    }
    let (dir, profile) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let token = api.user_with_domain("alice", HOST, &origin.url()).await?;
    let client = browser(&driver, profile.path()).await?;
    let result = async {
        client.goto(&format!("{}/console/", api.base)).await?;
        client
            .find(Locator::Id("username"))
            .await?
            .send_keys("alice")
            .await?;
        client
            .find(Locator::Id("password"))
            .await?
            .send_keys("alice-password")
            .await?;
        client.find(Locator::Id("login")).await?.click().await?;
        eventually(Duration::from_secs(10), "the task list", || async {
            Ok(client.find_all(Locator::Css("h1")).await?.len() == 1
                && client.current_url().await?.path() == "/console/")
        })
        .await?;

        client.goto(&format!("{}/console/submit", api.base)).await?;
        let urls = format!("{}\n{}", url(HOST, "/a.pak"), url(HOST, "/b.pak"));
        client
            .find(Locator::Id("urls"))
            .await?
            .send_keys(&urls)
            .await?;
        client.find(Locator::Id("submit")).await?.click().await?;
        eventually(Duration::from_secs(10), "the task page", || async {
            Ok(client
                .current_url()
                .await?
                .path()
                .starts_with("/console/tasks/"))
        })
        .await?;
        // A mark on this page's window: a reload would drop it.
        client
            .execute("window.precacheMark = 'still here'; return null;", vec![])
            .await?;
        let first = client.find(Locator::Id("cell-0-0")).await?.text().await?;
        assert_ne!(first, "success", "the origin takes 1.5 s");
        eventually(Duration::from_secs(30), "both cells to succeed", || async {
            let cells = client.find_all(Locator::Css("td.status.success")).await?;
            Ok(cells.len() == 2)
        })
        .await?;
        let status = client
            .find(Locator::Id("task-status"))
            .await?
            .text()
            .await?;
        assert_eq!(status, "done");
        let mark = client
            .execute("return window.precacheMark || null;", vec![])
            .await?;
        assert_eq!(mark, json!("still here"), "the page was reloaded");
        let req_id = client
            .current_url()
            .await?
            .path()
            .trim_start_matches("/console/tasks/")
            .to_string();
        let task = api
            .wait_final(&token, &req_id, Duration::from_secs(5))
            .await?;
        assert_eq!(task["success_rate"], json!(100.0), "{task}");

        client.find(Locator::Id("logout")).await?.click().await?;
        eventually(Duration::from_secs(10), "the log-in form", || async {
            Ok(client.current_url().await?.path() == "/console/login")
        })
        .await?;
        client.goto(&format!("{}/console/", api.base)).await?;
        assert_eq!(client.current_url().await?.path(), "/console/login");
        Ok::<(), Error>(())
    }
    .await;
    let _ = client.close().await;
    result?;
    Ok(())
}
