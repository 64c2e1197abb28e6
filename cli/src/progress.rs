//! Progress of the long commands (`bench`, `stress`): on a terminal an indicatif bar on stderr
//! (steps done of all, elapsed time, the step running now) with each finished step's result
//! printed above it; elsewhere (CI logs, pipes) the same results as plain lines, no escape codes.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

/// The progress of one command: `total` steps.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// The step running now (printed with its result).
    current: Mutex<String>,
}

impl Progress {
    /// Progress over `total` steps; a bar only when stderr is a terminal.
    pub fn new(total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) =
                ProgressStyle::with_template("[{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} {wide_msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        });
        Progress { bar, current: Mutex::new(String::new()) }
    }

    /// Plain lines only, never a bar (for output that has its own progress lines).
    pub fn plain() -> Progress {
        Progress { bar: None, current: Mutex::new(String::new()) }
    }

    /// A step starts: `what` is shown on the bar (or printed, without a newline).
    pub fn start(&self, what: impl Into<String>) {
        let what = what.into();
        match &self.bar {
            Some(bar) => bar.set_message(what.clone()),
            None => eprint!("{what}... "),
        }
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = what;
    }

    /// The step ends with `result`, printed after its description.
    pub fn done(&self, result: impl AsRef<str>) {
        let what = std::mem::take(&mut *self.current.lock().unwrap_or_else(|p| p.into_inner()));
        match &self.bar {
            Some(bar) => {
                bar.println(format!("{what}... {}", result.as_ref()));
                bar.inc(1);
            }
            None => eprintln!("{}", result.as_ref()),
        }
    }

    /// A line between steps (a note), printed above the bar.
    pub fn note(&self, line: impl AsRef<str>) {
        match &self.bar {
            Some(bar) => bar.println(line.as_ref()),
            None => eprintln!("{}", line.as_ref()),
        }
    }

    /// A phase of the running step: shown on the bar; without a bar printed as a line of its own.
    pub fn phase(&self, line: impl Into<String>) {
        let line = line.into();
        match &self.bar {
            Some(bar) => bar.set_message(line.clone()),
            None => eprintln!("{line}"),
        }
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = line;
    }

    /// A line that reports a result of the running step and names what it does next: printed
    /// above the bar and shown on it; without a bar a plain line.
    pub fn line(&self, line: impl Into<String>) {
        let line = line.into();
        match &self.bar {
            Some(bar) => {
                bar.println(&line);
                bar.set_message(line.clone());
            }
            None => eprintln!("{line}"),
        }
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = line;
    }

    /// What the running step does now, on the bar only: nothing is printed without a bar (for
    /// commands whose plain output is their results alone).
    pub fn status(&self, what: impl Into<String>) {
        if let Some(bar) = &self.bar {
            bar.set_message(what.into());
        }
    }

    /// The running step ends without a result line of its own (its lines were printed).
    pub fn advance(&self) {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clear();
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// Runs `f` with the bar hidden, for output of its own (lines on stdout) that would
    /// otherwise mix with the bar's redraws; without a bar just runs it.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Removes the bar (before the final report is printed).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
