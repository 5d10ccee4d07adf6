//! Running SQLite's online backup with a progress bar.

use std::io::IsTerminal;
use std::thread;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use rusqlite::backup::{Backup, StepResult};

/// Pages copied per backup step.
const STEP_PAGES: i32 = 256;
/// How long to keep retrying a busy or locked source before giving up.
const BUSY_RETRIES: u32 = 500;

/// Run `backup` to completion, `STEP_PAGES` at a time, drawing a bar on
/// stderr when it is a terminal and the copy takes more than one step.
/// Returns the number of pages copied.
pub fn run_backup(backup: &Backup<'_, '_>, label: &str) -> Result<u64, BackupError> {
    let show = std::io::stderr().is_terminal();
    let mut bar: Option<ProgressBar> = None;
    let mut busy = 0;
    loop {
        match backup.step(STEP_PAGES).map_err(BackupError::Sqlite)? {
            StepResult::Done => break,
            StepResult::Busy | StepResult::Locked => {
                busy += 1;
                if busy > BUSY_RETRIES {
                    return Err(BackupError::Busy);
                }
                thread::sleep(Duration::from_millis(10));
            }
            _ => {
                busy = 0;
                let p = backup.progress();
                let total = u64::try_from(p.pagecount).unwrap_or(0);
                let done = total.saturating_sub(u64::try_from(p.remaining).unwrap_or(0));
                if show && bar.is_none() {
                    bar = Some(new_bar(total, label));
                }
                if let Some(bar) = &bar {
                    bar.set_length(total);
                    bar.set_position(done);
                }
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(u64::try_from(backup.progress().pagecount).unwrap_or(0))
}

fn new_bar(total: u64, label: &str) -> ProgressBar {
    let style = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} pages ({eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    ProgressBar::new(total)
        .with_style(style)
        .with_message(label.to_string())
}

/// A spinner on stderr while a long step runs, when stderr is a terminal.
/// Cleared when dropped.
pub struct Spinner(Option<ProgressBar>);

impl Spinner {
    pub fn start(message: &str) -> Spinner {
        if !std::io::stderr().is_terminal() {
            return Spinner(None);
        }
        let bar = ProgressBar::new_spinner().with_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        Spinner(Some(bar))
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

pub enum BackupError {
    Sqlite(rusqlite::Error),
    /// The source stayed busy or locked by another connection.
    Busy,
}
