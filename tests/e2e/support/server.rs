//! The real `precache serve` (or `api`, or `edge`) process, on free loopback ports, with its own
//! data dir.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The admin password every test server starts with.
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
/// The secret of every test server's embedded edge admin protocol.
pub const EDGE_ADMIN_SECRET: &str = "edge-admin-secret-for-tests";

/// With `PRECACHE_TEST_BACKEND=postgres`, the URL of a throwaway PostgreSQL cluster for the server
/// of `data_dir`: the same one every time that data dir starts (restart tests), kept for the life
/// of the test process and stopped when it exits.
fn postgres_for(data_dir: &Path) -> Option<String> {
    if !std::env::var("PRECACHE_TEST_BACKEND").is_ok_and(|backend| backend == "postgres") {
        return None;
    }
    static CLUSTERS: Mutex<Vec<(std::path::PathBuf, super::pg_cluster::PgCluster)>> =
        Mutex::new(Vec::new());
    let mut clusters = CLUSTERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, cluster)) = clusters.iter().find(|(dir, _)| dir == data_dir) {
        return Some(cluster.url());
    }
    let cluster = super::pg_cluster::PgCluster::start()?;
    let url = cluster.url();
    clusters.push((data_dir.to_path_buf(), cluster));
    Some(url)
}

/// A running server. Killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    /// Base URL of the API, e.g. `http://127.0.0.1:40001`.
    pub api: String,
    /// Address of the edge's data plane, e.g. `127.0.0.1:40002`.
    pub edge: String,
    /// Base URL of the edge's admin protocol, e.g. `http://127.0.0.1:40003`.
    pub edge_admin: String,
    /// Address of the edge's TLS listener for players (`--edge-tls-listen`), e.g.
    /// `127.0.0.1:40004`, when it has one.
    pub edge_tls: Option<String>,
    stderr: Arc<Mutex<String>>,
}

/// How a server is started.
#[derive(Clone, Default)]
pub struct Options {
    /// Extra flags after `serve`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Do not set `PRECACHE_ADMIN_PASSWORD`.
    pub no_admin_password: bool,
    /// A database other than the data dir's SQLite file.
    pub database_url: Option<String>,
    /// The subcommand: `serve` when empty, or `api`, `edge`.
    pub role: &'static str,
    /// A program (and its arguments) that runs the binary, e.g. `prlimit --nofile=...`.
    pub wrapper: Vec<String>,
}

impl Options {
    /// The defaults with these extra flags after the subcommand.
    pub fn with_args(args: &[&str]) -> Options {
        Options {
            args: args.iter().map(|arg| arg.to_string()).collect(),
            ..Options::default()
        }
    }
}

impl Server {
    /// Starts a server on `data_dir` with the default test options.
    pub fn start(data_dir: &Path) -> std::io::Result<Server> {
        Server::start_with(data_dir, Options::default())
    }

    /// Starts a server and waits until it prints its addresses (it is ready then).
    pub fn start_with(data_dir: &Path, options: Options) -> std::io::Result<Server> {
        let mut command = match options.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(env!("CARGO_BIN_EXE_precache"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_precache")),
        };
        let role = if options.role.is_empty() {
            "serve"
        } else {
            options.role
        };
        command.arg(role).arg("--data-dir").arg(data_dir);
        // Free ports unless the test chose its own.
        for flag in ["--api-listen", "--edge-listen"] {
            if !options.args.iter().any(|arg| arg == flag) {
                command.args([flag, "127.0.0.1:0"]);
            }
        }
        command
            // Quick retries keep the flaky-origin tests short.
            .args(["--task-backoff", "100ms"])
            .args(&options.args)
            .env_remove("PRECACHE_ADMIN_PASSWORD")
            .env(
                "RUST_LOG",
                "info,pingora_core=warn,pingora_proxy=warn,pingora_cache=error",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, _) in std::env::vars() {
            if name.starts_with("PRECACHE_") {
                command.env_remove(name);
            }
        }
        if !options.no_admin_password {
            command.env("PRECACHE_ADMIN_PASSWORD", ADMIN_PASSWORD);
        }
        command.env("PRECACHE_EDGE_ADMIN_SECRET", EDGE_ADMIN_SECRET);
        if let Some(url) = &options.database_url {
            command.env("PRECACHE_DATABASE_URL", url);
        } else if role == "edge" {
            // Edges have no database.
        } else if let Some(url) = postgres_for(data_dir) {
            command.env("PRECACHE_DATABASE_URL", url);
        }
        for (name, value) in &options.env {
            command.env(name, value);
        }
        let mut child = command.spawn()?;
        let stderr_pipe = child
            .stderr
            .take()
            .ok_or_else(|| std::io::Error::other("no stderr pipe"))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let (ready_sender, ready) = std::sync::mpsc::channel::<String>();
        let log = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                if line.starts_with("precache: serving ") {
                    let _ = ready_sender.send(line.clone());
                }
                let mut log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let line = match ready.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = stderr.lock().map(|log| log.clone()).unwrap_or_default();
                return Err(std::io::Error::other(format!(
                    "server did not become ready; its log:\n{log}"
                )));
            }
        };
        let field = |name: &str| -> String {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(name))
                .unwrap_or_default()
                .to_string()
        };
        let api = field("api=");
        let edge = field("edge=").trim_start_matches("http://").to_string();
        let edge_admin = field("edge_admin=");
        let edge_tls = Some(field("edge_tls="))
            .filter(|address| !address.is_empty())
            .map(|address| address.trim_start_matches("https://").to_string());
        Ok(Server {
            child,
            api,
            edge,
            edge_admin,
            edge_tls,
            stderr,
        })
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        self.stderr
            .lock()
            .map(|log| log.clone())
            .unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory (VmHWM) of the process, in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` and waits (at most `limit`) for the exit; returns the status and the time
    /// it took.
    pub fn stop_with(
        mut self,
        signal: i32,
        limit: Duration,
    ) -> std::io::Result<(ExitStatus, Duration)> {
        let started = Instant::now();
        if send_signal(self.child.id(), signal) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status, started.elapsed()));
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(std::io::Error::other(format!(
                    "server still running {limit:?} after signal {signal}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and wait for the exit.
    pub fn terminate(self) -> std::io::Result<(ExitStatus, Duration)> {
        self.stop_with(libc::SIGTERM, Duration::from_secs(20))
    }
}

fn send_signal(pid: u32, signal: i32) -> i32 {
    // kill(1) rather than libc::kill keeps the tests free of unsafe code.
    match Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
    {
        Ok(status) if status.success() => 0,
        _ => -1,
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
