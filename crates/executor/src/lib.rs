//! Executors: they carry out the engine's `Execute` commands and report `ExecResult`s.
//!
//! # Brief overview
//! - [`host::HostExecutor`]: the embedded default. Runs `container` and `script` templates as
//!   local processes in a private root ([`sandbox`]), `http` templates as HTTP requests
//!   ([`http`]); images map to host programs through [`image::ImageTable`].
//! - [`condition`]: resource templates' `successCondition`/`failureCondition` (pure).
//! - [`kubectl_jsonpath`]: resource outputs' `valueFrom.jsonPath` (kubectl templates, pure).
//! - [`jq`]: re-exported from `expr` (resource outputs' `valueFrom.jqFilter`).
//! - [`job`]: the `batch/v1` Job manifest a step becomes on Kubernetes (pure; the executor
//!   that creates and watches Jobs is not built yet).
//!
//! Executors never decide what runs next; that is the engine's job.

pub mod change;
pub mod condition;
pub mod flags;
pub mod host;
pub mod http;
pub mod image;
pub mod job;
pub use expr::jq;
pub mod kubectl_jsonpath;
pub mod report;
pub mod resource_lint;
pub mod sandbox;
mod spawn;

pub use host::{HostConfig, HostExecutor, RESULT_LIMIT, log_path};
pub use image::{HostImage, ImageTable, UnknownImage};
pub use sandbox::{Isolation, Sandbox};
