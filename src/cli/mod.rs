//! The operator's command line: `precache login`, `prefetch`, `refresh`, `status`, `tasks`,
//! `quota` and `admin`, talking to any control plane by URL over the HTTP API.
//!
//! Output is for people by default and JSON with `--json`; the exit status is 1 when any URL
//! failed or was refused (they are listed), 2 when the command itself could not run.

mod admin;
mod client;
mod follow;
mod session;
mod submit;

use anyhow::{anyhow, Context};
use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::client::Client;
use crate::cli::submit::Targets;

/// Options every client command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// The control plane's URL (default: the one `precache login` saved) [env: PRECACHE_CONTROL]
    #[arg(long, global = true)]
    control: Option<String>,
    /// The API token (default: the one `precache login` saved) [env: PRECACHE_TOKEN]
    #[arg(long, global = true)]
    token: Option<String>,
    /// Print JSON for scripts instead of text for people.
    #[arg(long, global = true)]
    json: bool,
}

/// `precache login`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoginArgs {
    /// The account.
    #[arg(long)]
    user: String,
    /// Read the password from standard input (otherwise PRECACHE_PASSWORD, or a prompt).
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    common: Common,
}

/// `precache prefetch`.
#[derive(Debug, Clone, clap::Args)]
pub struct PrefetchArgs {
    #[command(flatten)]
    targets: Targets,
    /// Follow the tasks to their end with live progress.
    #[arg(long)]
    wait: bool,
    /// POST each task's final status here when it ends.
    #[arg(long)]
    callback_url: Option<String>,
    #[command(flatten)]
    common: Common,
}

/// `precache refresh`.
#[derive(Debug, Clone, clap::Args)]
pub struct RefreshArgs {
    #[command(flatten)]
    targets: Targets,
    /// Directories (URL prefixes ending in `/`) to refresh as a whole.
    #[arg(long = "dir", value_name = "URL")]
    dirs: Vec<String>,
    /// `delete` (the default) or `invalidate` (keep, revalidate on the next request).
    #[arg(long)]
    mode: Option<String>,
    /// Only count what would be purged.
    #[arg(long)]
    dry_run: bool,
    /// Prefetch the URLs again once every edge confirmed the purge.
    #[arg(long)]
    then_prefetch: bool,
    /// Follow the tasks to their end with live progress.
    #[arg(long)]
    wait: bool,
    /// POST each task's final status here when it ends.
    #[arg(long)]
    callback_url: Option<String>,
    #[command(flatten)]
    common: Common,
}

/// `precache status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The task's `reqId`.
    req_id: String,
    /// Follow it to its end with live progress.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    common: Common,
}

/// `precache tasks`.
#[derive(Debug, Clone, clap::Args)]
pub struct TasksArgs {
    /// `prefetch` or `refresh`.
    #[arg(long = "type")]
    kind: Option<String>,
    /// `waiting`, `running`, `done`, `failed` or `cancelled`.
    #[arg(long)]
    status: Option<String>,
    /// Only this domain's.
    #[arg(long)]
    domain: Option<String>,
    /// How many (newest first).
    #[arg(long, default_value_t = 20)]
    limit: u32,
    #[command(flatten)]
    common: Common,
}

/// `precache quota`.
#[derive(Debug, Clone, clap::Args)]
pub struct QuotaArgs {
    #[command(flatten)]
    common: Common,
}

/// The outcome of a command: the exit status.
pub type Exit = std::process::ExitCode;

fn client(common: &Common) -> anyhow::Result<Client> {
    let saved = session::load()?;
    let control = common
        .control
        .clone()
        .or_else(|| std::env::var("PRECACHE_CONTROL").ok())
        .or_else(|| saved.as_ref().map(|s| s.control.clone()))
        .ok_or_else(|| anyhow!("no control plane: run `precache login --control URL --user NAME` or pass --control"))?;
    let token = common
        .token
        .clone()
        .or_else(|| std::env::var("PRECACHE_TOKEN").ok())
        .or_else(|| saved.map(|s| s.token));
    Client::new(&control, token)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// Runs a client command and turns its result into the exit status.
pub fn run(command: impl std::future::Future<Output = anyhow::Result<bool>>) -> Exit {
    let result = runtime().and_then(|runtime| runtime.block_on(command));
    match result {
        Ok(true) => Exit::SUCCESS,
        Ok(false) => Exit::from(1),
        Err(error) => {
            eprintln!("precache: error: {error:#}");
            Exit::from(2)
        }
    }
}

/// `precache login`: asks for a token and keeps it. `Ok(true)` when it worked.
pub async fn login(args: LoginArgs) -> anyhow::Result<bool> {
    let control = args
        .common
        .control
        .clone()
        .or_else(|| std::env::var("PRECACHE_CONTROL").ok())
        .ok_or_else(|| anyhow!("--control URL is required to log in"))?;
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("read the password")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else if let Ok(password) = std::env::var("PRECACHE_PASSWORD") {
        password
    } else {
        rpassword::prompt_password(format!("password for {}: ", args.user))
            .context("read the password")?
    };
    let client = Client::new(&control, None)?;
    let answer = client
        .call(
            Method::POST,
            "/cdn_api/auth/tokens",
            Some(&json!({"username": args.user, "password": password})),
        )
        .await?;
    let token = answer["token"]["id"]
        .as_str()
        .ok_or_else(|| anyhow!("the control plane answered without a token"))?;
    let saved = session::Session {
        control: client.control.clone(),
        user: args.user.clone(),
        token: token.to_string(),
        expires_at: answer["token"]["expires_at"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    };
    let path = session::save(&saved)?;
    if args.common.json {
        print_json(
            &json!({"user": saved.user, "control": saved.control, "expires_at": saved.expires_at, "saved_to": path}),
        );
    } else {
        println!(
            "logged in to {} as {} until {} (token saved in {})",
            saved.control,
            saved.user,
            saved.expires_at,
            path.display()
        );
    }
    Ok(true)
}

/// The summary of a submission (and of the tasks it followed); `true` when nothing failed.
fn report(kind: &str, outcome: &submit::Outcome, tasks: Option<&[Value]>, json_out: bool) -> bool {
    let failures = tasks.map(follow::failures).unwrap_or_default();
    let ok = outcome.refused.is_empty() && failures.is_empty();
    if json_out {
        let mut value = submit::outcome_json(outcome);
        if let Some(tasks) = tasks {
            value["tasks"] = json!(tasks);
        }
        value["ok"] = json!(ok);
        print_json(&value);
        return ok;
    }
    let urls: usize = outcome
        .accepted
        .iter()
        .map(|(_, chunk)| chunk.urls.len() + chunk.dirs.len())
        .sum();
    println!(
        "{kind}: {} task(s) accepted for {urls} URL(s){}",
        outcome.accepted.len(),
        if outcome.refused.is_empty() {
            String::new()
        } else {
            format!(
                ", {} URL(s) refused",
                outcome
                    .refused
                    .iter()
                    .map(|(urls, _)| urls.len())
                    .sum::<usize>()
            )
        }
    );
    match tasks {
        Some(tasks) => {
            for task in tasks {
                println!(
                    "  {}  {}  {}%",
                    task["reqId"].as_str().unwrap_or(""),
                    task["status"].as_str().unwrap_or(""),
                    task["success_rate"]
                );
            }
        }
        None => {
            for (req_id, chunk) in &outcome.accepted {
                println!(
                    "  {req_id}  {}  {} URL(s)",
                    chunk.domain,
                    chunk.urls.len() + chunk.dirs.len()
                );
            }
        }
    }
    for (urls, reason) in &outcome.refused {
        println!("refused ({reason}):");
        for url in urls {
            println!("  {url}");
        }
    }
    if !failures.is_empty() {
        println!("failed:");
        for line in &failures {
            println!("  {line}");
        }
    }
    ok
}

/// Submits `urls` and `dirs` as `kind` requests (each body from `body_of`, with the callback
/// URL added), follows them with `wait`, and reports; `true` when nothing failed.
async fn submit_and_report(
    common: &Common,
    kind: &'static str,
    targets: &Targets,
    dirs: &[String],
    wait: bool,
    callback_url: Option<&str>,
    body_of: impl Fn(&submit::Chunk) -> Value,
) -> anyhow::Result<bool> {
    let client = client(common)?;
    let urls = submit::read_targets(targets)?;
    submit::require_some(&urls, dirs)?;
    let (chunks, invalid) = submit::chunks(&urls, dirs, targets.batch);
    let with_callback = |chunk: &submit::Chunk| {
        let mut body = body_of(chunk);
        if let Some(url) = callback_url {
            body["callback_url"] = json!(url);
        }
        body
    };
    let mut outcome = submit::submit_all(&client, kind, chunks, with_callback, common.json).await;
    if !invalid.is_empty() {
        outcome
            .refused
            .push((invalid, "not an absolute http:// URL".into()));
    }
    let tasks = if wait {
        let ids: Vec<String> = outcome.accepted.iter().map(|(id, _)| id.clone()).collect();
        Some(follow::follow_all(&client, kind, &ids, common.json).await)
    } else {
        None
    };
    Ok(report(kind, &outcome, tasks.as_deref(), common.json))
}

/// `precache prefetch`.
pub async fn prefetch(args: PrefetchArgs) -> anyhow::Result<bool> {
    submit_and_report(
        &args.common,
        "prefetch",
        &args.targets,
        &[],
        args.wait,
        args.callback_url.as_deref(),
        |chunk| json!({"urls": chunk.urls}),
    )
    .await
}

/// `precache refresh`.
pub async fn refresh(args: RefreshArgs) -> anyhow::Result<bool> {
    submit_and_report(
        &args.common,
        "refresh",
        &args.targets,
        &args.dirs,
        args.wait,
        args.callback_url.as_deref(),
        |chunk| {
            let mut body = json!({"urls": chunk.urls, "dirs": chunk.dirs});
            if let Some(mode) = &args.mode {
                body["mode"] = json!(mode);
            }
            if args.dry_run {
                body["dry_run"] = json!(true);
            }
            if args.then_prefetch {
                body["prefetch"] = json!(true);
            }
            body
        },
    )
    .await
}

/// The task `req_id`, whichever kind it is, with its kind.
async fn find_task(client: &Client, req_id: &str) -> anyhow::Result<(&'static str, Value)> {
    for kind in ["prefetch", "refresh"] {
        match client
            .call(Method::GET, &format!("/cdn_api/{kind}/{req_id}"), None)
            .await
        {
            Ok(task) => return Ok((kind, task)),
            Err(refused) if refused.ret == 3001 => continue,
            Err(refused) => return Err(refused.into()),
        }
    }
    Err(anyhow!("no task {req_id} for your account"))
}

fn print_task(task: &Value) {
    println!(
        "{}  {} {}  {}  success {}%  ({} of {} pairs finished)",
        task["reqId"].as_str().unwrap_or(""),
        task["type"].as_str().unwrap_or(""),
        task["domain"].as_str().unwrap_or(""),
        task["status"].as_str().unwrap_or(""),
        task["success_rate"],
        task["pairs_finished"],
        task["pairs_total"],
    );
    for url in task["urls"].as_array().into_iter().flatten() {
        println!(
            "  {}  {}",
            url["status"].as_str().unwrap_or(""),
            url["url"].as_str().unwrap_or("")
        );
        for pair in url["edges"].as_array().into_iter().flatten() {
            let mut line = format!(
                "    {}  {}  {} bytes",
                pair["edge"].as_str().unwrap_or("?"),
                pair["status"].as_str().unwrap_or(""),
                pair["bytes"].as_u64().unwrap_or(0)
            );
            if let Some(expected) = pair["expected_bytes"].as_u64() {
                line.push_str(&format!(" of {expected}"));
            }
            if let Some(error) = pair["error"].as_str() {
                line.push_str(&format!("  {error}"));
            }
            println!("{line}");
        }
    }
}

/// `precache status REQID`.
pub async fn status(args: StatusArgs) -> anyhow::Result<bool> {
    let client = client(&args.common)?;
    let (kind, mut task) = find_task(&client, &args.req_id).await?;
    if args.wait {
        task = follow::follow_all(
            &client,
            kind,
            std::slice::from_ref(&args.req_id),
            args.common.json,
        )
        .await
        .pop()
        .unwrap_or(task);
    }
    let failures = follow::failures(std::slice::from_ref(&task));
    if args.common.json {
        print_json(&task);
    } else {
        print_task(&task);
    }
    let ended = matches!(
        task["status"].as_str(),
        Some("done" | "failed" | "cancelled")
    );
    Ok(failures.is_empty() || !ended)
}

/// `precache tasks`.
pub async fn tasks(args: TasksArgs) -> anyhow::Result<bool> {
    let client = client(&args.common)?;
    let mut query = vec![format!("limit={}", args.limit)];
    for (name, value) in [
        ("type", &args.kind),
        ("status", &args.status),
        ("domain", &args.domain),
    ] {
        if let Some(value) = value {
            query.push(format!("{name}={value}"));
        }
    }
    let answer = client
        .call(
            Method::GET,
            &format!("/cdn_api/tasks?{}", query.join("&")),
            None,
        )
        .await?;
    if args.common.json {
        print_json(&answer["tasks"]);
        return Ok(true);
    }
    for task in answer["tasks"].as_array().into_iter().flatten() {
        println!(
            "{}  {:8}  {:9}  {:6}%  {}  {}",
            task["reqId"].as_str().unwrap_or(""),
            task["type"].as_str().unwrap_or(""),
            task["status"].as_str().unwrap_or(""),
            task["success_rate"],
            task["created_at"].as_str().unwrap_or(""),
            task["domain"].as_str().unwrap_or(""),
        );
    }
    Ok(true)
}

/// `precache quota`.
pub async fn quota(args: QuotaArgs) -> anyhow::Result<bool> {
    let client = client(&args.common)?;
    let answer = client.call(Method::GET, "/cdn_api/quota", None).await?;
    if args.common.json {
        print_json(&answer);
        return Ok(true);
    }
    let mut fields: Vec<(&String, &Value)> = answer
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| key.as_str() != "ret" && key.as_str() != "msg")
        .collect();
    fields.sort_by_key(|(key, _)| key.as_str());
    for (key, value) in fields {
        println!("{key}: {value}");
    }
    Ok(true)
}

pub use admin::{admin, AdminArgs};
