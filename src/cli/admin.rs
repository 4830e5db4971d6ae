//! `precache admin user|domain|edge add|list|rm`: the administration routes from a terminal.

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
        /// Where edges fetch it from, http://host[:port].
        #[arg(long)]
        origin: String,
        /// The account it belongs to.
        #[arg(long)]
        owner: String,
        /// `Host` header sent to the origin, when not the domain.
        #[arg(long)]
        origin_host: Option<String>,
    },
    /// Every domain.
    List,
    /// Unregister a domain.
    Rm {
        /// The domain.
        domain: String,
    },
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
        }) => (
            Method::POST,
            "/cdn_api/domains".into(),
            Some(
                json!({"domain": domain, "origin": origin, "owner": owner, "origin_host": origin_host}),
            ),
            &|_| {},
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
    Ok(true)
}
