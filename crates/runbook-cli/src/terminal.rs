//! The terminal as the operator: questions about acts and manual steps, in-flight acts
//! on resume, missing parameters, all on stderr, one at a time, with spinners held back
//! while a question is on screen.

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};

use anstyle::Style;
use runbook_core::model::{Param, ParamType};
use runbook_exec::session::InflightDecision;
use runbook_exec::{Answer, Operator, Question};

pub(crate) fn ask_inflight(
    id: &str,
    title: &str,
    killed: Option<runbook_exec::event::Killed>,
) -> InflightDecision {
    let mut err = anstream::stderr();
    let _ = writeln!(
        err,
        "act `{id}` ({title}) {}: it may have been partly applied.",
        runbook_exec::session::unknown_outcome(killed)
    );
    loop {
        let Some(line) = read_answer("Was it applied? [d]one / [r]un again / [a]bort: ") else {
            return InflightDecision::Abort;
        };
        match line.trim().to_ascii_lowercase().as_str() {
            "d" | "done" => return InflightDecision::Done,
            "r" | "run" | "rerun" => return InflightDecision::Rerun,
            "a" | "abort" => return InflightDecision::Abort,
            _ => {}
        }
    }
}

pub(crate) fn prompt_param(interactive: bool, name: &str, p: &Param) -> Option<String> {
    if !interactive {
        return None;
    }
    let what = p
        .description
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    let question = format!("{name}{what}: ");
    if p.ty.value == ParamType::Secret {
        return rpassword::prompt_password(question).ok();
    }
    read_answer(&question)
}

/// Show `prompt` on stderr and read one line from stdin; `None` at the end of input.
pub(crate) fn read_answer(prompt: &str) -> Option<String> {
    let mut err = anstream::stderr();
    let _ = write!(err, "{prompt}");
    let _ = err.flush();
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end_matches(['\n', '\r']).to_string()),
    }
}

/// Asks on the terminal, one question at a time.
pub(crate) struct Terminal {
    pub(crate) lock: tokio::sync::Mutex<()>,
    /// Spinners to hide while a question is on screen.
    pub(crate) progress: Option<Arc<Screen>>,
    /// Show the step's command with the question: only when the display has not just
    /// shown it (`--output json`); the human display prints it once, above.
    pub(crate) show_action: bool,
}

/// The terminal while spinners are drawn: lines go above the spinners, and while a
/// question is on screen they are held back (never blocking the engine) and shown after.
pub(crate) struct Screen {
    pub(crate) bars: indicatif::MultiProgress,
    /// `Some(held lines)` while a question is on screen.
    asking: Mutex<Option<Vec<String>>>,
}

impl Screen {
    pub(crate) fn new() -> Self {
        Screen {
            bars: indicatif::MultiProgress::with_draw_target(
                indicatif::ProgressDrawTarget::stdout(),
            ),
            asking: Mutex::new(None),
        }
    }

    pub(crate) fn println(&self, line: String) {
        let Ok(mut asking) = self.asking.lock() else {
            return;
        };
        match asking.as_mut() {
            Some(held) => held.push(line),
            None => {
                let _ = self.bars.println(line);
            }
        }
    }

    /// Ask with the spinners out of the way.
    fn ask(&self, question: &Question) -> Answer {
        if let Ok(mut asking) = self.asking.lock() {
            *asking = Some(Vec::new());
        }
        let _ = self.bars.clear();
        self.bars
            .set_draw_target(indicatif::ProgressDrawTarget::hidden());
        let answer = ask_blocking(question, false);
        if let Ok(mut asking) = self.asking.lock() {
            self.bars
                .set_draw_target(indicatif::ProgressDrawTarget::stdout());
            for line in asking.take().unwrap_or_default() {
                let _ = self.bars.println(line);
            }
        }
        answer
    }
}

impl Operator for Terminal {
    fn ask(
        &self,
        question: Question,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send + '_>> {
        Box::pin(async move {
            let _turn = self.lock.lock().await;
            let progress = self.progress.clone();
            let show_action = self.show_action;
            tokio::task::spawn_blocking(move || match progress {
                Some(screen) => screen.ask(&question),
                None => ask_blocking(&question, show_action),
            })
            .await
            .unwrap_or(Answer::Abort)
        })
    }
}

pub(crate) fn ask_blocking(q: &Question, show_action: bool) -> Answer {
    let mut err = anstream::stderr();
    let bold = Style::new().bold();
    let _ = writeln!(err);
    let _ = writeln!(
        err,
        "{bold}{} {}{bold:#} — {}",
        if q.manual { "manual" } else { "act" },
        q.step,
        q.title
    );
    if show_action {
        for line in &q.lines {
            let _ = writeln!(err, "    {line}");
        }
    }
    let question = q.confirm.clone().unwrap_or_else(|| {
        if q.manual {
            "Done?".into()
        } else {
            "Run this step?".into()
        }
    });
    loop {
        let Some(line) = read_answer(&format!("{bold}{question}{bold:#} [y/N/skip/abort] ")) else {
            return Answer::Abort;
        };
        match line.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => return Answer::Approve,
            "" | "n" | "no" => return Answer::Decline,
            "s" | "skip" => return Answer::Skip,
            "a" | "abort" | "q" | "quit" => return Answer::Abort,
            other => {
                let _ = writeln!(err, "`{other}`: answer y, n, skip or abort");
            }
        }
    }
}
