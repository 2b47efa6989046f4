//! The transcript: the story of a run, in two versions.
//!
//! The *snapshot* version holds only what must stay true from run to run —
//! the steps, in order, and their verdicts — so it can be compared with
//! insta and quoted by the book. The *live* version, printed as the run goes
//! (`just scenario NN`), adds what varies: pids, the port, counts, times,
//! which worker answered. Every line is written once, with its live detail
//! beside it, so the two versions cannot tell different stories.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Collects the snapshot version; prints the live one when asked to.
#[derive(Debug)]
pub struct Transcript {
    lines: Vec<String>,
    live: Option<MultiProgress>,
}

impl Transcript {
    /// A transcript that only collects (for tests).
    pub fn quiet() -> Self {
        Transcript {
            lines: Vec::new(),
            live: None,
        }
    }

    /// A transcript that also prints each line, with its details, as it
    /// happens, and draws a progress bar while load runs.
    pub fn live() -> Self {
        Transcript {
            lines: Vec::new(),
            live: Some(MultiProgress::with_draw_target(ProgressDrawTarget::stdout())),
        }
    }

    /// A line that is the same in both versions.
    pub fn line(&mut self, text: impl Into<String>) {
        let text = text.into();
        self.print(&text);
        self.lines.push(text);
    }

    /// Live-only detail under the previous line: what varies.
    pub fn detail(&mut self, text: impl AsRef<str>) {
        self.print(&format!("        {}", text.as_ref()));
    }

    /// A progress bar for `len` requests: drawn live, hidden otherwise.
    pub fn progress(&self, len: u64) -> ProgressBar {
        match &self.live {
            Some(multi) if std::io::stdout().is_terminal() => {
                let bar = multi.add(ProgressBar::new(len));
                if let Ok(style) =
                    ProgressStyle::with_template("        {bar:40} {pos}/{len} requests {elapsed}")
                {
                    bar.set_style(style);
                }
                bar
            }
            _ => ProgressBar::hidden(),
        }
    }

    /// The last line written, or "" before the first.
    pub fn last_line(&self) -> &str {
        self.lines.last().map_or("", String::as_str)
    }

    /// The snapshot version, one line per step, ending in a newline.
    pub fn text(&self) -> String {
        let mut text = self.lines.join("\n");
        text.push('\n');
        text
    }

    fn print(&self, text: &str) {
        match &self.live {
            // Through indicatif so a bar being drawn is not torn apart.
            Some(multi) if std::io::stdout().is_terminal() => {
                let _ = multi.println(text);
            }
            Some(_) => println!("{text}"),
            None => {}
        }
    }
}
