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
//! - [`exec`]: executors that send one request and classify the outcome.
//! - [`measure`]: per-thread recorders of HDR histograms, merged per second.
//! - [`engine`]: schedules (closed users, open arrival rate), the worker
//!   loop, stop and drain.
//! - [`report`]: the serialisable run report and its renderings.
//! - [`app`]: wires a command together and maps the result to an exit code.

pub mod app;
pub mod cli;
mod demo;
pub mod engine;
pub mod exec;
pub mod measure;
pub mod metrics;
pub mod promql;
pub mod report;
pub mod scenario;
pub mod source;
pub mod template;
pub mod verify;
