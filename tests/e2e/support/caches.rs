//! Real caches on loopback (Varnish, nginx with ngx_cache_purge, Apache Traffic Server), each
//! configured with the files of `docs/backends/` verbatim, for the backend tests.
//!
//! Each function renders the documented configuration into a temp dir of its own with a free
//! port on 127.0.0.1, starts the system's daemon in the foreground in a process group of its
//! own, and waits (bounded) until it answers. The group is killed when the [`CacheServer`]
//! drops, and by a small reaper shell when the test process dies first. Without the daemon
//! the function answers `Ok(None)` after printing `SKIPPED: ...`, unless
//! `PRECACHE_REQUIRE_CACHES=1`, which makes it panic instead. The system services and their
//! configuration (/etc/varnish, /etc/nginx, /etc/trafficserver) are never used.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The documented Varnish VCL.
const VARNISH_VCL: &str = include_str!("../../../docs/backends/varnish.vcl");
/// The documented nginx top-level line that loads ngx_cache_purge.
const NGINX_LOAD_MODULE: &str = include_str!("../../../docs/backends/nginx-load-module.conf");
/// The documented nginx `http { }` snippet: cache zone, server, purge location.
const NGINX_CACHE_PURGE: &str = include_str!("../../../docs/backends/nginx-cache-purge.conf");
/// The documented Traffic Server settings.
const TS_RECORDS: &str = include_str!("../../../docs/backends/trafficserver/records.config");
/// The documented Traffic Server remap rule.
const TS_REMAP: &str = include_str!("../../../docs/backends/trafficserver/remap.config");
/// The documented Traffic Server access rules.
const TS_IP_ALLOW: &str = include_str!("../../../docs/backends/trafficserver/ip_allow.yaml");
/// The documented Traffic Server cache storage.
const TS_STORAGE: &str = include_str!("../../../docs/backends/trafficserver/storage.config");

/// How long a daemon may take to answer on its port (Varnish compiles its VCL with cc first).
const READY_LIMIT: Duration = Duration::from_secs(60);
/// Starts tried before giving up: another process may take the free port we picked before the
/// daemon binds it.
const START_ATTEMPTS: usize = 3;

/// A running cache; its whole process group is killed on drop.
pub struct CacheServer {
    /// Where GET, PURGE, BAN and `/purge` requests go (127.0.0.1).
    pub addr: SocketAddr,
    /// Which daemon this is, for messages.
    pub kind: &'static str,
    child: Child,
    output: Arc<Mutex<String>>,
    /// A shell in a session of its own that kills the group when its stdin closes, i.e. when
    /// this test process ends without running our Drop (a panic that aborts, a kill).
    reaper: Option<Child>,
    /// Removed after the processes are killed (fields drop after `Drop::drop`).
    _dir: tempfile::TempDir,
}

impl CacheServer {
    /// Everything the daemon wrote to stdout and stderr so far (its error log).
    pub fn log(&self) -> String {
        self.output
            .lock()
            .map(|log| log.clone())
            .unwrap_or_default()
    }
}

impl Drop for CacheServer {
    fn drop(&mut self) {
        // The reaper first, so that it never signals a group whose id was reused.
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
        kill_group(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGKILL to every process of the group `pgid` (the daemon and its workers).
fn kill_group(pgid: u32) {
    // kill(1) rather than libc::kill keeps the tests free of unsafe code.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Varnish (`varnishd`) with `docs/backends/varnish.vcl`, proxying to `origin`.
pub fn varnish(origin: SocketAddr) -> std::io::Result<Option<CacheServer>> {
    let Some(varnishd) = find_program("varnishd") else {
        return skipped("varnishd is not installed (Debian package varnish)");
    };
    let vcl = render(VARNISH_VCL, &origin_values(origin))?;
    launch("varnish", None, |dir, listen| {
        let vcl_path = dir.join("precache.vcl");
        std::fs::write(&vcl_path, &vcl)?;
        let mut command = Command::new(&varnishd);
        command
            // In the foreground; no privilege separation (as root it would switch to the
            // varnish users, which cannot read our temp dir); no management port, so
            // instances never share one.
            .args(["-F", "-j", "none", "-T", "none"])
            .arg("-a")
            .arg(listen.to_string())
            .arg("-f")
            .arg(&vcl_path)
            .arg("-n")
            .arg(dir.join("varnish"))
            .args(["-s", "malloc,64m"]);
        Ok(command)
    })
    .map(Some)
}

/// nginx with `docs/backends/nginx-load-module.conf` and `nginx-cache-purge.conf`, proxying to
/// `origin`.
pub fn nginx(origin: SocketAddr) -> std::io::Result<Option<CacheServer>> {
    let Some(nginx) = find_program("nginx") else {
        return skipped("nginx is not installed (Debian package nginx)");
    };
    let module = NGINX_LOAD_MODULE
        .lines()
        .find_map(|line| line.trim().strip_prefix("load_module "))
        .map(|rest| PathBuf::from(rest.trim_end_matches(';').trim()))
        .ok_or_else(|| std::io::Error::other("nginx-load-module.conf has no load_module line"))?;
    if !module.exists() {
        return skipped(&format!(
            "{} is not installed (Debian package libnginx-mod-http-cache-purge)",
            module.display()
        ));
    }
    let as_root = is_root();
    launch("nginx", None, |dir, listen| {
        let cache_dir = dir.join("cache");
        std::fs::create_dir_all(&cache_dir)?;
        let mut values = origin_values(origin);
        values.extend(listen_values(listen));
        values.push(("CACHE_DIR", cache_dir.display().to_string()));
        std::fs::write(
            dir.join("precache.conf"),
            render(NGINX_CACHE_PURGE, &values)?,
        )?;
        let dir_text = dir.display();
        // The top level an nginx.conf has around the documented parts, with every path in our
        // dir. As root, workers would run as nobody, who cannot write the temp dir.
        let main = format!(
            "{NGINX_LOAD_MODULE}\n\
             daemon off;\n\
             worker_processes 1;\n\
             {user}\
             pid {dir_text}/nginx.pid;\n\
             error_log stderr notice;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             \x20   access_log off;\n\
             \x20   client_body_temp_path {dir_text}/client_body;\n\
             \x20   proxy_temp_path {dir_text}/proxy_temp;\n\
             \x20   fastcgi_temp_path {dir_text}/fastcgi_temp;\n\
             \x20   uwsgi_temp_path {dir_text}/uwsgi_temp;\n\
             \x20   scgi_temp_path {dir_text}/scgi_temp;\n\
             \x20   include {dir_text}/precache.conf;\n\
             }}\n",
            user = if as_root { "user root root;\n" } else { "" },
        );
        let main_path = dir.join("nginx.conf");
        std::fs::write(&main_path, main)?;
        let mut command = Command::new(&nginx);
        // -e: errors before the configuration is read go to stderr too, not /var/log/nginx.
        command
            .args(["-e", "stderr", "-p"])
            .arg(dir)
            .arg("-c")
            .arg(&main_path);
        Ok(command)
    })
    .map(Some)
}

/// Apache Traffic Server (`traffic_server`, without `traffic_manager`) with
/// `docs/backends/trafficserver/`, proxying to `origin`.
pub fn trafficserver(origin: SocketAddr) -> std::io::Result<Option<CacheServer>> {
    let Some(traffic_server) = find_program("traffic_server") else {
        return skipped("traffic_server is not installed (Debian package trafficserver)");
    };
    let libdir = Path::new("/usr/lib/trafficserver");
    let remap = render(TS_REMAP, &origin_values(origin))?;
    // It may print "fully initialized" before the cache is enabled; answering before that would
    // not store the first object.
    launch("trafficserver", Some("cache enabled"), |dir, listen| {
        let etc = dir.join("etc");
        let cache_dir = dir.join("cache");
        for sub in ["etc", "cache", "run", "log", "var", "body_factory"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        // A runroot of our own: configuration, cache, logs and runtime files in this dir,
        // binaries and plugins from the package. Nothing under /etc/trafficserver is read.
        let runroot = format!(
            "prefix: {d}\nexec_prefix: /usr\nbindir: /usr/bin\nsbindir: /usr/sbin\n\
             sysconfdir: {d}/etc\ndatadir: {d}/cache\nincludedir: /usr/include\n\
             libdir: {lib}\nlibexecdir: {lib}/modules\nlocalstatedir: {d}/var\n\
             runtimedir: {d}/run\nlogdir: {d}/log\ncachedir: {d}/cache\n",
            d = dir.display(),
            lib = libdir.display(),
        );
        let runroot_path = dir.join("runroot.yaml");
        std::fs::write(&runroot_path, runroot)?;
        // The documented settings, then the ones of this test run: keep our user (as root it
        // would switch to an account that cannot write here); error pages from our empty dir
        // rather than the package's, and without a body (with no template and bodies on, a
        // refused request gets no answer at all); the diagnostic log on stderr, for log().
        let records = format!(
            "{}\n\
             CONFIG proxy.config.admin.user_id STRING #-1\n\
             CONFIG proxy.config.body_factory.template_sets_dir STRING {}\n\
             CONFIG proxy.config.body_factory.response_suppression_mode INT 1\n\
             CONFIG proxy.config.diags.logfile.filename STRING stderr\n",
            render(TS_RECORDS, &listen_values(listen))?,
            dir.join("body_factory").display(),
        );
        std::fs::write(etc.join("records.config"), records)?;
        std::fs::write(etc.join("remap.config"), &remap)?;
        std::fs::write(etc.join("ip_allow.yaml"), TS_IP_ALLOW)?;
        std::fs::write(
            etc.join("storage.config"),
            render(
                TS_STORAGE,
                &[("CACHE_DIR", cache_dir.display().to_string())],
            )?,
        )?;
        // Files it reads at start that the documented configuration leaves empty.
        for empty in [
            "plugin.config",
            "cache.config",
            "hosting.config",
            "volume.config",
            "parent.config",
            "splitdns.config",
            "socks.config",
            "ssl_multicert.config",
        ] {
            std::fs::write(etc.join(empty), "")?;
        }
        let mut command = Command::new(&traffic_server);
        command.arg(format!("--run-root={}", runroot_path.display()));
        Ok(command)
    })
    .map(Some)
}

/// What a missing daemon answers: a skip, or a panic under `PRECACHE_REQUIRE_CACHES=1`.
fn skipped(what: &str) -> std::io::Result<Option<CacheServer>> {
    let required = std::env::var("PRECACHE_REQUIRE_CACHES").is_ok_and(|value| value == "1");
    assert!(!required, "PRECACHE_REQUIRE_CACHES=1 but {what}");
    eprintln!("SKIPPED: {what}; this test needs it");
    Ok(None)
}

/// `program` in `PATH` or in the sbin directories a non-root `PATH` may lack.
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin"]
                .into_iter()
                .map(PathBuf::from),
        )
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn origin_values(origin: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("ORIGIN_HOST", origin.ip().to_string()),
        ("ORIGIN_PORT", origin.port().to_string()),
    ]
}

fn listen_values(listen: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("LISTEN_HOST", listen.ip().to_string()),
        ("LISTEN_PORT", listen.port().to_string()),
    ]
}

/// `template` with each `{{NAME}}` replaced; an error when one is left.
fn render(template: &str, values: &[(&str, String)]) -> std::io::Result<String> {
    let mut text = template.to_string();
    for (name, value) in values {
        text = text.replace(&format!("{{{{{name}}}}}"), value);
    }
    // Comments may name placeholders; configuration lines may not keep one.
    let left = text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .find(|line| line.contains("{{"));
    match left {
        Some(line) => Err(std::io::Error::other(format!(
            "placeholder left unreplaced in: {line}"
        ))),
        None => Ok(text),
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Starts the command `configure` writes for a fresh temp dir and a free port, until one start
/// answers on its port (and printed `ready_marker`, when given).
fn launch(
    kind: &'static str,
    ready_marker: Option<&str>,
    configure: impl Fn(&Path, SocketAddr) -> std::io::Result<Command>,
) -> std::io::Result<CacheServer> {
    let mut failures = String::new();
    for _ in 0..START_ATTEMPTS {
        let dir = tempfile::Builder::new()
            .prefix(&format!("precache-{kind}-"))
            .tempdir()?;
        let listen = free_port()?;
        let mut command = configure(dir.path(), listen)?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut server = spawn(kind, command, listen, dir)?;
        match wait_ready(&mut server, ready_marker) {
            Ok(()) => return Ok(server),
            Err(error) => {
                failures.push_str(&format!("{error}; its output:\n{}\n", server.log()));
            }
        }
    }
    Err(std::io::Error::other(format!(
        "{kind} did not start in {START_ATTEMPTS} attempts:\n{failures}"
    )))
}

fn spawn(
    kind: &'static str,
    mut command: Command,
    addr: SocketAddr,
    dir: tempfile::TempDir,
) -> std::io::Result<CacheServer> {
    let mut child = command.spawn()?;
    let output = Arc::new(Mutex::new(String::new()));
    if let Some(stdout) = child.stdout.take() {
        collect(stdout, Arc::clone(&output));
    }
    if let Some(stderr) = child.stderr.take() {
        collect(stderr, Arc::clone(&output));
    }
    // In a session of its own, so that whatever ends the test process's group spares it.
    // (`-KILL -PGID` without `--`: dash's kill refuses `--`.)
    let reaper = Command::new("setsid")
        .args(["sh", "-c"])
        .arg(format!("read _; kill -KILL -{}", child.id()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok();
    Ok(CacheServer {
        addr,
        kind,
        child,
        output,
        reaper,
        _dir: dir,
    })
}

/// Appends every line `pipe` yields to `output`, from a thread that ends with the pipe.
fn collect(pipe: impl Read + Send + 'static, output: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut log = output
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            log.push_str(&line);
            log.push('\n');
        }
    });
}

/// Polls until the server accepts a connection (and logged `ready_marker`), it exits, or
/// [`READY_LIMIT`] passes.
fn wait_ready(server: &mut CacheServer, ready_marker: Option<&str>) -> std::io::Result<()> {
    let started = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait()? {
            return Err(std::io::Error::other(format!(
                "{} exited before it was ready ({status})",
                server.kind
            )));
        }
        let marked = ready_marker.is_none_or(|marker| server.log().contains(marker));
        if marked && TcpStream::connect_timeout(&server.addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if started.elapsed() > READY_LIMIT {
            return Err(std::io::Error::other(format!(
                "{} not ready on {} after {READY_LIMIT:?}",
                server.kind, server.addr
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
