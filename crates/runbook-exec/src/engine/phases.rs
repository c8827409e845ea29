//! Phases: time budgets over groups of steps (the outage response's "situation within 5
//! minutes"), measured on the run clock like escalation. The scheduler tells the tracker
//! when a step starts and when states change; the tracker emits `phase_started`,
//! `phase_overrun` (the moment a deadline passes with steps of the phase still to run) and
//! `phase_finished`.

use std::time::Duration;

use runbook_core::model::Runbook;

use super::schedule::State;
use super::{Shared, millis};
use crate::event::Event;

pub(super) struct Phases {
    /// The phase index of each step.
    of_step: Vec<Option<usize>>,
    started: Vec<bool>,
    open: Vec<bool>,
    overrun: Vec<bool>,
}

impl Phases {
    pub(super) fn new(rb: &Runbook) -> Self {
        let n = rb.phases.len();
        let of_step = rb
            .steps
            .iter()
            .map(|s| {
                let p = s.phase.as_ref()?;
                rb.phases.iter().position(|ph| ph.id.value == p.value)
            })
            .collect();
        Phases {
            of_step,
            started: vec![false; n],
            open: vec![false; n],
            overrun: vec![false; n],
        }
    }

    fn event(sh: &Shared, p: usize) -> (String, String, u64, u64) {
        let ph = &sh.runbook.phases[p];
        (
            ph.id.value.clone(),
            ph.title.clone(),
            millis(ph.within.value.value),
            millis(sh.elapsed()),
        )
    }

    /// Step `i` is starting: its phase opens (announced the first time).
    pub(super) fn step_starting(&mut self, sh: &Shared, i: usize) {
        let Some(p) = self.of_step.get(i).copied().flatten() else {
            return;
        };
        self.open[p] = true;
        if !std::mem::replace(&mut self.started[p], true) {
            let (phase, title, within_ms, elapsed_ms) = Self::event(sh, p);
            sh.emit(Event::PhaseStarted {
                phase,
                title,
                within_ms,
                elapsed_ms,
            });
        }
    }

    /// Close every open phase whose steps have all ended or will not run.
    pub(super) fn settle(&mut self, sh: &Shared, states: &[State]) {
        for p in 0..self.open.len() {
            if self.open[p] && self.ended(states, p) {
                self.close(sh, p, true);
            }
        }
    }

    fn ended(&self, states: &[State], p: usize) -> bool {
        self.of_step
            .iter()
            .zip(states)
            .filter(|(ph, _)| **ph == Some(p))
            .all(|(_, st)| st.resolved())
    }

    fn close(&mut self, sh: &Shared, p: usize, complete: bool) {
        self.open[p] = false;
        let (phase, title, within_ms, elapsed_ms) = Self::event(sh, p);
        let overrun = self.overrun[p] || elapsed_ms > within_ms;
        self.overrun[p] = overrun;
        sh.emit(Event::PhaseFinished {
            phase,
            title,
            within_ms,
            elapsed_ms,
            overrun,
            complete,
        });
    }

    /// Time until the nearest deadline of an open phase not yet marked overrun.
    pub(super) fn next_deadline(&self, sh: &Shared) -> Option<Duration> {
        let now = sh.elapsed();
        (0..self.open.len())
            .filter(|&p| self.open[p] && !self.overrun[p])
            .map(|p| sh.runbook.phases[p].within.value.value.saturating_sub(now))
            .min()
    }

    /// Mark the open phases whose deadline has passed.
    pub(super) fn mark_overruns(&mut self, sh: &Shared) {
        let now = sh.elapsed();
        for p in 0..self.open.len() {
            if self.open[p] && !self.overrun[p] && sh.runbook.phases[p].within.value.value <= now {
                self.overrun[p] = true;
                let (phase, title, within_ms, elapsed_ms) = Self::event(sh, p);
                sh.emit(Event::PhaseOverrun {
                    phase,
                    title,
                    within_ms,
                    elapsed_ms,
                });
            }
        }
    }

    /// The run ended: close what is still open (complete if its steps all ended anyway).
    pub(super) fn finish(&mut self, sh: &Shared, states: &[State]) {
        for p in 0..self.open.len() {
            if self.open[p] {
                let complete = self.ended(states, p);
                self.close(sh, p, complete);
            }
        }
    }
}
