//! `just timeline`: lesson 08's rolling restart drawn from a real run.
//!
//! Runs a scenario script (by default `scenarios/timeline/08-rolling-restart.toml`:
//! four workers under keep-alive and new-connection clients, rolled by
//! SIGHUP) the way the snapshot test does, then draws what happened as an
//! SVG: one lane per worker, from its `fork` to its `ready` (warming up),
//! serving until it is told to `drain`, draining until its `exit`, and the
//! requests the load generator saw it answer. Nothing is drawn that the run
//! did not report: the times are the arrival times of the primary's events,
//! the counts the load generator's answers by `x-worker-id`.
//!
//! The SVG has no XML prolog and no blank line, so that the book can
//! include it inline, inside a `<div>`, as it includes a transcript.

// One process, whose stderr nobody shares: progress lines may go out as
// eprintln! writes them (see clippy.toml).
#![allow(clippy::disallowed_macros)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use scenarios::{Script, Transcript};
use serde_json::Value;

/// Draw lesson 08's rolling restart as a timeline, from a real run.
#[derive(Debug, Parser)]
#[command(name = "timeline", version, about)]
struct Args {
    /// The scenario script to run (its name starts with the lesson's number).
    #[arg(long, default_value = "scenarios/timeline/08-rolling-restart.toml")]
    script: PathBuf,
    /// The lesson binary; by default the one next to this program.
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Where to write the SVG; without it, to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    scenarios::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let path = match args.script.is_absolute() {
        true => args.script.clone(),
        false => scenarios::workspace_root().join(&args.script),
    };
    let script = Script::load(&path).map_err(|error| anyhow::anyhow!("{error}"))?;
    let nn = script.name.get(..2).unwrap_or_default().to_owned();
    let bin = match args.bin {
        Some(bin) => bin,
        None => std::env::current_exe()
            .context("finding this program's folder")?
            .with_file_name(format!("lesson-{nn}")),
    };
    if !bin.is_file() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p lesson-{nn}` (`just timeline` does that for you)",
            bin.display()
        );
    }
    eprintln!("running {} against {}", script.name, bin.display());
    let outcome = scenarios::run(&bin, &script, &mut Transcript::quiet()).await;
    if !outcome.passed() {
        bail!(
            "the run failed, so there is nothing true to draw:\n  - {}\n{}",
            outcome.failures.join("\n  - "),
            outcome.transcript
        );
    }
    let measured = &outcome.measured;
    let mut served: BTreeMap<u32, u64> = BTreeMap::new();
    for report in measured.loads.values() {
        for (worker, n) in &report.by_worker {
            if let Ok(id) = worker.parse::<u32>() {
                *served.entry(id).or_default() += n;
            }
        }
    }
    let failed: u64 = measured.loads.values().map(|r| r.failed).sum();
    let signal = measured
        .signals
        .first()
        .map(|(at, name)| (*at, name.clone()));
    let drawing = Drawing::from_run(&measured.timeline, &served, signal, failed)?;
    let svg = drawing.svg();
    match args.out {
        Some(out) => {
            std::fs::write(&out, &svg).with_context(|| format!("writing {}", out.display()))?;
            eprintln!("written to {}", out.display());
        }
        None => print!("{svg}"),
    }
    Ok(())
}

/// One worker's life, in seconds from the start of the run.
#[derive(Debug, Clone, PartialEq)]
struct Lane {
    id: u32,
    generation: u64,
    forked: f64,
    ready: Option<f64>,
    draining: Option<f64>,
    exited: Option<f64>,
    /// `exit 0`, `SIGKILL`, … as the exit event says.
    exit: Option<String>,
    served: u64,
}

/// What the picture shows: the lanes, and the moments that explain them.
#[derive(Debug, Clone, PartialEq)]
struct Drawing {
    lanes: Vec<Lane>,
    /// The rollout's start and end, if it ran.
    rollout: Option<(f64, f64)>,
    /// The signal that started it: when, and which.
    signal: Option<(f64, String)>,
    /// Where the picture ends: a little after the rollout.
    end: f64,
    /// Requests that got no answer, over every load of the run.
    failed: u64,
}

/// How far past the rollout's end the picture goes, when nothing stops the
/// cluster after it.
const AFTER_ROLLOUT: f64 = 0.25;

impl Drawing {
    /// Reads the events of one run; ignores what happens after the picture
    /// ends (the script's own SIGTERM, the last workers' exits).
    fn from_run(
        timeline: &[(Duration, Value)],
        served: &BTreeMap<u32, u64>,
        signal: Option<(Duration, String)>,
        failed: u64,
    ) -> anyhow::Result<Drawing> {
        let at = |kind: &str| {
            timeline
                .iter()
                .find(|(_, e)| e["event"] == kind)
                .map(|(t, _)| t.as_secs_f64())
        };
        let rollout = at("rollout_started").zip(at("rollout_finished"));
        let last = timeline.last().map_or(0.0, |(t, _)| t.as_secs_f64());
        // The picture ends where the cluster's own stop (the script's
        // SIGTERM) begins; without one, a little after the rollout.
        let end = at("shutdown")
            .or(rollout.map(|(_, done)| done + AFTER_ROLLOUT))
            .unwrap_or(last);
        let mut lanes: BTreeMap<u32, Lane> = BTreeMap::new();
        for (t, event) in timeline {
            let t = t.as_secs_f64();
            if t >= end {
                break;
            }
            let Some(id) = event["id"].as_u64().and_then(|id| u32::try_from(id).ok()) else {
                continue;
            };
            match event["event"].as_str() {
                Some("fork") => {
                    lanes.insert(
                        id,
                        Lane {
                            id,
                            generation: event["generation"].as_u64().unwrap_or(1),
                            forked: t,
                            ready: None,
                            draining: None,
                            exited: None,
                            exit: None,
                            served: served.get(&id).copied().unwrap_or(0),
                        },
                    );
                }
                Some("ready") => set(&mut lanes, id, |lane| lane.ready = Some(t)),
                Some("draining") => set(&mut lanes, id, |lane| lane.draining = Some(t)),
                Some("exit") => set(&mut lanes, id, |lane| {
                    lane.exited = Some(t);
                    lane.exit = Some(match (&event["signal"], &event["code"]) {
                        (Value::String(signal), _) => signal.clone(),
                        (_, Value::Number(code)) => format!("exit {code}"),
                        _ => "exit".to_owned(),
                    });
                }),
                _ => {}
            }
        }
        if lanes.is_empty() {
            bail!("the run reported no fork: nothing to draw");
        }
        Ok(Drawing {
            lanes: lanes.into_values().collect(),
            rollout,
            signal: signal.map(|(t, name)| (t.as_secs_f64(), name)),
            end,
            failed,
        })
    }

    fn svg(&self) -> String {
        Svg::new(self).draw()
    }
}

fn set(lanes: &mut BTreeMap<u32, Lane>, id: u32, change: impl FnOnce(&mut Lane)) {
    if let Some(lane) = lanes.get_mut(&id) {
        change(lane);
    }
}

/// The layout: a label column, a time axis, one lane per worker.
struct Svg<'a> {
    drawing: &'a Drawing,
    out: String,
}

const WIDTH: f64 = 860.0;
const LABEL: f64 = 130.0;
const COUNT: f64 = 120.0;
const TOP: f64 = 58.0;
const LANE: f64 = 26.0;
const BAR: f64 = 14.0;

impl<'a> Svg<'a> {
    fn new(drawing: &'a Drawing) -> Self {
        Svg {
            drawing,
            out: String::new(),
        }
    }

    /// The x of time `t` (seconds).
    fn x(&self, t: f64) -> f64 {
        let span = (WIDTH - LABEL - COUNT).max(1.0);
        LABEL + span * (t / self.drawing.end.max(0.001)).clamp(0.0, 1.0)
    }

    fn height(&self) -> f64 {
        TOP + LANE * self.drawing.lanes.len() as f64 + 44.0
    }

    fn draw(mut self) -> String {
        let height = self.height();
        let lanes = self.drawing.lanes.len();
        let _ = writeln!(
            self.out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height:.0}" width="100%" role="img" aria-label="A rolling restart of lesson 08, one lane per worker: {lanes} workers" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            self.out,
            r##"<rect class="background" x="0" y="0" width="{WIDTH}" height="{height:.0}" fill="#ffffff"/>"##
        );
        self.legend();
        self.moments();
        for (row, lane) in self.drawing.lanes.iter().enumerate() {
            self.lane(row, lane);
        }
        self.axis();
        self.out.push_str("</svg>\n");
        self.out
    }

    fn legend(&mut self) {
        let items = [
            ("warming", "#c9d6ea", "forked → ready"),
            ("serving", "#4c9a5a", "ready: in rotation"),
            ("draining", "#e8a33d", "draining"),
        ];
        let mut x = LABEL;
        for (class, colour, text) in items {
            let _ = writeln!(
                self.out,
                r#"<rect class="key {class}" x="{x:.1}" y="10" width="14" height="10" fill="{colour}"/><text x="{:.1}" y="19">{text}</text>"#,
                x + 18.0
            );
            x += 150.0;
        }
        let failed = self.drawing.failed;
        let _ = writeln!(
            self.out,
            r#"<text class="failed" x="{:.1}" y="19" text-anchor="end">requests failed: {failed}</text>"#,
            WIDTH - 10.0
        );
    }

    /// Dashed lines at the signal and at the rollout's end.
    fn moments(&mut self) {
        let bottom = TOP + LANE * self.drawing.lanes.len() as f64;
        let mut marks = Vec::new();
        // The signal's label left of its line, the rollout's right of its
        // own (or left, near the edge): close together, they do not collide.
        if let Some((t, name)) = &self.drawing.signal {
            marks.push((*t, name.clone(), "end", -3.0));
        }
        if let Some((started, done)) = self.drawing.rollout {
            let near_edge = self.x(done) > WIDTH - COUNT - 160.0;
            marks.push((
                done,
                format!("rollout finished ({:.2} s)", done - started),
                if near_edge { "end" } else { "start" },
                if near_edge { -3.0 } else { 3.0 },
            ));
        }
        for (t, text, anchor, shift) in marks {
            let x = self.x(t);
            let _ = writeln!(
                self.out,
                r##"<line class="moment" x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="#555555" stroke-dasharray="4 3"/><text class="moment" x="{:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"##,
                TOP - 14.0,
                x + shift,
                TOP - 18.0,
                escape(&text)
            );
        }
    }

    fn lane(&mut self, row: usize, lane: &Lane) {
        let y = TOP + LANE * row as f64;
        let mid = y + LANE / 2.0;
        let bar = mid - BAR / 2.0;
        let end = self.drawing.end;
        let _ = writeln!(
            self.out,
            r##"<g class="lane" data-worker="{}"><text class="label" x="8" y="{:.1}">worker {} (gen {})</text>"##,
            lane.id,
            mid + 4.0,
            lane.id,
            lane.generation
        );
        let serving_from = lane.ready;
        let serving_to = lane.draining.or(lane.exited).unwrap_or(end);
        let warming_to = lane.ready.or(lane.exited).unwrap_or(end);
        let spans = [
            ("warming", "#c9d6ea", Some(lane.forked), Some(warming_to)),
            ("serving", "#4c9a5a", serving_from, Some(serving_to)),
            (
                "draining",
                "#e8a33d",
                lane.draining,
                Some(lane.exited.unwrap_or(end)),
            ),
        ];
        for (class, colour, from, to) in spans {
            let (Some(from), Some(to)) = (from, to) else {
                continue;
            };
            let (x1, x2) = (self.x(from), self.x(to));
            // Even a 10 ms drain gets a visible sliver.
            let width = (x2 - x1).max(2.0);
            let _ = writeln!(
                self.out,
                r#"<rect class="{class}" x="{x1:.1}" y="{bar:.1}" width="{width:.1}" height="{BAR}" fill="{colour}"><title>worker {} {class}: {from:.3} s to {to:.3} s</title></rect>"#,
                lane.id
            );
        }
        if let (Some(t), Some(how)) = (lane.exited, &lane.exit) {
            let x = self.x(t);
            let how = match lane.draining {
                Some(from) => format!("{how}, drained in {:.0} ms", (t - from) * 1000.0),
                None => how.clone(),
            };
            let _ = writeln!(
                self.out,
                r##"<line class="exit" x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#222222" stroke-width="2"/><text class="exit" x="{:.1}" y="{:.1}" font-size="10">{}</text>"##,
                bar - 3.0,
                bar + BAR + 3.0,
                x + 4.0,
                mid + 4.0,
                escape(&how)
            );
        }
        let _ = writeln!(
            self.out,
            r#"<text class="served" x="{:.1}" y="{:.1}" text-anchor="end">{} requests</text></g>"#,
            WIDTH - 10.0,
            mid + 4.0,
            thousands(lane.served)
        );
    }

    /// Seconds along the bottom.
    fn axis(&mut self) {
        let y = TOP + LANE * self.drawing.lanes.len() as f64 + 8.0;
        let _ = writeln!(
            self.out,
            r##"<line class="axis" x1="{LABEL}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#222222"/>"##,
            self.x(self.drawing.end)
        );
        let end = self.drawing.end;
        let step = [0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .find(|step| end / step <= 12.0)
            .unwrap_or(30.0);
        let mut t = 0.0;
        while t <= end + 1e-9 {
            let x = self.x(t);
            let _ = writeln!(
                self.out,
                r##"<line class="tick" x1="{x:.1}" y1="{y:.1}" x2="{x:.1}" y2="{:.1}" stroke="#222222"/><text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{t:.1} s</text>"##,
                y + 5.0,
                y + 18.0
            );
            t += step;
        }
    }
}

/// `12345` → `12,345`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A rollout of two workers, as the primary would report it.
    fn canned() -> Vec<(Duration, Value)> {
        let ms = Duration::from_millis;
        vec![
            (ms(0), json!({"event": "fork", "id": 1, "generation": 1})),
            (ms(5), json!({"event": "fork", "id": 2, "generation": 1})),
            (ms(210), json!({"event": "ready", "id": 1})),
            (ms(215), json!({"event": "ready", "id": 2})),
            (
                ms(1000),
                json!({"event": "rollout_started", "generation": 2}),
            ),
            (ms(1001), json!({"event": "fork", "id": 3, "generation": 2})),
            (ms(1210), json!({"event": "ready", "id": 3})),
            (ms(1211), json!({"event": "draining", "id": 1})),
            (
                ms(1220),
                json!({"event": "exit", "id": 1, "code": 0, "signal": null}),
            ),
            (ms(1221), json!({"event": "fork", "id": 4, "generation": 2})),
            (ms(1430), json!({"event": "ready", "id": 4})),
            (ms(1431), json!({"event": "draining", "id": 2})),
            (
                ms(1440),
                json!({"event": "exit", "id": 2, "code": null, "signal": "SIGKILL"}),
            ),
            (
                ms(1441),
                json!({"event": "rollout_finished", "outcome": "completed"}),
            ),
            // After the picture: the script's own stop, sooner than the
            // margin after the rollout.
            (ms(1500), json!({"event": "shutdown", "reason": "SIGTERM"})),
            (ms(1501), json!({"event": "draining", "id": 3})),
            (ms(1510), json!({"event": "exit", "id": 3, "code": 0})),
        ]
    }

    fn drawing() -> Drawing {
        let served = BTreeMap::from([(1, 1200), (2, 34), (3, 5), (4, 0)]);
        let signal = Some((Duration::from_millis(999), "SIGHUP".to_owned()));
        match Drawing::from_run(&canned(), &served, signal, 0) {
            Ok(drawing) => drawing,
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn the_events_become_lanes() {
        let drawing = drawing();
        let ids: Vec<u32> = drawing.lanes.iter().map(|l| l.id).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        let one = &drawing.lanes[0];
        assert_eq!(
            (one.ready, one.draining, one.exited),
            (Some(0.21), Some(1.211), Some(1.22))
        );
        assert_eq!(one.exit.as_deref(), Some("exit 0"));
        assert_eq!(drawing.lanes[1].exit.as_deref(), Some("SIGKILL"));
        // Worker 3's stop after the rollout is not in the picture.
        assert_eq!(drawing.lanes[2].draining, None);
        assert_eq!(drawing.lanes[2].generation, 2);
        assert!((drawing.end - 1.5).abs() < 1e-9, "{}", drawing.end);
    }

    /// A tag of the SVG: its name, its attributes, and whether it opens,
    /// closes or is empty.
    #[derive(Debug)]
    struct Tag {
        name: String,
        attributes: BTreeMap<String, String>,
        kind: Kind,
    }

    #[derive(Debug, PartialEq)]
    enum Kind {
        Open,
        Close,
        Empty,
    }

    /// A small, strict reader: every tag well formed, every attribute
    /// quoted, every element closed in order, text free of stray `<` or
    /// `&`. Returns the tags, and the text inside each `<text>`.
    fn parse(svg: &str) -> Result<(Vec<Tag>, Vec<String>), String> {
        let mut tags = Vec::new();
        let mut texts = Vec::new();
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let text = &rest[..start];
            check_text(text)?;
            if stack.last().is_some_and(|top| top == "text") {
                texts.push(text.to_owned());
            }
            let end = rest[start..].find('>').ok_or("a tag is not closed")? + start;
            let inside = &rest[start + 1..end];
            rest = &rest[end + 1..];
            let tag = read_tag(inside)?;
            match tag.kind {
                Kind::Open => stack.push(tag.name.clone()),
                Kind::Close => match stack.pop() {
                    Some(open) if open == tag.name => {}
                    other => return Err(format!("</{}> closes {other:?}", tag.name)),
                },
                Kind::Empty => {}
            }
            tags.push(tag);
        }
        check_text(rest)?;
        if !stack.is_empty() {
            return Err(format!("not closed: {stack:?}"));
        }
        Ok((tags, texts))
    }

    fn check_text(text: &str) -> Result<(), String> {
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..];
            if !["&amp;", "&lt;", "&gt;", "&quot;"]
                .iter()
                .any(|e| entity.starts_with(e))
            {
                return Err(format!("a bare & in {text:?}"));
            }
        }
        Ok(())
    }

    fn read_tag(inside: &str) -> Result<Tag, String> {
        let (kind, body) = if let Some(name) = inside.strip_prefix('/') {
            (Kind::Close, name)
        } else if let Some(body) = inside.strip_suffix('/') {
            (Kind::Empty, body)
        } else {
            (Kind::Open, inside)
        };
        let body = body.trim();
        let (name, mut rest) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("a bad tag name in <{inside}>"));
        }
        let mut attributes = BTreeMap::new();
        loop {
            rest = rest.trim_start();
            if rest.is_empty() {
                break;
            }
            let (key, after) = rest
                .split_once("=\"")
                .ok_or(format!("an unquoted attribute in <{inside}>"))?;
            let (value, after) = after
                .split_once('"')
                .ok_or(format!("an open quote in <{inside}>"))?;
            check_text(value)?;
            attributes.insert(key.trim().to_owned(), value.to_owned());
            rest = after;
        }
        Ok(Tag {
            name: name.to_owned(),
            attributes,
            kind,
        })
    }

    fn number(tag: &Tag, name: &str) -> f64 {
        match tag.attributes.get(name).map(|v| v.parse::<f64>()) {
            Some(Ok(n)) if n.is_finite() => n,
            other => panic!("<{}> {name}={other:?}", tag.name),
        }
    }

    #[test]
    fn the_svg_is_well_formed_and_shows_every_lane() {
        let svg = drawing().svg();
        assert!(svg.starts_with("<svg "), "the book inlines it: no prolog");
        assert!(
            !svg.contains("\n\n"),
            "a blank line would end the book's HTML block"
        );
        let (tags, texts) = match parse(&svg) {
            Ok(parsed) => parsed,
            Err(error) => panic!("{error}\n{svg}"),
        };
        assert_eq!(tags[0].name, "svg");
        let view: Vec<f64> = tags[0].attributes["viewBox"]
            .split(' ')
            .map(|n| n.parse().unwrap_or(f64::NAN))
            .collect();
        let (width, height) = (view[2], view[3]);

        let lanes: Vec<&Tag> = tags
            .iter()
            .filter(|t| t.attributes.get("class").is_some_and(|c| c == "lane"))
            .collect();
        let workers: Vec<&str> = lanes
            .iter()
            .map(|t| t.attributes["data-worker"].as_str())
            .collect();
        assert_eq!(workers, ["1", "2", "3", "4"]);

        // Every bar inside the picture, in order along its lane.
        let bars: Vec<&Tag> = tags
            .iter()
            .filter(|t| t.name == "rect" && t.kind == Kind::Open)
            .collect();
        let classes: Vec<&str> = bars
            .iter()
            .map(|t| t.attributes["class"].as_str())
            .collect();
        assert_eq!(
            classes,
            [
                "warming", "serving", "draining", // worker 1
                "warming", "serving", "draining", // worker 2
                "warming", "serving", // worker 3, serving at the end
                "warming", "serving", // worker 4
            ]
        );
        for bar in &bars {
            let (x, w) = (number(bar, "x"), number(bar, "width"));
            assert!(x >= LABEL - 1e-6 && x + w <= width + 1e-6, "{bar:?}");
            let y = number(bar, "y");
            assert!(y > 0.0 && y + number(bar, "height") < height, "{bar:?}");
        }
        // A bar starts where the one before it on its lane ends.
        for pair in bars.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a.attributes["y"] == b.attributes["y"] && b.attributes["class"] != "warming" {
                let a_end = number(a, "x") + number(a, "width");
                assert!(number(b, "x") <= a_end + 1e-6, "{a:?} then {b:?}");
            }
        }

        for expected in [
            "worker 1 (gen 1)",
            "worker 4 (gen 2)",
            "1,200 requests",
            "0 requests",
            "exit 0, drained in 9 ms",
            "SIGKILL, drained in 9 ms",
            "SIGHUP",
            "rollout finished (0.44 s)",
            "requests failed: 0",
        ] {
            assert!(
                texts.iter().any(|t| t == expected),
                "no {expected:?} in {texts:?}"
            );
        }
    }

    #[test]
    fn the_reader_catches_garbage() {
        assert!(parse("<svg><g></svg></g>").is_err());
        assert!(parse("<svg x=1></svg>").is_err());
        assert!(parse("<svg><text>a & b</text></svg>").is_err());
        assert!(parse("<svg>").is_err());
        assert!(parse("<svg><text>ok &amp; fine</text></svg>").is_ok());
    }

    #[test]
    fn no_fork_no_picture() {
        let timeline = vec![(Duration::ZERO, json!({"event": "start"}))];
        assert!(Drawing::from_run(&timeline, &BTreeMap::new(), None, 0).is_err());
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
