//! A real Prometheus (Debian's package) for end-to-end tests: it scrapes
//! the given targets once a second, listens on an ephemeral loopback
//! port, and is killed on drop.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{http_get, wait_until};

pub struct Prometheus {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `targets` (job, metrics URL) every second, evaluating the
    /// rule files `rules`; returns once every target was scraped up.
    pub fn start(targets: &[(&str, String)], rules: &[&Path]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n".to_owned();
        for r in rules {
            config.push_str(&format!("  - {}\n", r.display()));
        }
        config.push_str("scrape_configs:\n");
        for (job, url) in targets {
            let rest = url.strip_prefix("http://").unwrap();
            let (host, path) = rest.split_at(rest.find('/').unwrap());
            config.push_str(&format!(
                "  - job_name: {job}\n    metrics_path: {path}\n    static_configs:\n      - targets: [\"{host}\"]\n"
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = dir.path().join("prometheus.log");
        let mut log = std::fs::File::create(&log_path).unwrap();
        // Port 0: the kernel picks a free port and Prometheus logs the one
        // it got ("Listening on"), so no port is chosen before it is bound.
        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdout(log.try_clone().unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .expect(
                "`prometheus` is not installed: run ci/test.sh, which installs Debian's package",
            );
        // Its log is read to the end (into prometheus.log) so Prometheus
        // never blocks on a full pipe.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                let _ = writeln!(log, "{line}");
                if line.contains(r#"msg="Listening on""#)
                    && let Some(rest) = line.split_once(" address=")
                {
                    let _ = tx.send(rest.1.split_whitespace().next().unwrap_or("").to_owned());
                }
            }
        });
        // The sender goes when Prometheus exits (stderr closes), so a
        // Prometheus that fails to start ends the wait at once.
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "Prometheus never said where it listens:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                )
            });
        let p = Prometheus { child, addr, dir };
        // Ready, and every target scraped at least once.
        wait_until(
            "Prometheus to scrape every target",
            Duration::from_secs(60),
            || {
                let Some((200, body)) = http_get(&p.addr, "/api/v1/targets") else {
                    return false;
                };
                let v: Value = serde_json::from_str(&body).unwrap();
                let active = v["data"]["activeTargets"].as_array().unwrap();
                active.len() == targets.len() && active.iter().all(|t| t["health"] == "up")
            },
        );
        p
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops Prometheus where it is (SIGSTOP): no scrapes until what
    /// this returns is dropped, which lets it go on (SIGCONT), also when
    /// a test fails while it is paused.
    #[must_use = "Prometheus goes on when this is dropped"]
    pub fn pause(&self) -> Paused<'_> {
        assert!(self.signal(libc::SIGSTOP), "SIGSTOP to Prometheus");
        Paused(self)
    }

    fn signal(&self, signal: libc::c_int) -> bool {
        // SAFETY: a plain system call on a process this helper started
        // and has not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) == 0 }
    }

    /// What Prometheus logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

/// A paused Prometheus: it goes on when this is dropped.
pub struct Paused<'a>(&'a Prometheus);

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        // Nothing to do if it is gone: it ran no further anyway.
        let _ = self.0.signal(libc::SIGCONT);
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
