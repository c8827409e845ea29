//! The runbook format and everything that can be known about a runbook without running it.
//!
//! Text goes in; a typed [`model::Runbook`], a [`plan::Plan`] (the step DAG) and every
//! [`diag::Diagnostic`] come out. Templates and conditions are parsed and checked here and
//! rendered/evaluated by the executor.
//!
//! **Architecture invariant:** this crate does no I/O (no files, no processes, no
//! network, no clock, no tokio) and never panics on user input.

#![deny(missing_docs)]

pub mod cond;
pub mod convert;
pub mod diag;
pub mod diff;
pub mod facts;
pub mod model;
pub mod plan;
pub mod render;
pub mod scenario;
pub mod template;
pub mod text;
pub mod tools;
pub mod validate;
pub mod yaml;

pub use diag::{Code, Diagnostic, Severity, Span};
pub use model::Runbook;
pub use plan::Plan;
pub use validate::{Checked, check};
