//! Where the human-readable report of `bench` and `stress` goes: stdout, or stderr while stdout
//! carries the machine-readable result (`--json -`), so that the JSON is all stdout holds.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the report goes to stderr; set once, before anything is printed.
static REPORT_ON_STDERR: AtomicBool = AtomicBool::new(false);

/// Whether `path` means stdout (`-`), as `--json -` does.
pub fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Sends the report to stderr when `json` is stdout (`--json -`).
pub fn keep_stdout_for(json: Option<&Path>) {
    if json.is_some_and(is_stdout) {
        REPORT_ON_STDERR.store(true, Ordering::Relaxed);
    }
}

/// Prints one line of the report (the [`outln!`](crate::outln) macro's work).
pub fn line(args: std::fmt::Arguments<'_>) {
    if REPORT_ON_STDERR.load(Ordering::Relaxed) {
        eprintln!("{args}");
    } else {
        println!("{args}");
    }
}

/// Writes `text` to `path`, or to stdout for `-`.
pub fn write_result(path: &Path, text: &str) -> std::io::Result<()> {
    if is_stdout(path) {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    } else {
        std::fs::write(path, text)
    }
}

/// Where a result went, for the report's "wrote ..." line.
pub fn describe(path: &Path) -> String {
    if is_stdout(path) {
        "stdout".to_string()
    } else {
        path.display().to_string()
    }
}
