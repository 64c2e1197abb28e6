//! The help texts as a user sees them: `-h` gives one line per option, `--help` the details.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_lapce-ipc");

fn help(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The lines of the `Options:` and `Arguments:` sections.
fn option_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut in_section = false;
    for line in text.lines() {
        if line == "Options:" || line == "Arguments:" || line == "Commands:" {
            in_section = true;
        } else if line.is_empty() {
            in_section = false;
        } else if in_section {
            lines.push(line);
        }
    }
    lines
}

#[test]
fn short_help_gives_one_line_per_option() {
    for command in [&[][..], &["bench"], &["serve"], &["call"], &["stress"], &["clean"]] {
        let text = help(&[command, &["-h"]].concat());
        let lines = option_lines(&text);
        assert!(lines.len() >= 2, "{command:?}: no options found:\n{text}");
        for line in &lines {
            // An option or argument starts its line; a wrapped or next-line text would not.
            let start = line.trim_start();
            let is_entry = start.starts_with('-') || start.starts_with('[') || start.starts_with('<');
            let is_command = command.is_empty() && !line.starts_with("   ");
            assert!(
                is_entry || is_command,
                "{command:?}: a help text takes more than one line: {line:?}\n{text}"
            );
            assert!(line.chars().count() <= 130, "{command:?}: a help line is too long: {line:?}");
        }
    }
}

#[test]
fn long_help_has_the_details() {
    let short = help(&["call", "-h"]);
    let long = help(&["call", "--help"]);
    assert!(long.len() > short.len() * 2, "--help adds little to -h:\n{long}");
    // Every named message type of the library is listed, with its wire value.
    for name in ["heartbeat (0x1)", "data (0x2)", "stream-chunk (0x6)", "complete (0x100)", "cancel (0x102)"]
    {
        assert!(long.contains(name), "call --help does not list {name}:\n{long}");
    }
    let bench = help(&["bench", "--help"]);
    assert!(bench.contains("budget_hit"), "bench --help lost the details of --peer-budget:\n{bench}");
    assert!(help(&["--help"]).contains("RUST_LOG"), "the top-level --help does not mention RUST_LOG");
}
