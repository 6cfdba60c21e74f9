//! The controller and the REST API.
//!
//! - [`driver`]: drives one workflow (engine ⇄ executor), recording each step in the store.
//! - [`controller`]: accepts workflows, runs each in a task, forwards resume/stop, and
//!   recovers unfinished workflows from their history after a restart.
//! - [`api`]: Argo Server-compatible REST paths on axum; [`auth`]: bearer tokens and roles.

pub mod api;
pub mod auth;
pub mod controller;
pub mod cron;
pub mod driver;
pub mod ids;

pub use controller::{Controller, ControllerConfig};

/// Serves the API on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    controller: Controller,
    auth: Option<auth::Auth>,
) -> std::io::Result<()> {
    let app = api::router(controller, auth);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .await
}
