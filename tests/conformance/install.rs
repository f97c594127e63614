//! Where the suite's files are, and what is installed to run it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::Stack;

pub(crate) fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn conformance_dir() -> PathBuf {
    repo().join("conformance")
}

/// The cargo target directory this test binary was built into.
pub(crate) fn target_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_redproof"));
    bin.parent().and_then(Path::parent).unwrap().to_owned()
}

fn venv() -> PathBuf {
    std::env::var_os("REDPROOF_CONFORMANCE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/conformance-venv"))
}

pub(crate) fn venv_bin(name: &str) -> PathBuf {
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
pub(crate) fn installed(stack: Stack) -> bool {
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

pub(crate) fn runs() -> usize {
    std::env::var("REDPROOF_CONFORMANCE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// The installed version of a package in the virtualenv, read from its
/// `*.dist-info` directory.
pub(crate) fn pip_version(package: &str) -> String {
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
pub(crate) fn deb_version(package: &str) -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .output()
        .unwrap();
    let v = String::from_utf8_lossy(&out.stdout).to_string();
    let v = v.split_once(':').map_or(v.as_str(), |x| x.1);
    v.rsplit_once('-').map_or(v, |x| x.0).to_owned()
}
