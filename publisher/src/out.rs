//! Where the CLI's output goes: human lines, or with `--json` one JSON object per line on stdout
//! (the schema is [`crate::json`]), and the live progress of a release that spreads (a
//! progress bar on a terminal, a plain line when the numbers change otherwise, `progress`
//! events with `--json`).

use std::fmt::Display;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::json::{self, Event};

/// `--json`, on every command that prints.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Output")]
pub struct OutArgs {
    /// Print JSON on stdout instead of text: one object per line, each with an "event" field;
    /// the last line is the result (or {"event":"error",...}). See README, "For scripts".
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sink {
    Stdout,
    Stderr,
}

/// Human text or JSON, and where human text goes.
#[derive(Clone, Debug)]
pub struct Out {
    json: bool,
    human: Sink,
}

impl Out {
    /// Human lines on stdout.
    pub fn human() -> Out {
        Out {
            json: false,
            human: Sink::Stdout,
        }
    }

    /// JSON lines on stdout; no human text.
    pub fn json() -> Out {
        Out {
            json: true,
            human: Sink::Stdout,
        }
    }

    pub fn new(json: bool) -> Out {
        if json { Out::json() } else { Out::human() }
    }

    /// Human lines on stderr (what `demo --json` shows a person while stdout keeps the JSON).
    pub fn human_on_stderr() -> Out {
        Out {
            json: false,
            human: Sink::Stderr,
        }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// A human line (nothing with `--json`).
    pub fn say(&self, line: impl Display) {
        if self.json {
            return;
        }
        match self.human {
            Sink::Stdout => println!("{line}"),
            Sink::Stderr => eprintln!("{line}"),
        }
    }

    /// Human text as it is, without a newline added (tables end with theirs).
    pub fn print(&self, text: &str) {
        if self.json {
            return;
        }
        match self.human {
            Sink::Stdout => {
                let mut o = std::io::stdout().lock();
                let _ = o.write_all(text.as_bytes());
                let _ = o.flush();
            }
            Sink::Stderr => eprint!("{text}"),
        }
    }

    /// A JSON line (nothing without `--json`).
    pub fn emit(&self, e: Event) {
        if self.json {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{}", json::line(&e));
            let _ = o.flush();
        }
    }

    /// Whether live progress may draw a bar: human text on stdout and a terminal on stderr.
    fn interactive(&self) -> bool {
        !self.json && self.human == Sink::Stdout && std::io::stderr().is_terminal()
    }
}

/// The numbers a progress display shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub active: u32,
    pub failed: u32,
    pub rejected: u32,
    /// Live agents, when a census counted them.
    pub agents: Option<u32>,
    /// `--expect`, for the bar's length when no census counted the fleet.
    pub expected: Option<u32>,
    pub chunks_served: u64,
    pub bytes_served: u64,
}

impl Counts {
    /// "agents active 2 of 3, failed 0, bytes served 1.2 MiB".
    pub fn line(&self) -> String {
        let of = self.agents.map(|m| format!(" of {m}")).unwrap_or_default();
        let failed = self.failed + self.rejected;
        format!(
            "agents active {}{of}, failed {failed}, bytes served {}",
            self.active,
            bytes(self.bytes_served)
        )
    }
}

/// Live progress of a release that spreads.
pub struct Progress {
    out: Out,
    bar: Option<ProgressBar>,
    last: Option<Counts>,
}

impl Progress {
    pub fn new(out: &Out) -> Progress {
        let bar = out.interactive().then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{bar:30}] {msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            out: out.clone(),
            bar,
            last: None,
        }
    }

    /// Shows `c` if it differs from what was shown last.
    pub fn update(&mut self, c: Counts) {
        if self.last == Some(c) {
            return;
        }
        let moved = self.last.is_none_or(|l| {
            (l.active, l.failed, l.rejected, l.agents) != (c.active, c.failed, c.rejected, c.agents)
        });
        self.last = Some(c);
        match &self.bar {
            Some(bar) => {
                let len = c
                    .agents
                    .or(c.expected)
                    .unwrap_or(0)
                    .max(c.active + c.failed + c.rejected);
                bar.set_length(len as u64);
                bar.set_position(c.active as u64);
                bar.set_message(c.line());
            }
            None if self.out.is_json() => {
                if moved {
                    self.out.emit(Event::Progress(json::Progress {
                        active: c.active,
                        failed: c.failed,
                        rejected: c.rejected,
                        chunks_served: c.chunks_served,
                        bytes_served: c.bytes_served,
                    }))
                }
            }
            // Plain lines: only when the agents' numbers move (not for every chunk served).
            None => {
                if moved {
                    self.out.say(format!("  {}", c.line()))
                }
            }
        }
    }

    /// A human line above the bar.
    pub fn say(&self, line: impl Display) {
        match &self.bar {
            Some(bar) => bar.suspend(|| self.out.say(line)),
            None => self.out.say(line),
        }
    }

    /// Removes the bar (the caller prints the result line).
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The live view of a staged rollout: one line per wave, redrawn in place on a terminal
/// (a spinner with the line), printed again when its numbers change otherwise. `--json`
/// callers emit their `rollout` events themselves (nothing is drawn).
pub struct Live {
    out: Out,
    bar: Option<ProgressBar>,
    last_key: Option<String>,
    last_line: String,
}

impl Live {
    pub fn new(out: &Out) -> Live {
        let bar = out.interactive().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Live {
            out: out.clone(),
            bar,
            last_key: None,
            last_line: String::new(),
        }
    }

    /// Shows `line`; `key` says what changed (a plain line is printed only when it does).
    /// Returns whether `key` changed.
    pub fn show(&mut self, line: &str, key: &str) -> bool {
        let changed = self.last_key.as_deref() != Some(key);
        self.last_key = Some(key.to_string());
        self.last_line = line.to_string();
        match &self.bar {
            Some(bar) => bar.set_message(line.to_string()),
            None if changed => self.out.say(line),
            None => {}
        }
        changed
    }

    /// The wave is over: its last line stays on the screen (on a terminal), the next wave's
    /// line starts below it.
    pub fn end_wave(&mut self) {
        if let Some(bar) = &self.bar
            && !self.last_line.is_empty()
        {
            let line = self.last_line.clone();
            bar.suspend(|| self.out.say(line));
        }
        self.last_key = None;
        self.last_line.clear();
    }

    /// A human line above the live one.
    pub fn say(&self, line: impl Display) {
        match &self.bar {
            Some(bar) => bar.suspend(|| self.out.say(line)),
            None => self.out.say(line),
        }
    }

    /// Leaves the last line on the screen and removes the spinner.
    pub fn finish(&mut self) {
        self.end_wave();
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// `n` bytes for people: `512 B`, `48.0 KiB`, `1.2 MiB`.
pub fn bytes(n: u64) -> String {
    const K: f64 = 1024.0;
    let f = n as f64;
    if f < K {
        format!("{n} B")
    } else if f < K * K {
        format!("{:.1} KiB", f / K)
    } else if f < K * K * K {
        format!("{:.1} MiB", f / (K * K))
    } else {
        format!("{:.1} GiB", f / (K * K * K))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_a_sentence() {
        let c = Counts {
            active: 2,
            failed: 1,
            rejected: 1,
            agents: Some(5),
            expected: None,
            chunks_served: 3,
            bytes_served: 3 * 16 * 1024,
        };
        assert_eq!(
            c.line(),
            "agents active 2 of 5, failed 2, bytes served 48.0 KiB"
        );
        let c = Counts { agents: None, ..c };
        assert_eq!(c.line(), "agents active 2, failed 2, bytes served 48.0 KiB");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}
