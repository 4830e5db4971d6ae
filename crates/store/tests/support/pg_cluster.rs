//! A throwaway PostgreSQL cluster for one test, from the system's PostgreSQL binaries.
//!
//! `initdb` into a temp dir, the server listening only on a Unix socket in that dir, stopped
//! (and the dir removed) when the guard drops. `initdb` refuses to run as root, so as root the
//! binaries run as the `postgres` user that Debian's package creates. Without PostgreSQL the test
//! is skipped with a message, unless `PRECACHE_REQUIRE_PG=1`, which makes it fail instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};

/// A running cluster; stopped on drop, and in any case when the test process exits.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    /// The write end of a pipe a small shell waits on: when this process exits (even killed),
    /// the shell reads end-of-file and stops the cluster, so no server outlives the tests.
    _reaper: Option<std::process::ChildStdin>,
}

/// Socket "ports" only name the socket file; distinct ones keep parallel clusters apart.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

fn find_bin() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .collect();
    candidates.sort();
    candidates.push(PathBuf::from("/usr/local/bin"));
    candidates.push(PathBuf::from("/usr/bin"));
    candidates
        .into_iter()
        .rev()
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgCluster {
    /// Starts a cluster, or `None` (with a message) when PostgreSQL is not installed.
    pub fn start() -> Option<PgCluster> {
        let required = std::env::var("PRECACHE_REQUIRE_PG").is_ok_and(|v| v == "1");
        let Some(bin) = find_bin() else {
            assert!(
                !required,
                "PRECACHE_REQUIRE_PG=1 but no PostgreSQL binaries were found"
            );
            eprintln!("SKIPPED: PostgreSQL is not installed (initdb/pg_ctl not found); this test ran on SQLite only");
            return None;
        };
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("precache-pg-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        if as_postgres {
            let status = Command::new("chown")
                .args(["postgres:", &dir.path().display().to_string()])
                .status()
                .expect("chown");
            assert!(status.success(), "chown the cluster dir to postgres");
        }
        let port = 20_000
            + (std::process::id() % 20_000) as u16
            + NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let mut cluster = PgCluster {
            dir,
            bin,
            port,
            as_postgres,
            _reaper: None,
        };
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        );
        cluster.start_server();
        let stop = format!(
            "{}'{}' -D '{}' -m immediate -w stop; rm -rf '{}'",
            if cluster.as_postgres {
                "runuser -u postgres -- "
            } else {
                ""
            },
            cluster.bin.join("pg_ctl").display(),
            data.display(),
            cluster.dir.path().display()
        );
        // In a session of its own, so that whatever ends the test process's group spares it.
        cluster._reaper = Command::new("setsid")
            .args(["sh", "-c"])
            .arg(format!("read _; {stop}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
            .and_then(|mut child| child.stdin.take());
        Some(cluster)
    }

    /// Starts the server on the cluster's socket (again, after [`PgCluster::stop_server`]).
    pub fn start_server(&self) {
        let options = format!(
            "-c listen_addresses='' -k {} -p {} -c fsync=off",
            self.dir.path().display(),
            self.port
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir().display().to_string(),
                "-o",
                &options,
                "-l",
                &self.dir.path().join("log").display().to_string(),
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server as an operator's restart does (`pg_ctl -m fast`: sessions are cut,
    /// committed data stays); [`PgCluster::start_server`] brings it back.
    #[allow(dead_code)] // Used by the end-to-end fault tests, not by the store's.
    pub fn stop_server(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir().display().to_string(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, program: &str, args: &[&str]) {
        let binary = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&binary);
            command
        } else {
            Command::new(&binary)
        };
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()));
        assert!(
            output.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The URL of the cluster's `postgres` database, over its Unix socket.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@localhost:{}/postgres?host={}",
            self.port,
            self.socket_dir().display()
        )
    }

    fn socket_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data_dir().display().to_string();
        let binary = self.bin.join("pg_ctl");
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&binary);
            command
        } else {
            Command::new(&binary)
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
