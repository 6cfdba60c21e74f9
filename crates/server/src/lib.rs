//! The controller and the REST API.
//!
//! - [`driver`]: drives one workflow (engine ⇄ executor), recording each step in the store.

pub mod driver;
