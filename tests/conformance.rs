//! Conformance: redproof's verdicts on apps instrumented by the real
//! libraries (`conformance/`): django-prometheus, prometheus-fastapi-
//! instrumentator, OpenTelemetry, prometheus_client under uWSGI,
//! py-grpc-prometheus and go-grpc-prometheus, served by gunicorn, uvicorn,
//! uWSGI, grpcio and grpc-go, and scraped once a second by a real
//! Prometheus. A healthy configuration must verify clean with exact
//! counts; a configuration with a natural fault must fail on the check
//! that owns it, with the diagnosis that names the cause, and on no other.
//!
//! The Python packages come from a virtualenv (`REDPROOF_CONFORMANCE_VENV`,
//! by default `target/conformance-venv`) that `ci/test.sh` creates from
//! `conformance/requirements.txt`; grpc-go builds from Debian's packages.
//! When they are missing the tests say so and pass, unless
//! `REDPROOF_CONFORMANCE` is set (as `ci/test.sh` does): then a missing
//! install fails them. `REDPROOF_CONFORMANCE_RUNS` (default 1) is how
//! many runs in a row a healthy configuration must pass.
//!
//! `REDPROOF_BIN` runs the suite against another build of redproof (a
//! release build, or another branch's) instead of this crate's.
//!
//! Each configuration writes its row of the README's conformance table to
//! `target/conformance/rows/`, and fails when the README has no row with
//! its library, configuration and verdict whose diagnosis says what the
//! test asserts (`conformance/table.sh` rewrites the table from the rows).

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::prometheus::Prometheus;
use support::{Run, http_get};

/// One configuration runs at a time: the apps, Prometheus and redproof
/// share two cores, and latency checks need them not to queue behind
/// another configuration's load.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn conformance_dir() -> PathBuf {
    repo().join("conformance")
}

/// The cargo target directory this test binary was built into.
fn target_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_redproof"));
    bin.parent().and_then(Path::parent).unwrap().to_owned()
}

fn venv() -> PathBuf {
    std::env::var_os("REDPROOF_CONFORMANCE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/conformance-venv"))
}

fn venv_bin(name: &str) -> PathBuf {
    venv().join("bin").join(name)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// What is missing to run a configuration of `stack`, if anything.
fn missing(stack: Stack) -> Option<String> {
    if !on_path("prometheus") {
        return Some("`prometheus` (Debian's package)".into());
    }
    if stack == Stack::GrpcGo {
        for p in ["go", "protoc", "protoc-gen-go"] {
            if !on_path(p) {
                return Some(format!("`{p}` (Debian's packages)"));
            }
        }
        for d in [
            "google.golang.org/grpc",
            "github.com/grpc-ecosystem/go-grpc-prometheus",
        ] {
            if !Path::new("/usr/share/gocode/src").join(d).is_dir() {
                return Some(format!("/usr/share/gocode/src/{d} (Debian's packages)"));
            }
        }
        return None;
    }
    let python = venv_bin("python");
    if !python.is_file() {
        return Some(format!("the virtualenv {}", venv().display()));
    }
    None
}

/// Whether the configuration can run: a missing install skips it with a
/// message, unless `REDPROOF_CONFORMANCE` is set.
fn installed(stack: Stack) -> bool {
    let Some(what) = missing(stack) else {
        return true;
    };
    let message =
        format!("conformance: {what} is missing; ci/test.sh installs it (see conformance/)");
    assert!(
        std::env::var_os("REDPROOF_CONFORMANCE").is_none(),
        "{message}"
    );
    eprintln!("skipped: {message}");
    false
}

fn runs() -> usize {
    std::env::var("REDPROOF_CONFORMANCE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stack {
    Django,
    Fastapi,
    Otel,
    Uwsgi,
    GrpcPy,
    GrpcGo,
}

impl Stack {
    /// The instrumentation library and its version, as installed.
    fn library(self) -> String {
        let (name, version) = match self {
            Stack::Django => ("django-prometheus", pip_version("django-prometheus")),
            Stack::Fastapi => (
                "prometheus-fastapi-instrumentator",
                pip_version("prometheus-fastapi-instrumentator"),
            ),
            Stack::Otel => (
                "opentelemetry-instrumentation-fastapi",
                pip_version("opentelemetry-instrumentation-fastapi"),
            ),
            Stack::Uwsgi => ("prometheus_client", pip_version("prometheus_client")),
            Stack::GrpcPy => ("py-grpc-prometheus", pip_version("py-grpc-prometheus")),
            Stack::GrpcGo => (
                "go-grpc-prometheus",
                deb_version("golang-github-grpc-ecosystem-go-grpc-prometheus-dev"),
            ),
        };
        format!("{name} {version}")
    }
}

/// The installed version of a package in the virtualenv, read from its
/// `*.dist-info` directory.
fn pip_version(package: &str) -> String {
    let want = package.replace('-', "_").to_lowercase();
    let lib = venv().join("lib");
    for py in std::fs::read_dir(&lib).into_iter().flatten().flatten() {
        let site = py.path().join("site-packages");
        for e in std::fs::read_dir(&site).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(stem) = name.strip_suffix(".dist-info")
                && let Some((n, v)) = stem.rsplit_once('-')
                && n.replace('-', "_").to_lowercase() == want
            {
                return v.to_owned();
            }
        }
    }
    panic!("{package} is not installed in {}", venv().display())
}

/// The version of a Debian package, without its epoch and revision.
fn deb_version(package: &str) -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .output()
        .unwrap();
    let v = String::from_utf8_lossy(&out.stdout).to_string();
    let v = v.split_once(':').map_or(v.as_str(), |x| x.1);
    v.rsplit_once('-').map_or(v, |x| x.0).to_owned()
}

/// An app under test: its process group is killed on drop.
struct App {
    child: Child,
    /// Where redproof sends its load (`http://127.0.0.1:PORT`).
    url: String,
    /// The metrics page Prometheus scrapes.
    metrics: String,
    log: PathBuf,
    /// How to start the same server again on the same ports (gRPC).
    again: Option<Command>,
    /// Until killed: its process group is not signalled after that.
    alive: bool,
    _dir: tempfile::TempDir,
}

impl App {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl App {
    /// Kills the app (its whole process group: servers with workers).
    fn kill(&mut self) {
        if !std::mem::replace(&mut self.alive, false) {
            return;
        }
        let pid = self.child.id() as i32;
        // SAFETY: a plain system call on a process group this test made.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }

    /// Kills the server and starts it again on the same ports, waiting
    /// until it says it is ready.
    fn restart(&mut self) {
        self.kill();
        let cmd = self.again.take().expect("a server that can start again");
        let log = self.log.clone();
        let (child, ()) =
            spawn_announcing(cmd, &log, |line| line.starts_with("ready ").then_some(()));
        self.child = child;
        self.alive = true;
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A command run from `conformance/`, in its own process group, with its
/// output in `log`.
fn command(program: &Path, args: &[&str], env: &[(&str, &str)], log: &Path) -> Command {
    let mut cmd = Command::new(program);
    let file = std::fs::File::create(log).unwrap();
    cmd.args(args)
        .current_dir(conformance_dir())
        .envs(env.iter().copied())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .process_group(0);
    cmd
}

/// Starts an HTTP server that takes over a listener on a free port as
/// file descriptor 3 (gunicorn `--bind fd://3`, uWSGI `--http-socket
/// fd://3`), and waits until its metrics page at `metrics_path` answers.
fn start_http(program: &Path, args: &[&str], env: &[(&str, &str)], metrics_path: &str) -> App {
    let dir = tempfile::tempdir().unwrap();
    let mp = dir.path().join("multiproc");
    std::fs::create_dir(&mp).unwrap();
    let env: Vec<(&str, &str)> = env
        .iter()
        .map(|&(k, v)| {
            if k == "PROMETHEUS_MULTIPROC_DIR" {
                (k, mp.to_str().unwrap())
            } else {
                (k, v)
            }
        })
        .collect();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let log = dir.path().join("app.log");
    let mut cmd = command(program, args, &env, &log);
    let fd = listener.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd != 3 && libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    drop(listener);
    let mut app = App {
        child,
        url: format!("http://{addr}"),
        metrics: format!("http://{addr}{metrics_path}"),
        log,
        again: None,
        alive: true,
        _dir: dir,
    };
    wait_ready(&mut app, || {
        matches!(http_get(&addr.to_string(), metrics_path), Some((200, _)))
    });
    app
}

/// Spawns `cmd` with its output copied into `log`, and waits for the
/// first line of it for which `announce` finds something: the ports a
/// server bound itself. The server exiting first, or a minute passing,
/// fails the test with its log.
fn spawn_announcing<T: Send + 'static>(
    mut cmd: Command,
    log: &Path,
    announce: fn(&str) -> Option<T>,
) -> (Child, T) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let (tx, rx) = std::sync::mpsc::channel();
    let file = std::fs::OpenOptions::new().append(true).open(log).unwrap();
    let out: Vec<Box<dyn std::io::Read + Send>> = vec![
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    for stream in out {
        let tx = tx.clone();
        let mut file = file.try_clone().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                let _ = writeln!(file, "{line}");
                if let Some(found) = announce(&line) {
                    let _ = tx.send(found);
                }
            }
        });
    }
    drop(tx);
    // The senders go when the server closes its output (exits), so a
    // server that fails to start ends the wait at once.
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(found) => (child, found),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} never said where it listens:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

/// Starts a gRPC server that binds free ports itself and prints `ready
/// grpc=PORT metrics=PORT`.
fn start_grpc(program: &Path, args: &[&str]) -> App {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let cmd = command(program, args, &[], &log);
    let (child, (grpc, metrics)) = spawn_announcing(cmd, &log, |line| {
        let rest = line.strip_prefix("ready ")?;
        let port = |key: &str| {
            rest.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))?
                .parse::<u16>()
                .ok()
        };
        Some((port("grpc=")?, port("metrics=")?))
    });
    let mut again = Command::new(program);
    again
        .args(args)
        .args(["--port", &grpc.to_string(), "--metrics-port"])
        .arg(metrics.to_string())
        .current_dir(conformance_dir())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .process_group(0);
    App {
        child,
        url: format!("http://127.0.0.1:{grpc}"),
        metrics: format!("http://127.0.0.1:{metrics}/metrics"),
        log,
        again: Some(again),
        alive: true,
        _dir: dir,
    }
}

/// Starts uvicorn on a free port it binds itself (`--port 0`), read from
/// its "Uvicorn running on" line. Handing it a socket (`--fd`) would not
/// do: uvicorn takes such a socket for a Unix one and never sets
/// TCP_NODELAY on its connections.
fn start_uvicorn(args: &[&str], env: &[(&str, &str)], metrics_path: &str) -> App {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let args = [&["--host", "127.0.0.1", "--port", "0"], args].concat();
    let cmd = command(&venv_bin("uvicorn"), &args, env, &log);
    let (child, port) = spawn_announcing(cmd, &log, |line| {
        let rest = line.split_once("Uvicorn running on http://127.0.0.1:")?.1;
        rest.split_whitespace().next()?.parse::<u16>().ok()
    });
    let mut app = App {
        child,
        url: format!("http://127.0.0.1:{port}"),
        metrics: format!("http://127.0.0.1:{port}{metrics_path}"),
        log,
        again: None,
        alive: true,
        _dir: dir,
    };
    let addr = format!("127.0.0.1:{port}");
    wait_ready(&mut app, || {
        matches!(http_get(&addr, metrics_path), Some((200, _)))
    });
    app
}

/// Polls `ready` until it holds; the app exiting first, or a minute
/// passing, fails the test with the app's log.
fn wait_ready(app: &mut App, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        if let Ok(Some(status)) = app.child.try_wait() {
            panic!("the app exited ({status}):\n{}", app.log());
        }
        assert!(
            Instant::now() < deadline,
            "the app never answered:\n{}",
            app.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The grpc-go server, built once per test run into
/// `target/conformance/grpc-go/server`.
fn grpc_go_server() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = target_dir().join("conformance/grpc-go");
            let build = Command::new("bash")
                .arg(conformance_dir().join("grpc-go/build.sh"))
                .arg(&out)
                .output()
                .unwrap();
            assert!(
                build.status.success(),
                "conformance/grpc-go/build.sh failed:\n{}{}",
                String::from_utf8_lossy(&build.stdout),
                String::from_utf8_lossy(&build.stderr)
            );
            out.join("server")
        })
        .clone()
}

/// How an app is served.
#[derive(Debug, Clone, Copy)]
enum Server {
    /// gunicorn sync workers.
    Gunicorn {
        workers: u32,
        multiprocess: bool,
    },
    /// gunicorn with uvicorn workers.
    GunicornUvicorn {
        workers: u32,
        multiprocess: bool,
    },
    Uvicorn,
    /// uvicorn serving a socket handed over as a file descriptor (`--fd`),
    /// as under socket activation.
    UvicornFd,
    Uwsgi {
        processes: u32,
        multiprocess: bool,
    },
    /// The app serves itself (gRPC servers).
    Own,
}

struct Config {
    /// Orders the README's table.
    order: u32,
    stack: Stack,
    server: Server,
    /// Extra environment (OTEL_SEMCONV_STABILITY_OPT_IN).
    env: &'static [(&'static str, &'static str)],
    /// The configuration as the table says it.
    describe: &'static str,
    /// Closed-model users and their wait between requests.
    users: u32,
    wait: &'static str,
    /// What happens to the server during the run.
    disrupt: Disrupt,
    expect: Expect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disrupt {
    None,
    /// Killed and started again on the same ports once Prometheus has
    /// scraped some of the traffic.
    Restart,
    /// Killed and started again while Prometheus is paused, which goes on
    /// once the new process has counted past every value scraped from
    /// the old one: no scrape ever sees a counter drop.
    RestartUnscraped,
    /// Killed for good at the same point.
    Stop,
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Every check passes (or is skipped), server count = client count
    /// for every request, exit 0; `runs()` times in a row.
    Healthy,
    /// As healthy, and a verdict warns with every one of `words`.
    Warned { words: &'static [&'static str] },
    /// One of `checks` fails (or has no data) with a diagnosis holding
    /// every one of `words`, and no check of another name fails. More
    /// than one check may own a fault that shows in more than one way
    /// (scrapes that reach different workers, or always the same one).
    Fault {
        checks: &'static [&'static str],
        words: &'static [&'static str],
        /// Checks that report the same cause in their own terms and may
        /// fail with it (`settle` for a target that went down).
        also: &'static [&'static str],
    },
}

impl Server {
    fn describe(self) -> String {
        let mp = |m: bool| if m { ", multiprocess" } else { "" };
        match self {
            Server::Gunicorn {
                workers,
                multiprocess,
            } => format!(
                "gunicorn {} sync, {workers} worker{}{}",
                pip_version("gunicorn"),
                if workers == 1 { "" } else { "s" },
                mp(multiprocess)
            ),
            Server::GunicornUvicorn {
                workers,
                multiprocess,
            } => format!(
                "gunicorn {} + uvicorn {} workers, {workers}{}",
                pip_version("gunicorn"),
                pip_version("uvicorn"),
                mp(multiprocess)
            ),
            Server::Uvicorn => format!("uvicorn {}, 1 process", pip_version("uvicorn")),
            Server::UvicornFd => format!("uvicorn {} --fd, 1 process", pip_version("uvicorn")),
            Server::Uwsgi {
                processes,
                multiprocess,
            } => format!(
                "uWSGI {}, {processes} processes{}",
                pip_version("uWSGI"),
                mp(multiprocess)
            ),
            Server::Own => String::new(),
        }
    }
}

/// The server part of a configuration's description.
fn server_of(c: &Config) -> String {
    match c.stack {
        Stack::GrpcPy => format!("grpcio {}", pip_version("grpcio")),
        Stack::GrpcGo => format!("grpc-go {}", deb_version("golang-google-grpc-dev")),
        _ => c.server.describe(),
    }
}

/// Starts the app of `c`.
fn start(c: &Config) -> App {
    let module = match c.stack {
        Stack::Django => "django_app",
        Stack::Fastapi => "fastapi_app:app",
        Stack::Otel => "otel_app:app",
        Stack::Uwsgi => "wsgi_app.py",
        Stack::GrpcPy => {
            return start_grpc(
                &venv_bin("python"),
                &[conformance_dir().join("grpc_server.py").to_str().unwrap()],
            );
        }
        Stack::GrpcGo => return start_grpc(&grpc_go_server(), &[]),
    };
    let metrics_path = if c.stack == Stack::Otel {
        "/metrics/"
    } else {
        "/metrics"
    };
    let mut env: Vec<(&str, &str)> = c.env.to_vec();
    let mut args: Vec<String> = Vec::new();
    let program = match c.server {
        Server::Gunicorn {
            workers,
            multiprocess,
        }
        | Server::GunicornUvicorn {
            workers,
            multiprocess,
        } => {
            args.extend(
                [
                    "--bind",
                    "fd://3",
                    "--workers",
                    &workers.to_string(),
                    "--no-control-socket",
                ]
                .map(String::from),
            );
            if let Server::GunicornUvicorn { .. } = c.server {
                args.extend(["--worker-class", "uvicorn.workers.UvicornWorker"].map(String::from));
            }
            if multiprocess {
                args.extend(["--config", "gunicorn_multiprocess.py"].map(String::from));
                env.push(("PROMETHEUS_MULTIPROC_DIR", ""));
            }
            args.push(module.into());
            venv_bin("gunicorn")
        }
        Server::Uvicorn => {
            return start_uvicorn(&["--no-access-log", module], &env, metrics_path);
        }
        Server::UvicornFd => {
            args.extend(["--fd", "3", "--no-access-log", module].map(String::from));
            venv_bin("uvicorn")
        }
        Server::Uwsgi {
            processes,
            multiprocess,
        } => {
            args.extend(
                [
                    "--http-socket",
                    "fd://3",
                    "--master",
                    "--processes",
                    &processes.to_string(),
                    "--wsgi-file",
                    module,
                    "--disable-logging",
                ]
                .map(String::from),
            );
            if multiprocess {
                env.push(("PROMETHEUS_MULTIPROC_DIR", ""));
            }
            venv_bin("uwsgi")
        }
        Server::Own => unreachable!("gRPC servers start above"),
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start_http(&program, &args, &env, metrics_path)
}

/// The scenario for `c` against `app`, verified through `prometheus`.
fn scenario(c: &Config, app: &App, prometheus: &str) -> String {
    let head = format!(
        "name: conformance\nload: {{ users: {}, wait: {}, duration: 4s, drain: 5s }}\nmetrics: {{ prometheus: \"{prometheus}\" }}\n",
        c.users, c.wait
    );
    if matches!(c.stack, Stack::GrpcPy | Stack::GrpcGo) {
        let proto = repo().join("proto");
        return format!(
            r#"{head}targets:
  app:
    url: "{url}"
    protos: ["{p}/revert_name.proto", "{p}/time.proto"]
    timeout: 5s
data:
  names: [alice, bob, carol, ""]
requests:
  - name: revert_name
    grpc: {{ target: app, method: revertname.RevertName/RevertName, message: {{ name: "{{{{ pick(names) }}}}" }} }}
    expect: {{ code: [OK, INVALID_ARGUMENT] }}
  - name: what_time_is
    grpc: {{ target: app, method: timeservice.Time/WhatTimeIs }}
verify:
  revert_name: {{ convention: grpc, match: {{ grpc_method: RevertName }} }}
  what_time_is: {{ convention: grpc, match: {{ grpc_method: WhatTimeIs }} }}
"#,
            url = app.url,
            p = proto.display()
        );
    }
    let slash = if c.stack == Stack::Django { "/" } else { "" };
    let verify = |route: &str| match c.stack {
        Stack::Django => format!("{{ convention: django, match: {{ view: {route} }} }}"),
        Stack::Fastapi => {
            format!("{{ convention: fastapi, match: {{ handler: /items/{route} }} }}")
        }
        Stack::Otel => format!("{{ convention: otel, match: {{ http_route: /items/{route} }} }}"),
        Stack::Uwsgi => format!(
            "{{ convention: custom, requests: app_requests_total, status_label: status, duration: app_request_duration_seconds, match: {{ route: {route} }} }}"
        ),
        Stack::GrpcPy | Stack::GrpcGo => unreachable!(),
    };
    format!(
        r#"{head}targets:
  app: {{ url: "{url}", timeout: 5s }}
requests:
  - name: success
    http: {{ target: app, path: /items/ok{slash} }}
  - name: not_found
    http: {{ target: app, path: /items/missing{slash} }}
    expect: {{ status: 404 }}
  - name: exception
    http: {{ target: app, path: /items/boom{slash} }}
    expect: {{ status: 500 }}
verify:
  success: {ok}
  not_found: {missing}
  exception: {boom}
"#,
        url = app.url,
        ok = verify("ok"),
        missing = verify("missing"),
        boom = verify("boom"),
    )
}

/// One verdict of a run's results.
#[derive(Debug)]
struct Verdict {
    warnings: Vec<String>,
    request: Option<String>,
    check: String,
    status: String,
    summary: String,
    diagnosis: String,
}

impl Verdict {
    fn name(&self) -> String {
        match &self.request {
            Some(r) => format!("{r}.{}", self.check),
            None => self.check.clone(),
        }
    }

    fn failed(&self) -> bool {
        self.status == "fail" || self.status == "no_data"
    }
}

fn verdicts(run: &Run) -> Vec<Verdict> {
    run.results()["verification"]["verdicts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|v| Verdict {
            warnings: v["warnings"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|w| w.as_str().map(str::to_owned))
                .collect(),
            request: v["request"].as_str().map(str::to_owned),
            check: v["check"].as_str().unwrap_or_default().to_owned(),
            status: v["status"].as_str().unwrap_or_default().to_owned(),
            summary: v["summary"].as_str().unwrap_or_default().to_owned(),
            diagnosis: v["diagnosis"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// Verdicts one per line: name, status, summary and diagnosis.
fn list(verdicts: &[&Verdict]) -> String {
    verdicts
        .iter()
        .map(|v| {
            format!(
                "  {} {}: {}\n    → {}",
                v.name(),
                v.status,
                v.summary,
                v.diagnosis
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The server's count of `request`, from the results file.
fn server_count(run: &Run, request: &str) -> Option<f64> {
    run.results()["verification"]["server"]
        .as_array()?
        .iter()
        .find(|f| f["request"] == request)?["count"]
        .as_f64()
}

/// Everything needed to understand a failed expectation.
fn context(c: &Config, app: &App, prometheus: &Prometheus, run: &Run) -> String {
    let mut s = format!(
        "configuration: {} · {}\n--- redproof stdout\n{}\n--- redproof stderr\n{}\n--- app log (last 60 lines)\n",
        c.stack.library(),
        c.describe,
        run.stdout,
        run.stderr
    );
    let log = app.log();
    let lines: Vec<&str> = log.lines().collect();
    for l in &lines[lines.len().saturating_sub(60)..] {
        let _ = writeln!(s, "{l}");
    }
    let plog = prometheus.log();
    let _ = writeln!(
        s,
        "--- prometheus log (last 10 lines)\n{}",
        plog.lines()
            .rev()
            .take(10)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    s
}

/// Requests of `name` the server answered with an HTTP status or a gRPC
/// code: what it can have counted.
fn answered(results: &Value, name: &str) -> u64 {
    support::outcomes(results, name)
        .iter()
        .filter(|o| o.0.get("status").is_some() || o.0.get("grpc").is_some())
        .map(|o| o.2)
        .sum()
}

/// The requests of a configuration's scenario.
fn request_names(c: &Config) -> &'static [&'static str] {
    match c.stack {
        Stack::GrpcPy | Stack::GrpcGo => &["revert_name", "what_time_is"],
        _ => &["success", "not_found", "exception"],
    }
}

/// Runs configuration `c` and checks what redproof says about it.
fn conformance(c: Config) {
    if !installed(c.stack) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut app = start(&c);
    let prometheus = Prometheus::start(&[("app", app.metrics.clone())], &[]);
    let scenario = scenario(&c, &app, &prometheus.url());
    let times = match c.expect {
        Expect::Healthy | Expect::Warned { .. } => runs(),
        Expect::Fault { .. } => 1,
    };
    let mut row = None;
    for i in 1..=times {
        let run = if c.disrupt == Disrupt::None {
            run_redproof(&scenario, &["--quiet", "--threads", "1"])
        } else {
            run_disrupted(&scenario, &mut app, &prometheus, c.disrupt)
        };
        let ctx = || {
            format!(
                "run {i} of {times}\n{}",
                context(&c, &app, &prometheus, &run)
            )
        };
        assert!(run.results.is_some(), "no results file\n{}", ctx());
        let all = verdicts(&run);
        assert!(!all.is_empty(), "no verification verdicts\n{}", ctx());
        let failing: Vec<&Verdict> = all.iter().filter(|v| v.failed()).collect();
        match c.expect {
            Expect::Healthy | Expect::Warned { .. } => {
                assert!(
                    failing.is_empty(),
                    "a healthy configuration failed:\n{}\n{}",
                    list(&failing),
                    ctx()
                );
                assert_eq!(run.code, 0, "{}", ctx());
                for r in request_names(&c) {
                    let client = answered(run.results(), r) as f64;
                    assert!(client > 0.0, "no responses to {r}\n{}", ctx());
                    assert_eq!(
                        server_count(&run, r),
                        Some(client),
                        "{r}: server count differs from the client's\n{}",
                        ctx()
                    );
                }
                row = Some(("pass".to_owned(), "server count = client count".to_owned()));
                if let Expect::Warned { words } = c.expect {
                    let warning = all.iter().flat_map(|v| &v.warnings).find(|w| {
                        let w = w.to_lowercase();
                        words.iter().all(|x| w.contains(&x.to_lowercase()))
                    });
                    let Some(warning) = warning else {
                        panic!(
                            "expected every check to pass with a warning saying {words:?}\n{}",
                            ctx()
                        );
                    };
                    row = Some(("pass, with a warning".to_owned(), stable(warning)));
                }
            }
            Expect::Fault {
                checks,
                words,
                also,
            } => {
                let owner = failing.iter().find(|v| {
                    checks.contains(&v.check.as_str()) && {
                        let text = format!("{} {}", v.summary, v.diagnosis).to_lowercase();
                        words.iter().all(|w| text.contains(&w.to_lowercase()))
                    }
                });
                let Some(owner) = owner else {
                    panic!(
                        "expected {} to fail with a diagnosis saying {words:?}; failing:\n{}\n{}",
                        checks.join(" or "),
                        list(&failing),
                        ctx()
                    );
                };
                let others: Vec<&Verdict> = failing
                    .iter()
                    .copied()
                    .filter(|v| v.check != owner.check && !also.contains(&v.check.as_str()))
                    .collect();
                assert!(
                    others.is_empty(),
                    "one cause must read as one failure (`{}`); also failing:\n{}\n{}",
                    owner.check,
                    list(&others),
                    ctx()
                );
                assert_eq!(run.code, 2, "{}", ctx());
                row = Some((
                    format!(
                        "fail: {}",
                        checks
                            .iter()
                            .map(|c| format!("`{c}`"))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                    stable(&owner.diagnosis),
                ));
            }
        }
    }
    if let Some((verdict, diagnosis)) = row {
        table_row(&c, &verdict, &diagnosis);
    }
}

/// The redproof under test: `REDPROOF_BIN`, or the one cargo built.
fn redproof_bin() -> PathBuf {
    std::env::var_os("REDPROOF_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_redproof")))
}

/// `redproof run` on `scenario` with `args`, its results in a fresh
/// temporary directory.
fn run_redproof(scenario: &str, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let file = support::write_scenario(dir.path(), scenario);
    let out = Command::new(redproof_bin())
        .env("NO_COLOR", "1")
        .arg("run")
        .arg(&file)
        .arg("--out")
        .arg(dir.path().join("results.json"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    support::finish(out, dir)
}

/// `redproof run` on `scenario` while the server is restarted or
/// stopped, once Prometheus has scraped 100 of the calls it answered.
fn run_disrupted(scenario: &str, app: &mut App, prometheus: &Prometheus, disrupt: Disrupt) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let file = support::write_scenario(dir.path(), scenario);
    let child = Command::new(redproof_bin())
        .env("NO_COLOR", "1")
        .arg("run")
        .arg(&file)
        .arg("--out")
        .arg(dir.path().join("results.json"))
        .args(["--quiet", "--threads", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let api = prometheus.url();
    let api = api.trim_start_matches("http://");
    // Few calls before an unscraped restart, so that the new process
    // counts past them well before the load ends.
    let calls = if disrupt == Disrupt::RestartUnscraped {
        1.0
    } else {
        100.0
    };
    support::wait_until(
        &format!("Prometheus to scrape {calls} answered calls"),
        Duration::from_secs(30),
        || scraped_calls(api).values().sum::<f64>() >= calls,
    );
    match disrupt {
        Disrupt::Restart => app.restart(),
        Disrupt::RestartUnscraped => {
            let before = scraped_calls(api);
            prometheus.pause();
            app.restart();
            let page = app.metrics.trim_start_matches("http://").to_owned();
            let (addr, path) = page.split_at(page.find('/').unwrap());
            // Series the server exports at zero before any call cannot
            // drop.
            support::wait_until(
                "the restarted server to count past every scraped value",
                Duration::from_secs(10),
                || {
                    let now = page_calls(addr, path);
                    before
                        .iter()
                        .all(|(k, v)| *v == 0.0 || now.get(k).is_some_and(|n| n > v))
                },
            );
            prometheus.resume();
        }
        Disrupt::Stop => app.kill(),
        Disrupt::None => {}
    }
    support::finish(child.wait_with_output().unwrap(), dir)
}

/// `grpc_server_handled_total` by method and code, as Prometheus last
/// scraped it.
fn scraped_calls(api: &str) -> BTreeMap<(String, String), f64> {
    let Some((200, body)) = http_get(api, "/api/v1/query?query=grpc_server_handled_total") else {
        return BTreeMap::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    let Some(result) = v["data"]["result"].as_array() else {
        return BTreeMap::new();
    };
    result
        .iter()
        .filter_map(|r| {
            let label = |n: &str| r["metric"][n].as_str().unwrap_or_default().to_owned();
            let value = r["value"][1].as_str()?.parse().ok()?;
            Some(((label("grpc_method"), label("grpc_code")), value))
        })
        .collect()
}

/// `grpc_server_handled_total` by method and code, read from the
/// server's own page at `addr` and `path`.
fn page_calls(addr: &str, path: &str) -> BTreeMap<(String, String), f64> {
    let Some((200, body)) = http_get(addr, path) else {
        return BTreeMap::new();
    };
    let label = |labels: &str, name: &str| {
        let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
        let len = labels[start..].find('"')?;
        Some(labels[start..start + len].to_owned())
    };
    body.lines()
        .filter_map(|l| {
            let (labels, value) = l
                .strip_prefix("grpc_server_handled_total{")?
                .split_once("} ")?;
            let key = (label(labels, "grpc_method")?, label(labels, "grpc_code")?);
            Some((key, value.trim().parse().ok()?))
        })
        .collect()
}

/// A diagnosis with what changes from run to run (numbers, addresses)
/// written as `N`, and `|` escaped for a Markdown table.
fn stable(diagnosis: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for ch in diagnosis.chars() {
        if ch.is_ascii_digit() || (in_number && (ch == '.' || ch == ',')) {
            if !in_number {
                out.push('N');
            }
            in_number = true;
            continue;
        }
        in_number = false;
        match ch {
            '|' => out.push_str("\\|"),
            '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out.trim().to_owned()
}

/// Writes this configuration's row of the README's table into
/// `target/conformance/rows/`, and checks that the README holds a row
/// for it with the same library, configuration and verdict, whose
/// diagnosis says what the test asserts.
fn table_row(c: &Config, verdict: &str, diagnosis: &str) {
    let head = format!(
        "| {} | {}: {} | {verdict} |",
        c.stack.library(),
        server_of(c),
        c.describe
    );
    let row = format!("{head} {diagnosis} |");
    let rows = target_dir().join("conformance/rows");
    std::fs::create_dir_all(&rows).unwrap();
    std::fs::write(rows.join(format!("{:03}.md", c.order)), format!("{row}\n")).unwrap();
    let words: &[&str] = match c.expect {
        Expect::Healthy => &["server count = client count"],
        Expect::Warned { words } => words,
        Expect::Fault { words, .. } => words,
    };
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let found = readme.lines().find_map(|l| l.strip_prefix(&head));
    assert!(
        found.is_some_and(|d| words
            .iter()
            .all(|w| d.to_lowercase().contains(&w.to_lowercase()))),
        "README.md's conformance table has no row for this configuration saying {words:?}; \
         conformance/table.sh rewrites it from target/conformance/rows/ after a run:\n{row}"
    );
}

const HEALTHY: Expect = Expect::Healthy;

/// Per-process registries that scrapes may read in turn (saw-tooth) or
/// always from the same worker (a fraction of the traffic).
const WORKER_REGISTRIES: Expect = Expect::Fault {
    checks: &["resets", "count"],
    words: &["worker"],
    also: &[],
};

#[test]
fn django_gunicorn_one_worker() {
    conformance(Config {
        order: 10,
        stack: Stack::Django,
        server: Server::Gunicorn {
            workers: 1,
            multiprocess: false,
        },
        env: &[],
        describe: "healthy",
        users: 1,
        wait: "1ms..5ms",
        disrupt: Disrupt::None,
        expect: HEALTHY,
    });
}

#[test]
fn django_gunicorn_three_workers_multiprocess() {
    conformance(Config {
        order: 11,
        stack: Stack::Django,
        server: Server::Gunicorn {
            workers: 3,
            multiprocess: true,
        },
        env: &[],
        describe: "healthy (PROMETHEUS_MULTIPROC_DIR)",
        users: 3,
        wait: "1ms..5ms",
        disrupt: Disrupt::None,
        expect: HEALTHY,
    });
}

#[test]
fn django_gunicorn_three_workers_without_multiprocess_mode() {
    conformance(Config {
        order: 12,
        stack: Stack::Django,
        server: Server::Gunicorn {
            workers: 3,
            multiprocess: false,
        },
        env: &[],
        describe: "per-process registries",
        users: 3,
        wait: "1ms..5ms",
        disrupt: Disrupt::None,
        expect: WORKER_REGISTRIES,
    });
}

/// More users than sync workers: requests wait in gunicorn's backlog,
/// before django-prometheus' timer starts.
#[test]
fn django_gunicorn_queueing_before_the_timer() {
    conformance(Config {
        order: 13,
        stack: Stack::Django,
        server: Server::Gunicorn {
            workers: 1,
            multiprocess: false,
        },
        env: &[],
        describe: "12 users on 1 sync worker (queueing in the backlog)",
        users: 12,
        wait: "0ms",
        disrupt: Disrupt::None,
        expect: Expect::Fault {
            checks: &["duration"],
            words: &["outside the server's timer"],
            also: &[],
        },
    });
}

#[test]
fn fastapi_uvicorn() {
    conformance(Config {
        order: 20,
        stack: Stack::Fastapi,
        server: Server::Uvicorn,
        env: &[],
        describe: "healthy",
        users: 2,
        wait: "1ms..5ms",
        disrupt: Disrupt::None,
        expect: HEALTHY,
    });
}

#[test]
fn fastapi_gunicorn_uvicorn_workers_multiprocess() {
    conformance(Config {
        order: 21,
        stack: Stack::Fastapi,
        server: Server::GunicornUvicorn {
            workers: 3,
            multiprocess: true,
        },
        env: &[],
        describe: "healthy (PROMETHEUS_MULTIPROC_DIR)",
        users: 3,
        wait: "1ms..5ms",
        disrupt: Disrupt::None,
        expect: HEALTHY,
    });
}

/// Prometheus keeps one keep-alive connection, so every scrape reads the
/// registry of the one worker that accepted it.
#[test]
fn fastapi_gunicorn_uvicorn_workers_without_multiprocess_mode() {
    conformance(Config {
        order: 22,
        stack: Stack::Fastapi,
        server: Server::GunicornUvicorn {
            workers: 3,
            multiprocess: false,
        },
        env: &[],
        describe: "per-process registries, one scrape connection pinned to one worker",
        users: 4,
        wait: "1ms..5ms",
        disrupt: Disrupt::None,
        expect: Expect::Fault {
            checks: &["count"],
            words: &["worker"],
            also: &[],
        },
    });
}

#[test]
fn opentelemetry_stable_http_semantic_conventions() {
    conformance(Config {
        order: 30,
        stack: Stack::Otel,
        server: Server::Uvicorn,
        env: &[("OTEL_SEMCONV_STABILITY_OPT_IN", "http")],
        describe: "healthy (OTEL_SEMCONV_STABILITY_OPT_IN=http)",
        users: 2,
        wait: "1ms..5ms",
        disrupt: Disrupt::None,
        expect: HEALTHY,
    });
}

#[test]
fn opentelemetry_old_and_stable_semantic_conventions() {
    conformance(Config {
        order: 31,
        stack: Stack::Otel,
        server: Server::Uvicorn,
        env: &[("OTEL_SEMCONV_STABILITY_OPT_IN", "http/dup")],
        describe: "healthy (OTEL_SEMCONV_STABILITY_OPT_IN=http/dup: old and new names)",
        users: 2,
        wait: "1ms..5ms",
        disrupt: Disrupt::None,
        expect: HEALTHY,
    });
}

/// Without the opt-in the exporter writes only the old names
/// (`http_server_duration_milliseconds`, labels `http_target`,
/// `http_status_code`, buckets in milliseconds): the run reads them, and
/// says so naming the variable that exports the stable names.
#[test]
fn opentelemetry_old_semantic_conventions() {
    conformance(Config {
        order: 32,
        stack: Stack::Otel,
        server: Server::Uvicorn,
        env: &[],
        describe: "old semantic conventions (no opt-in)",
        users: 2,
        wait: "1ms..5ms",
        disrupt: Disrupt::None,
        expect: Expect::Warned {
            words: &["old", "OTEL_SEMCONV_STABILITY_OPT_IN"],
        },
    });
}

/// uvicorn takes a socket handed over with `--fd` for a Unix socket and
/// never sets TCP_NODELAY on its connections. It writes a response's head
/// and body in two sends; with Nagle's algorithm the body can wait for the
/// client's delayed ACK, after the server's timer stopped: 30-40 ms per
/// request behind the OpenTelemetry middleware.
#[test]
fn opentelemetry_uvicorn_socket_handed_over() {
    conformance(Config {
        order: 33,
        stack: Stack::Otel,
        server: Server::UvicornFd,
        env: &[("OTEL_SEMCONV_STABILITY_OPT_IN", "http")],
        describe: "socket handed over (no TCP_NODELAY: Nagle and delayed ACKs)",
        users: 2,
        wait: "1ms..5ms",
        disrupt: Disrupt::None,
        expect: Expect::Fault {
            checks: &["duration"],
            words: &["outside the server's timer"],
            also: &[],
        },
    });
}

#[test]
fn uwsgi_four_processes_multiprocess() {
    conformance(Config {
        order: 40,
        stack: Stack::Uwsgi,
        server: Server::Uwsgi {
            processes: 4,
            multiprocess: true,
        },
        env: &[],
        describe: "healthy (PROMETHEUS_MULTIPROC_DIR)",
        users: 3,
        wait: "1ms..5ms",
        disrupt: Disrupt::None,
        expect: HEALTHY,
    });
}

#[test]
fn uwsgi_four_processes_without_multiprocess_mode() {
    conformance(Config {
        order: 41,
        stack: Stack::Uwsgi,
        server: Server::Uwsgi {
            processes: 4,
            multiprocess: false,
        },
        env: &[],
        describe: "per-process registries",
        users: 3,
        wait: "1ms..5ms",
        disrupt: Disrupt::None,
        expect: WORKER_REGISTRIES,
    });
}

#[test]
fn grpcio_py_grpc_prometheus() {
    conformance(Config {
        order: 50,
        stack: Stack::GrpcPy,
        server: Server::Own,
        env: &[],
        describe: "healthy (codes spelt INVALID_ARGUMENT)",
        users: 2,
        wait: "1ms..5ms",
        disrupt: Disrupt::None,
        expect: HEALTHY,
    });
}

/// A process restart during the run: a new registry, counters from zero
/// and a later process_start_time_seconds.
#[test]
fn grpcio_restart() {
    conformance(Config {
        order: 51,
        stack: Stack::GrpcPy,
        server: Server::Own,
        env: &[],
        describe: "server restarted during the run",
        users: 2,
        wait: "1ms..5ms",
        disrupt: Disrupt::Restart,
        expect: Expect::Fault {
            checks: &["resets"],
            words: &["restart"],
            also: &[],
        },
    });
}

/// The server stops for good during the run: Prometheus' last samples
/// go stale.
#[test]
fn grpcio_stopped() {
    conformance(Config {
        order: 52,
        stack: Stack::GrpcPy,
        server: Server::Own,
        env: &[],
        describe: "server stopped during the run",
        users: 2,
        wait: "1ms..5ms",
        disrupt: Disrupt::Stop,
        expect: Expect::Fault {
            checks: &["freshness"],
            words: &["down"],
            also: &["settle"],
        },
    });
}

#[test]
fn grpc_go_go_grpc_prometheus() {
    conformance(Config {
        order: 60,
        stack: Stack::GrpcGo,
        server: Server::Own,
        env: &[],
        describe: "healthy (codes spelt InvalidArgument)",
        users: 2,
        wait: "1ms..5ms",
        disrupt: Disrupt::None,
        expect: HEALTHY,
    });
}

#[test]
fn grpc_go_restart() {
    conformance(Config {
        order: 61,
        stack: Stack::GrpcGo,
        server: Server::Own,
        env: &[],
        describe: "server restarted during the run",
        users: 2,
        wait: "1ms..5ms",
        disrupt: Disrupt::Restart,
        expect: Expect::Fault {
            checks: &["resets"],
            words: &["restart"],
            also: &[],
        },
    });
}

/// A restart no scrape sees as a drop: the new process has counted past
/// the old one's last scraped values by the next scrape, and only
/// process_start_time_seconds shows it.
#[test]
fn grpc_go_restart_between_scrapes() {
    conformance(Config {
        order: 62,
        stack: Stack::GrpcGo,
        server: Server::Own,
        env: &[],
        describe: "server restarted between two scrapes, its counters past their last scraped values",
        users: 2,
        wait: "1ms..5ms",
        disrupt: Disrupt::RestartUnscraped,
        expect: Expect::Fault {
            checks: &["resets"],
            words: &["restarted", "climbed past"],
            also: &[],
        },
    });
}

#[test]
fn grpc_go_stopped() {
    conformance(Config {
        order: 63,
        stack: Stack::GrpcGo,
        server: Server::Own,
        env: &[],
        describe: "server stopped during the run",
        users: 2,
        wait: "1ms..5ms",
        disrupt: Disrupt::Stop,
        expect: Expect::Fault {
            checks: &["freshness"],
            words: &["down"],
            also: &["settle"],
        },
    });
}
