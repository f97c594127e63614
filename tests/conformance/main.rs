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

#[path = "../support/mod.rs"]
mod support;

mod apps;
mod config;
mod harness;
mod install;
mod table;

use config::{Config, Disrupt, Expect, Server, Stack};
use harness::conformance;

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
