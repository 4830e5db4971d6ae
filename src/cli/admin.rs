//! `precache admin user|domain|edge|backend add|list|rm` (and `domain cert`): the administration
//! routes from a terminal.

use anyhow::{anyhow, Context};
use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{client, print_json, Common};

/// `precache admin`.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    what: What,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Clone, clap::Subcommand)]
enum What {
    /// Accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Registered domains (备案) and their origins.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Edge nodes.
    #[command(subcommand)]
    Edge(EdgeCommand),
    /// Backends: cache fleets the operator runs, where tasks also run (docs/backends.md).
    #[command(subcommand)]
    Backend(BackendCommand),
}

#[derive(Debug, Clone, clap::Subcommand)]
enum UserCommand {
    /// Create an account; the password is read from standard input or PRECACHE_PASSWORD.
    Add {
        /// Its name.
        name: String,
        /// `user` or `admin`.
        #[arg(long, default_value = "user")]
        role: String,
    },
    /// Every account.
    List,
    /// Delete an account.
    Rm {
        /// Its name.
        name: String,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
enum DomainCommand {
    /// Register a domain for an account.
    Add {
        /// The domain (the `Host` players use).
        domain: String,
        /// Where edges fetch it from, http://HOST or http://HOST:PORT.
        #[arg(long)]
        origin: String,
        /// The account it belongs to.
        #[arg(long)]
        owner: String,
        /// `Host` header sent to the origin, when not the domain.
        #[arg(long)]
        origin_host: Option<String>,
        /// A backend its tasks run on (repeat for several); `edges` (precache's own) when none.
        #[arg(long = "backend")]
        backends: Vec<String>,
    },
    /// Every domain.
    List,
    /// Set the backends a domain's tasks run on, e.g. `edges varnish-sh`.
    Backends {
        /// The domain.
        domain: String,
        /// Backend names (`edges` is precache's own edges).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Unregister a domain.
    Rm {
        /// The domain.
        domain: String,
    },
    /// Give a domain the TLS certificate its players are served with (or remove it); prints
    /// what the certificate says, never the key.
    Cert {
        /// The domain.
        domain: String,
        /// The chain in PEM, leaf first.
        #[arg(long, value_name = "FILE", required_unless_present = "remove")]
        cert: Option<std::path::PathBuf>,
        /// The leaf's private key in PEM.
        #[arg(long, value_name = "FILE", required_unless_present = "remove")]
        key: Option<std::path::PathBuf>,
        /// Remove the domain's certificate instead (its players get no TLS).
        #[arg(long, conflicts_with_all = ["cert", "key"])]
        remove: bool,
    },
}

/// Reads a PEM file named on the command line.
fn read_pem(path: Option<&std::path::Path>, what: &str) -> anyhow::Result<String> {
    let path = path.ok_or_else(|| anyhow!("--{what} FILE is required"))?;
    std::fs::read_to_string(path)
        .with_context(|| format!("read the {what} file {}", path.display()))
}

/// One line about a domain's certificate: subject, names, expiry, fingerprint.
fn print_certificate(domain: &Value) {
    let name = domain["domain"].as_str().unwrap_or("");
    let certificate = &domain["certificate"];
    if certificate.is_null() {
        println!("{name}  no certificate");
        return;
    }
    let sans: Vec<&str> = certificate["sans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!(
        "{name}  subject {}  names {}  not after {}  sha256 {}",
        certificate["subject"].as_str().unwrap_or(""),
        sans.join(","),
        certificate["not_after"].as_str().unwrap_or("?"),
        certificate["sha256"].as_str().unwrap_or(""),
    );
}

#[derive(Debug, Clone, clap::Subcommand)]
enum EdgeCommand {
    /// Create an edge and print its one-time join token.
    Add {
        /// Its name.
        name: String,
        /// The edge it fetches through (its origin shield).
        #[arg(long)]
        parent: Option<String>,
    },
    /// Every edge, its state and backlog.
    List,
    /// Revoke an edge's credential: the control plane stops driving it at once.
    Rm {
        /// Its name.
        name: String,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
enum BackendCommand {
    /// Register a backend.
    Add {
        /// Its name.
        name: String,
        /// `varnish`, `nginx` or `trafficserver`.
        #[arg(long)]
        kind: String,
        /// Base URL of one cache server, http://HOST or http://HOST:PORT (repeat for a fleet).
        #[arg(long = "target", required = true)]
        targets: Vec<String>,
        /// A setting, KEY=VALUE (repeat); VALUE is read as JSON when it parses, else as text:
        /// `--setting concurrency=16 --setting purge_prefix=/purge`.
        #[arg(long = "setting", value_parser = parse_setting)]
        settings: Vec<(String, Value)>,
    },
    /// Every backend, its kind and targets.
    List,
    /// Delete a backend (no domain may name it).
    Rm {
        /// Its name.
        name: String,
    },
    /// Reach every target now; exit status 1 when one cannot be used.
    Check {
        /// Its name.
        name: String,
    },
}

fn parse_setting(text: &str) -> Result<(String, Value), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
    Ok((key.to_string(), value))
}

fn password_from_stdin_or_env() -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("PRECACHE_PASSWORD") {
        return Ok(password);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        return Err(anyhow!(
            "no password on standard input or in PRECACHE_PASSWORD"
        ));
    }
    Ok(password)
}

fn print_rows(rows: &Value, columns: &[&str]) {
    for row in rows.as_array().into_iter().flatten() {
        let cells: Vec<String> = columns
            .iter()
            .map(|column| match &row[*column] {
                Value::String(text) => text.clone(),
                Value::Null => "-".to_string(),
                other => other.to_string(),
            })
            .collect();
        println!("{}", cells.join("  "));
    }
}

/// A call to make, and how to show its answer to people.
type Call<'a> = (Method, String, Option<Value>, &'a dyn Fn(&Value));

/// Runs an admin command.
pub async fn admin(args: AdminArgs) -> anyhow::Result<bool> {
    let client = client(&args.common)?;
    let json_out = args.common.json;
    let (method, path, body, show): Call = match &args.what {
        What::User(UserCommand::Add { name, role }) => (
            Method::POST,
            "/cdn_api/users".into(),
            Some(json!({"name": name, "password": password_from_stdin_or_env()?, "role": role})),
            &|_| {},
        ),
        What::User(UserCommand::List) => (Method::GET, "/cdn_api/users".into(), None, &|answer| {
            print_rows(&answer["users"], &["name", "role", "created_at"])
        }),
        What::User(UserCommand::Rm { name }) => (
            Method::DELETE,
            format!("/cdn_api/users/{name}"),
            None,
            &|_| {},
        ),
        What::Domain(DomainCommand::Add {
            domain,
            origin,
            owner,
            origin_host,
            backends,
        }) => (
            Method::POST,
            "/cdn_api/domains".into(),
            Some(json!({"domain": domain, "origin": origin, "owner": owner,
                        "origin_host": origin_host,
                        "backends": (!backends.is_empty()).then_some(backends)})),
            &|_| {},
        ),
        What::Domain(DomainCommand::Backends { domain, names }) => (
            Method::PUT,
            format!("/cdn_api/domains/{domain}/backends"),
            Some(json!({"backends": names})),
            &|answer| {
                println!(
                    "{}  backends {}",
                    answer["domain"]["domain"].as_str().unwrap_or(""),
                    answer["domain"]["backends"]
                )
            },
        ),
        What::Domain(DomainCommand::List) => {
            (Method::GET, "/cdn_api/domains".into(), None, &|answer| {
                print_rows(&answer["domains"], &["domain", "owner", "origin"])
            })
        }
        What::Domain(DomainCommand::Rm { domain }) => (
            Method::DELETE,
            format!("/cdn_api/domains/{domain}"),
            None,
            &|_| {},
        ),
        What::Domain(DomainCommand::Cert {
            domain,
            remove: true,
            ..
        }) => (
            Method::DELETE,
            format!("/cdn_api/domains/{domain}/certificate"),
            None,
            &|answer| print_certificate(&answer["domain"]),
        ),
        What::Domain(DomainCommand::Cert {
            domain, cert, key, ..
        }) => (
            Method::PUT,
            format!("/cdn_api/domains/{domain}/certificate"),
            Some(json!({
                "cert_pem": read_pem(cert.as_deref(), "cert")?,
                "key_pem": read_pem(key.as_deref(), "key")?,
            })),
            &|answer| print_certificate(&answer["domain"]),
        ),
        What::Edge(EdgeCommand::Add { name, parent }) => (
            Method::POST,
            "/cdn_api/edges".into(),
            Some(json!({"name": name, "parent": parent})),
            &|answer| {
                println!(
                    "join token (shown once, valid until {}):\n{}",
                    answer["join_token_expires_at"].as_str().unwrap_or("?"),
                    answer["join_token"].as_str().unwrap_or("")
                )
            },
        ),
        What::Edge(EdgeCommand::List) => (Method::GET, "/cdn_api/edges".into(), None, &|answer| {
            for edge in answer["edges"].as_array().into_iter().flatten() {
                println!(
                    "{}  {}  parent {}  last seen {}  backlog {} pairs, {} owed purges",
                    edge["name"].as_str().unwrap_or(""),
                    edge["state"].as_str().unwrap_or(""),
                    edge["parent"].as_str().unwrap_or("-"),
                    edge["last_seen_at"].as_str().unwrap_or("never"),
                    edge["backlog"]["pairs"],
                    edge["backlog"]["owed_purges"],
                );
            }
        }),
        What::Edge(EdgeCommand::Rm { name }) => (
            Method::POST,
            format!("/cdn_api/edges/{name}/revoke"),
            None,
            &|_| {},
        ),
        What::Backend(BackendCommand::Add {
            name,
            kind,
            targets,
            settings,
        }) => (
            Method::POST,
            "/cdn_api/backends".into(),
            Some(json!({"name": name, "kind": kind, "targets": targets,
                        "settings": settings.iter().cloned().collect::<serde_json::Map<_, _>>()})),
            &|_| {},
        ),
        What::Backend(BackendCommand::List) => {
            (Method::GET, "/cdn_api/backends".into(), None, &|answer| {
                for backend in answer["backends"].as_array().into_iter().flatten() {
                    let targets: Vec<&str> = backend["targets"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    println!(
                        "{}  {}  {}",
                        backend["name"].as_str().unwrap_or(""),
                        backend["kind"].as_str().unwrap_or(""),
                        targets.join(" ")
                    );
                }
            })
        }
        What::Backend(BackendCommand::Rm { name }) => (
            Method::DELETE,
            format!("/cdn_api/backends/{name}"),
            None,
            &|_| {},
        ),
        What::Backend(BackendCommand::Check { name }) => (
            Method::POST,
            format!("/cdn_api/backends/{name}/check"),
            None,
            &|answer| {
                for target in answer["targets"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {}  {}",
                        target["target"].as_str().unwrap_or(""),
                        if target["ok"] == true { "ok" } else { "FAILED" },
                        target["reason"].as_str().unwrap_or("")
                    );
                }
            },
        ),
    };
    let answer = client.call(method, &path, body.as_ref()).await?;
    if json_out {
        print_json(&answer);
    } else {
        show(&answer);
        if matches!(answer.get("msg"), Some(Value::String(msg)) if msg == "OK") {
            eprintln!("OK");
        }
    }
    // A check that found a target it cannot use is a failed command.
    Ok(answer.get("ok") != Some(&Value::Bool(false)))
}
