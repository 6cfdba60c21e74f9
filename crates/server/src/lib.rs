//! The controller and the REST API.
//!
//! - [`driver`]: drives one workflow (engine ⇄ executor), recording each step in the store.
//! - [`controller`]: accepts workflows, runs each in a task, forwards resume/stop, and
//!   recovers unfinished workflows from their history after a restart.
//! - [`submit`]: the one way a workflow comes into being (API, cron, `riposte run`, sensors).
//! - [`events`]: event sources, the event bus, sensors and triggers.
//! - [`group_commit`]: concurrent writes that share one transaction.
//! - [`failpoint`]: crash points the tests arm (`RIPOSTE_FAILPOINT`).
//! - [`api`]: Argo Server-compatible REST paths on axum; [`auth`]: bearer tokens and roles;
//!   [`approval`]: signed approval links.
//! - [`metrics`]: Prometheus metrics (`/metrics`).
//! - [`console`]: the web console, embedded, served at `/`.

pub mod api;
pub mod approval;
pub mod auth;
pub mod console;
pub mod controller;
pub mod cron;
pub mod driver;
pub mod events;
pub mod failpoint;
pub mod group_commit;
pub mod ids;
pub mod library;
pub mod metrics;
pub mod submit;

pub use controller::{Controller, ControllerConfig};
pub use submit::{Origin, SubmitOutcome, SubmitRequest};

/// Serves the API on `listener` until `shutdown` completes; then stops accepting, lets
/// requests in flight finish, and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    controller: Controller,
    events: events::Events,
    auth: Option<auth::Auth>,
    approvals: Option<approval::LinkSigner>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = api::router(controller, events, auth, approvals);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
