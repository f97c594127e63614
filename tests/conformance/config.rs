//! A configuration: the library, how it is served, what happens to the
//! server during the run, and what redproof must say about it.

use crate::install::{deb_version, pip_version};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stack {
    Django,
    Fastapi,
    Otel,
    Uwsgi,
    GrpcPy,
    GrpcGo,
}

impl Stack {
    /// The instrumentation library and its version, as installed.
    pub(crate) fn library(self) -> String {
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

/// How an app is served.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Server {
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

pub(crate) struct Config {
    /// Orders the README's table.
    pub(crate) order: u32,
    pub(crate) stack: Stack,
    pub(crate) server: Server,
    /// Extra environment (OTEL_SEMCONV_STABILITY_OPT_IN).
    pub(crate) env: &'static [(&'static str, &'static str)],
    /// The configuration as the table says it.
    pub(crate) describe: &'static str,
    /// Closed-model users and their wait between requests.
    pub(crate) users: u32,
    pub(crate) wait: &'static str,
    /// What happens to the server during the run.
    pub(crate) disrupt: Disrupt,
    pub(crate) expect: Expect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disrupt {
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
pub(crate) enum Expect {
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
pub(crate) fn server_of(c: &Config) -> String {
    match c.stack {
        Stack::GrpcPy => format!("grpcio {}", pip_version("grpcio")),
        Stack::GrpcGo => format!("grpc-go {}", deb_version("golang-google-grpc-dev")),
        _ => c.server.describe(),
    }
}
