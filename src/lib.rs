//! redproof: a load generator that checks a service's monitoring.
//!
//! # Layout
//!
//! Dependencies run one way, top to bottom:
//!
//! - [`cli`]: command-line definitions only.
//! - [`source`]: positions in scenario files.
//! - [`template`]: request templates compiled once, rendered per request;
//!   the scenario checks its templates with it.
//! - [`scenario`]: scenario files, read into raw serde types and validated
//!   into a checked model; every error has its file, line and column.
//!   gRPC calls are checked against descriptors compiled from `.proto`
//!   files (or fetched by reflection when the run starts).
//! - [`exec`]: executors that send one request and classify the outcome:
//!   HTTP on hyper's connection API, gRPC through tonic's client over the
//!   same connections, with dynamic messages and server reflection.
//! - [`measure`]: per-thread recorders of HDR histograms, merged per second.
//! - [`engine`]: schedules (closed users, open arrival rate), the worker
//!   loop, stop and drain.
//! - [`promql`]: series selectors, rendered as PromQL or matched
//!   directly, and PromQL syntax checks.
//! - [`metrics`]: metric sources behind one trait: Prometheus' HTTP API
//!   and the embedded scraper, both giving raw samples.
//! - [`verify`]: conventions, the settle point, checks and diagnoses.
//! - [`report`]: the serialisable run report and its renderings (terminal,
//!   JSON, JUnit, Markdown).
//! - [`app`]: wires a command together and maps the result to an exit code.
//!   `demo` starts the demo services in-process for `redproof demo`.

pub mod app;
pub mod cli;
mod demo;
pub mod engine;
pub mod exec;
pub mod measure;
pub mod metrics;
pub mod profile;
pub mod promql;
pub mod report;
pub mod scenario;
pub mod source;
pub mod template;
pub mod verify;
