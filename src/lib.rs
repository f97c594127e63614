//! redproof: a load generator that checks a service's monitoring.
//!
//! # Layout
//!
//! Dependencies run one way: a module uses only those listed below it.
//!
//! - [`app`]: wires a command together and maps the result to an exit code;
//!   `redproof demo` (cargo feature `demo`, on by default) starts the demo
//!   services in-process.
//! - [`cli`]: command-line definitions only.
//! - [`report`]: the serialisable run report and its renderings (terminal,
//!   JSON, JUnit, Markdown).
//! - [`live`]: the client's figures served in the Prometheus text format
//!   during the run (`--metrics-listen`).
//! - [`verify`]: conventions, the settle point, checks and diagnoses.
//! - [`metrics`]: metric sources behind one trait: Prometheus' HTTP API
//!   and the embedded scraper, both giving raw samples. They fetch over
//!   the executors' HTTP/1.1 client.
//! - [`engine`]: the worker loop, stop and drain, on the schedules of
//!   [`profile`] (closed users, open arrival rate, stages).
//! - [`exec`]: executors that send one request of the compiled plan and
//!   classify the outcome: HTTP/1.1 on redproof's own client, HTTP/2 on
//!   hyper, gRPC through tonic's client over the same connections.
//! - [`scenario`]: scenario files, read into raw serde types and validated
//!   into a checked model whose requests are already compiled (templates,
//!   JSON paths, header names, gRPC descriptors); every error has its file,
//!   line and column.
//! - [`template`]: request templates compiled once, rendered per request.
//! - [`measure`]: per-thread recorders of HDR histograms, merged per second.
//! - [`promql`]: series selectors, rendered as PromQL or matched
//!   directly, and PromQL syntax checks.
//! - [`outcome`]: what happened to one request (status, gRPC code, failed
//!   check, transport error).
//! - [`position`]: line and column in scenario files.
//! - [`printable`]: server text escaped before it is shown.
//! - [`secrets`]: values read from the environment and credentials,
//!   masked in every output.

pub mod app;
pub mod cli;
pub mod engine;
pub mod exec;
pub mod live;
pub mod measure;
pub mod metrics;
pub mod outcome;
pub mod position;
pub mod printable;
pub mod profile;
pub mod promql;
pub mod report;
pub mod scenario;
pub mod secrets;
pub mod template;
pub mod verify;
