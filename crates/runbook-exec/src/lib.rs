//! Runs runbook plans: the engine, the actions and what a run reports.
//!
//! [`engine::Engine`] drives the plan from `runbook-core` on tokio. Actions are a closed
//! set ([`runbook_core::render::RenderedAction`]), each run by a function in [`action`].
//! Everything that happens is an [`event::Event`], sent to a [`event::Sink`] (terminal,
//! JSON lines, journal). Questions for the operator go through [`engine::Operator`].
//!
//! **Architecture invariant:** this crate never touches the terminal; the CLI renders
//! events and answers questions.

#![deny(missing_docs)]

pub mod action;
pub mod alert;
#[cfg(feature = "aws")]
pub mod aws;
pub mod backend;
pub(crate) mod capture;
pub mod engine;
pub mod eval;
pub mod event;
pub mod journal;
pub mod lock;
pub mod mask;
pub mod params;
pub mod resume;
pub mod scenario;
pub mod session;
pub mod ssm;

pub use backend::{Backend, Live};
pub use engine::{Control, Engine, Operator, Options, Question, Report, Restored, Route};
pub use event::{Answer, Event, Mode, RunStatus, Sink, Status};

/// `user@host`: the login name (or `$USER`) and the host name.
pub fn default_operator() -> String {
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into());
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}")
}
