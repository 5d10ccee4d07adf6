//! Progress on stderr for long steps (when it is a terminal).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

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

/// A page-count progress bar on stderr, when stderr is a terminal.
/// Cleared when dropped.
pub struct Pages(Option<ProgressBar>);

impl Pages {
    pub fn start(total: u64, label: &str) -> Pages {
        Pages(
            std::io::stderr()
                .is_terminal()
                .then(|| new_bar(total, label)),
        )
    }

    pub fn set(&self, done: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(done);
        }
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}
