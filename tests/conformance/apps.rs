//! The apps under test: starting, killing and restarting their servers.

use std::io::{BufRead, BufReader, Write as _};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::config::{Config, Server, Stack};
use crate::install::{conformance_dir, target_dir, venv_bin};
use crate::support::http_get;

/// An app under test: its process group is killed on drop.
pub(crate) struct App {
    child: Child,
    /// Where redproof sends its load (`http://127.0.0.1:PORT`).
    pub(crate) url: String,
    /// The metrics page Prometheus scrapes.
    pub(crate) metrics: String,
    log: PathBuf,
    /// How to start the same server again on the same ports (gRPC).
    again: Option<Command>,
    /// Until killed: its process group is not signalled after that.
    alive: bool,
    _dir: tempfile::TempDir,
}

impl App {
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl App {
    /// Kills the app (its whole process group: servers with workers).
    pub(crate) fn kill(&mut self) {
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
    pub(crate) fn restart(&mut self) {
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

/// Starts the app of `c`.
pub(crate) fn start(c: &Config) -> App {
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
