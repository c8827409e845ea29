//! The executor: runs a [`runbook_core::Plan`] with real actions and records a journal.
//!
//! Not built yet: the executor issue fills this crate (tokio engine, shell/http/wait/manual
//! actions, dry run, journal). Until then the CLI only offers the read-only commands.
