//! Runs a script against a lesson binary and tells the story.
//!
//! Steps run in order. A step that waits (for events, for a load, for the
//! primary to exit) and does not get what it waited for stops the scenario:
//! what follows would only report confusing consequences. A failed `expect`
//! does not stop it, so one run shows every check that fails.
//!
//! Two checks run after every script, because they hold for every lesson:
//! the primary has exited by the end of the story, and no worker outlives
//! it. A lesson that leaks a process fails its scenario even if no script
//! thought to ask.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::check::{Check, Fact, Verdict, over_events};
use crate::lesson::{Launch, Lesson};
use crate::load::{self, LoadReport, LoadSpec, Response};
use crate::script::{Action, Program, RedisAction, Script};
use crate::transcript::Transcript;

/// How long workers get to disappear once the primary has exited.
const ORPHAN_GRACE: Duration = Duration::from_secs(2);

/// The result of one run.
#[derive(Debug)]
pub struct Outcome {
    /// The snapshot version of the transcript.
    pub transcript: String,
    /// One line per failed verdict; empty if the scenario passed.
    pub failures: Vec<String>,
    /// The same failures in words, in the order they happened: what the
    /// script expected and what happened instead (`just exercise` shows the
    /// first one to a learner).
    pub failed: Vec<Failed>,
    /// Everything the lesson wrote on stderr.
    pub stderr: String,
    /// What was measured on the way, for `just compare`.
    pub measured: Measured,
}

/// The numbers of one run, kept for side-by-side tables (`just compare`):
/// what the clients saw, when things happened, how big the workers were.
#[derive(Debug, Default)]
pub struct Measured {
    /// Every finished load, by name.
    pub loads: BTreeMap<String, LoadReport>,
    /// Every event the primary printed, with when it arrived (from the start).
    pub timeline: Vec<(Duration, Value)>,
    /// The loads' names in the order they finished (the script's order,
    /// for the ones that run in the foreground).
    pub load_order: Vec<String>,
    /// When each `signal` step sent its signal (from the start).
    pub signals: Vec<(Duration, String)>,
    /// When each `kill_worker` step killed its worker (from the start).
    pub kills: Vec<Duration>,
    /// When the primary exited (from the start), if it did by itself.
    pub exited: Option<Duration>,
    /// The resident memory of each live worker at the last `sample`
    /// step, in MiB.
    pub worker_rss_mib: Vec<f64>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// One check that did not hold, told in words rather than as a transcript
/// line: a learner reads "expected … — what happened: …", not a `✗`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The script line of the step that failed; none for the checks the
    /// runner makes after every script.
    pub line: Option<usize>,
    /// What the script expected, in its own words (a check's text, an event
    /// it waited for).
    pub expected: String,
    /// What happened instead.
    pub happened: String,
}

/// What the steps have learned so far.
#[derive(Debug, Default)]
pub struct Facts {
    loads: BTreeMap<String, LoadReport>,
    running: BTreeMap<String, JoinHandle<Result<LoadReport, load::LoadError>>>,
    requests: BTreeMap<String, Result<Response, load::Failure>>,
    failures: Vec<String>,
    failed: Vec<Failed>,
    /// The script line of the step running now.
    line: Option<usize>,
    /// The run's private folder, `{dir}` in a script's `args`.
    dir: Option<tempfile::TempDir>,
    /// The run's private redis-server, for scripts with `redis = true`.
    redis: Option<redis_helper::Redis>,
    /// When the program was started.
    begun: Option<Instant>,
    signals: Vec<(Duration, String)>,
    kills: Vec<Duration>,
    load_order: Vec<String>,
    exited: Option<Duration>,
    worker_rss_mib: Vec<f64>,
}

/// Runs `script` against the lesson binary `bin` (or the script's Node
/// twin), writing to `transcript`.
pub async fn run(bin: &Path, script: &Script, transcript: &mut Transcript) -> Outcome {
    let mut facts = Facts::default();
    let mut lesson = match start(bin, script, &mut facts, transcript).await {
        Ok(lesson) => lesson,
        Err(error) => {
            transcript.line(format!("✗ {error}"));
            let failed = Failed {
                line: None,
                expected: "the program to start".into(),
                happened: error.clone(),
            };
            return Outcome {
                transcript: transcript.text(),
                failures: vec![error],
                failed: vec![failed],
                stderr: String::new(),
                measured: Measured::default(),
            };
        }
    };
    let begun = Instant::now();
    facts.begun = Some(begun);
    transcript.detail(format!(
        "primary pid {}, flags added: {}",
        lesson.pid(),
        crate::lesson::RUNNER_FLAGS.join(" ")
    ));

    run_steps(script, &mut lesson, &mut facts, transcript).await;
    facts.line = None;
    finish(&mut lesson, &mut facts, transcript).await;
    let timeline = lesson
        .timeline()
        .into_iter()
        .map(|(at, event)| (at.saturating_duration_since(begun), event))
        .collect();
    Outcome {
        transcript: transcript.text(),
        failures: facts.failures,
        failed: facts.failed,
        stderr: lesson.stderr(),
        measured: Measured {
            loads: facts.loads,
            load_order: facts.load_order,
            timeline,
            signals: facts.signals,
            kills: facts.kills,
            exited: facts.exited,
            worker_rss_mib: facts.worker_rss_mib,
        },
    }
}

/// Tells the transcript what starts, and starts it: the run's folder and
/// Redis first ([`prepare`]), then the program with the script's flags.
async fn start(
    bin: &Path,
    script: &Script,
    facts: &mut Facts,
    transcript: &mut Transcript,
) -> Result<Lesson, String> {
    let program = match &script.program {
        Program::Lesson => bin
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        Program::Node(file) => format!("node {file}"),
    };
    transcript.line(format!("# {}: {}", script.name, script.title));
    transcript.line(
        format!("start {program} {}", script.args.join(" "))
            .trim_end()
            .to_owned(),
    );
    let launch = prepare(bin, script, facts).await?;
    let args = with_dir(&script.args, facts.dir.as_ref());
    Lesson::launch(&launch, &args).map_err(|error| error.to_string())
}

/// The steps in order, until one that cannot be carried out: the steps
/// after it would only report its consequences.
async fn run_steps(
    script: &Script,
    lesson: &mut Lesson,
    facts: &mut Facts,
    transcript: &mut Transcript,
) {
    // Events counted by `wait` start here, and move on with each action.
    let mut mark = 0;
    for step in &script.steps {
        if step.action.is_action() {
            mark = lesson.event_count();
        }
        let line = step.line;
        facts.line = Some(line);
        let failed_before = facts.failed.len();
        let carry_on = run_step(&step.action, lesson, facts, mark, transcript).await;
        if !carry_on {
            facts
                .failures
                .push(format!("{}:{line}: the step failed", script.path.display()));
            if facts.failed.len() == failed_before {
                // A step that could not be carried out (a load that found
                // no server, a signal to a process that is gone) says why
                // on its own transcript line.
                let happened = transcript.last_line().trim_start_matches("✗ ").to_owned();
                facts.fail("the step to be carried out".into(), happened);
            }
            transcript.line("stopped: the steps after this one were skipped");
            break;
        }
    }
}

/// What to start for `script`, and the private Redis it asks for.
pub async fn prepare(bin: &Path, script: &Script, facts: &mut Facts) -> Result<Launch, String> {
    let mut launch = match &script.program {
        Program::Lesson => Launch::binary(bin),
        Program::Node(file) => {
            let root = crate::workspace_root();
            let nn = script.name.get(..2).unwrap_or_default();
            let twin = crate::node::twin(&root, nn, file).map_err(|error| error.to_string())?;
            crate::node::ensure_packages(&root).map_err(|error| error.to_string())?;
            Launch::node(&twin).map_err(|error| error.to_string())?
        }
    };
    let needs_dir = script.args.iter().any(|arg| arg.contains("{dir}"))
        || script
            .steps
            .iter()
            .any(|step| matches!(step.action, Action::Touch(_) | Action::Remove(_)));
    if needs_dir {
        let dir = tempfile::Builder::new()
            .prefix("scenario-")
            .tempdir()
            .map_err(|error| format!("cannot make the run's private folder: {error}"))?;
        facts.dir = Some(dir);
    }
    if script.redis {
        let redis = redis_helper::Redis::start_private()
            .await
            .map_err(|error| format!("cannot start the scenario's redis-server: {error}"))?;
        launch
            .env
            .push(("REDIS_URL".into(), redis.url().to_owned()));
        facts.redis = Some(redis);
    }
    Ok(launch)
}

/// Runs one step; false if the scenario cannot go on. Each kind of step
/// has its own function below: what a step does, and how it tells the
/// transcript, reads in one place.
async fn run_step(
    action: &Action,
    lesson: &mut Lesson,
    facts: &mut Facts,
    mark: usize,
    transcript: &mut Transcript,
) -> bool {
    match action {
        Action::Say(text) => {
            transcript.line(format!("# {text}"));
            true
        }
        Action::Wait {
            event,
            count,
            matching,
            within,
            none,
        } => {
            let wait = EventWait {
                event,
                matching,
                mark,
            };
            if *none {
                wait_for_none(&wait, *within, lesson, facts, transcript).await
            } else {
                wait_for_count(&wait, *count, *within, lesson, facts, transcript).await
            }
        }
        Action::Load {
            name,
            spec,
            background,
            until,
        } => {
            let load = LoadStep {
                name,
                spec,
                background: *background,
                until: until.as_deref(),
            };
            start_load(&load, mark, lesson, facts, transcript).await
        }
        Action::Await { name, within } => match facts.running.remove(name) {
            Some(run) => {
                transcript.line(format!("await {name}"));
                collect_load(name, run, *within, facts, transcript).await
            }
            None => {
                transcript.line(format!("await {name} ✗ no load named {name} is running"));
                false
            }
        },
        Action::Request { name, path, within } => {
            request(name, path, *within, lesson, facts, transcript).await
        }
        Action::Signal(signal) => send_signal(*signal, lesson, facts, transcript),
        Action::KillWorker(id) => kill_worker(*id, lesson, facts, transcript),
        Action::WaitExit { within } => wait_exit(*within, lesson, facts, transcript).await,
        Action::Touch(name) => file_fault(name, true, facts, transcript),
        Action::Remove(name) => file_fault(name, false, facts, transcript),
        Action::Pause(how_long) => {
            transcript.line(format!("pause {}", format_secs(*how_long)));
            tokio::time::sleep(*how_long).await;
            true
        }
        Action::SampleMemory => {
            sample_memory(lesson, facts, transcript);
            true
        }
        Action::Redis(what) => redis_step(*what, facts, transcript).await,
        Action::Expect { check, within } => {
            expect(check, *within, lesson, facts, transcript).await;
            true
        }
    }
}

/// The events a `wait` step looks for: of kind `event`, matching every
/// `matching` field, counted from the `mark`-th event on (the start of
/// the latest action).
#[derive(Debug, Clone, Copy)]
struct EventWait<'a> {
    event: &'a str,
    matching: &'a [(String, Value)],
    mark: usize,
}

impl EventWait<'_> {
    fn count(&self, events: &[Value]) -> usize {
        events[self.mark.min(events.len())..]
            .iter()
            .filter(|e| e["event"] == self.event && crate::check::matches(e, self.matching))
            .count()
    }
}

/// `wait` with `none = true`: passes if no such event comes for all of
/// `within`, which is how a script says something hangs. A failure here
/// does not stop the scenario: what follows still says something.
async fn wait_for_none(
    wait: &EventWait<'_>,
    within: Duration,
    lesson: &mut Lesson,
    facts: &mut Facts,
    transcript: &mut Transcript,
) -> bool {
    let came = lesson
        .wait_until(within, |events| wait.count(events) > 0)
        .await;
    let what = describe_wait(0, wait.event, wait.matching);
    let within = format_secs(within);
    if came {
        let line = format!("wait  {what} for {within} ✗ one came");
        facts.failures.push(line.clone());
        transcript.line(line);
        facts.fail(
            format!("{what} for {within}"),
            format!("one {} event came", wait.event),
        );
    } else {
        transcript.line(format!("wait  {what} for {within} ✓ none came"));
    }
    true
}

/// `wait` for `count` events: a wait that times out stops the scenario,
/// since the steps after it counted on those events.
async fn wait_for_count(
    wait: &EventWait<'_>,
    count: u64,
    within: Duration,
    lesson: &mut Lesson,
    facts: &mut Facts,
    transcript: &mut Transcript,
) -> bool {
    let wanted = count as usize;
    let begun = Instant::now();
    let ok = lesson
        .wait_until(within, |events| wait.count(events) >= wanted)
        .await;
    let what = describe_wait(count, wait.event, wait.matching);
    if ok {
        transcript.line(format!("wait  {what} ✓"));
        transcript.detail(format!("after {:?}", begun.elapsed()));
    } else {
        let seen = wait.count(&lesson.events());
        transcript.line(format!("wait  {what} ✗ (saw {seen})"));
        facts.fail(
            format!("{what} within {}", format_secs(within)),
            format!("{seen} came in that time"),
        );
        transcript.detail(format!("gave up after {:?}", begun.elapsed()));
    }
    ok
}

/// A `load` step's settings, as the script gave them.
#[derive(Debug, Clone, Copy)]
struct LoadStep<'a> {
    name: &'a str,
    spec: &'a LoadSpec,
    background: bool,
    until: Option<&'a str>,
}

/// `load`: starts the load generator, stopped early by the `until` event if
/// there is one; a background load is left running for an `await`, any
/// other is collected at once.
async fn start_load(
    load: &LoadStep<'_>,
    mark: usize,
    lesson: &mut Lesson,
    facts: &mut Facts,
    transcript: &mut Transcript,
) -> bool {
    let name = load.name;
    let addr = match lesson.addr().await {
        Ok(addr) => addr,
        Err(error) => {
            transcript.line(format!("load  {name} ✗ {error}"));
            return false;
        }
    };
    let mut how = describe_load(load.spec);
    let progress = transcript.progress(load.spec.requests);
    let spec = load.spec.clone();
    let stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = match load.until {
        Some(kind) => {
            how.push_str(&format!(", until {kind}"));
            Box::pin(lesson.until_event(kind.to_owned(), mark))
        }
        None => Box::pin(std::future::pending()),
    };
    let run = tokio::spawn(async move {
        let report = load::run_until(addr, &spec, &progress, stop).await;
        progress.finish_and_clear();
        report
    });
    if load.background {
        transcript.line(format!("load  {name} in the background: {how}"));
        facts.running.insert(name.to_owned(), run);
        true
    } else {
        transcript.line(format!("load  {name}: {how}"));
        collect_load(name, run, Duration::MAX, facts, transcript).await
    }
}

/// `request`: one GET, remembered under `name` for checks; no response is
/// an answer too (the connection was reset, refused …), not a failure.
async fn request(
    name: &str,
    path: &str,
    within: Duration,
    lesson: &mut Lesson,
    facts: &mut Facts,
    transcript: &mut Transcript,
) -> bool {
    let addr = match lesson.addr().await {
        Ok(addr) => addr,
        Err(error) => {
            transcript.line(format!("get   {path} ✗ {error}"));
            return false;
        }
    };
    let response = load::get(addr, path, within).await;
    match &response {
        Ok(response) => {
            transcript.line(format!("get   {path} → {}", response.status));
            transcript.detail(format!(
                "from worker {}: {}",
                response.worker.as_deref().unwrap_or("?"),
                response.body.trim()
            ));
        }
        Err(failure) => {
            transcript.line(format!("get   {path} → no response"));
            transcript.detail(format!("the connection was {failure}"));
        }
    }
    facts.requests.insert(name.to_owned(), response);
    true
}

/// `signal`: to the primary, noting when for `just compare`'s timings.
fn send_signal(
    signal: Signal,
    lesson: &mut Lesson,
    facts: &mut Facts,
    transcript: &mut Transcript,
) -> bool {
    transcript.line(format!("send  {signal} to the primary"));
    if let Some(begun) = facts.begun {
        facts
            .signals
            .push((begun.elapsed(), signal.as_str().to_owned()));
    }
    match lesson.signal(signal) {
        Ok(()) => true,
        Err(error) => {
            transcript.line(format!("✗ {error}"));
            false
        }
    }
}

/// `kill_worker`: SIGKILL to one worker, noting when.
fn kill_worker(
    id: u32,
    lesson: &mut Lesson,
    facts: &mut Facts,
    transcript: &mut Transcript,
) -> bool {
    transcript.line(format!("kill  worker {id} with SIGKILL"));
    if let Some(begun) = facts.begun {
        facts.kills.push(begun.elapsed());
    }
    match lesson.kill_worker(id) {
        Ok(pid) => {
            transcript.detail(format!("pid {pid}"));
            true
        }
        Err(error) => {
            transcript.line(format!("✗ {error}"));
            false
        }
    }
}

/// `wait_exit`: the primary must be gone within the time; when it exits
/// here (not before), that moment is noted for `just compare`.
async fn wait_exit(
    within: Duration,
    lesson: &mut Lesson,
    facts: &mut Facts,
    transcript: &mut Transcript,
) -> bool {
    let begun = Instant::now();
    let was_running = lesson.exit_status().is_none();
    match lesson.wait_exit(within).await {
        Some(status) => {
            if was_running && let Some(begun) = facts.begun {
                facts.exited = Some(begun.elapsed());
            }
            transcript.line("wait  for the primary to exit ✓");
            transcript.detail(format!("{status} after {:?}", begun.elapsed()));
            true
        }
        None => {
            transcript.line(format!(
                "wait  for the primary to exit ✗ still running after {within:?}"
            ));
            false
        }
    }
}

/// `touch` (`create`) or `remove` a file in the run's private folder: a
/// fault the lesson watches for begins or ends.
fn file_fault(name: &str, create: bool, facts: &mut Facts, transcript: &mut Transcript) -> bool {
    let verb = if create { "touch" } else { "remove" };
    let Some(dir) = facts.dir.as_ref() else {
        transcript.line(format!("{verb} {name} ✗ this run has no private folder"));
        return false;
    };
    let path = dir.path().join(name);
    let done = if create {
        std::fs::write(&path, b"").map(drop)
    } else {
        std::fs::remove_file(&path)
    };
    match done {
        Ok(()) => {
            transcript.line(format!("{verb} {{dir}}/{name}"));
            true
        }
        Err(error) => {
            transcript.line(format!("{verb} {{dir}}/{name} ✗ {error}"));
            false
        }
    }
}

/// `sample = "memory"`: each live worker's resident memory, for `just
/// compare`'s tables.
fn sample_memory(lesson: &Lesson, facts: &mut Facts, transcript: &mut Transcript) {
    let alive = lesson.alive_workers();
    facts.worker_rss_mib = alive.iter().filter_map(|&pid| rss_mib(pid)).collect();
    transcript.line("sample the workers' memory");
    transcript.detail(format!(
        "{} workers, RSS {} MiB",
        facts.worker_rss_mib.len(),
        facts
            .worker_rss_mib
            .iter()
            .map(|mib| format!("{mib:.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
}

/// `redis = "stop"` or `"start"`: an outage of the run's private server, or
/// its end.
async fn redis_step(what: RedisAction, facts: &mut Facts, transcript: &mut Transcript) -> bool {
    let Some(redis) = facts.redis.as_mut() else {
        transcript.line("✗ this run has no redis-server: add `redis = true`");
        return false;
    };
    match what {
        RedisAction::Stop => {
            transcript.line("stop  the redis-server");
            redis.stop().await;
            true
        }
        RedisAction::Start => match redis.restart().await {
            Ok(()) => {
                transcript.line("start the redis-server again");
                true
            }
            Err(error) => {
                transcript.line(format!("start the redis-server again ✗ {error}"));
                false
            }
        },
    }
}

/// `expect`: evaluates the check, retrying for `within`; a check that fails
/// is noted and the scenario goes on, so one run shows every failed check.
async fn expect(
    check: &Check,
    within: Duration,
    lesson: &Lesson,
    facts: &mut Facts,
    transcript: &mut Transcript,
) {
    let deadline = Instant::now() + within;
    let verdict = loop {
        let verdict = check.evaluate(|fact| lookup(fact, lesson, facts));
        if verdict == Verdict::Holds || Instant::now() >= deadline {
            break verdict;
        }
        // A retried check polls: it is about the outside world
        // (processes, mostly), which sends no event when it changes.
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    match verdict {
        Verdict::Holds => transcript.line(format!("check {check} ✓")),
        Verdict::Fails { lhs, rhs } => {
            let line = format!("check {check} ✗ ({lhs} vs {rhs})");
            facts.failures.push(line.clone());
            transcript.line(line);
            facts.fail(
                check.to_string(),
                format!("the left side was {lhs}, the right side {rhs}"),
            );
        }
        Verdict::Unknown(why) => {
            let line = format!("check {check} ✗ ({why})");
            facts.failures.push(line.clone());
            transcript.line(line);
            facts.fail(check.to_string(), why);
        }
    }
}

async fn collect_load(
    name: &str,
    run: JoinHandle<Result<LoadReport, load::LoadError>>,
    within: Duration,
    facts: &mut Facts,
    transcript: &mut Transcript,
) -> bool {
    let abort = run.abort_handle();
    let joined = if within == Duration::MAX {
        Ok(run.await)
    } else {
        tokio::time::timeout(within, run).await
    };
    match joined {
        Ok(Ok(Ok(report))) => {
            transcript.detail(summarise(&report));
            facts.load_order.push(name.to_owned());
            facts.loads.insert(name.to_owned(), report);
            true
        }
        Ok(Ok(Err(error))) => {
            transcript.line(format!("✗ {error}"));
            false
        }
        Ok(Err(error)) => {
            transcript.line(format!("✗ the load task failed: {error}"));
            false
        }
        Err(_) => {
            abort.abort();
            transcript.line(format!("✗ load {name} was still running after {within:?}"));
            false
        }
    }
}

/// The end of every story: the primary must be gone, and its workers too.
async fn finish(lesson: &mut Lesson, facts: &mut Facts, transcript: &mut Transcript) {
    for (name, run) in std::mem::take(&mut facts.running) {
        run.abort();
        facts
            .failures
            .push(format!("load {name} was never awaited"));
        transcript.line(format!("✗ load {name} was never awaited"));
        facts.fail(
            format!("load {name} to be awaited"),
            "the script never awaited it".into(),
        );
    }

    if lesson.exit_status().is_none() {
        // One more look: a script may end right as the primary exits.
        if lesson.wait_exit(Duration::from_millis(100)).await.is_none() {
            let line = "✗ the primary was still running at the end: a script ends with `signal` and `wait_exit`";
            facts.failures.push(line.into());
            transcript.line(line);
            facts.fail(
                "the primary to have exited by the end of the script".into(),
                "it was still running".into(),
            );
        }
    }
    lesson.kill_all().await;

    let deadline = Instant::now() + ORPHAN_GRACE;
    let mut alive = lesson.alive_workers();
    while !alive.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        alive = lesson.alive_workers();
    }
    if alive.is_empty() {
        transcript.line("check no worker outlives the primary ✓");
    } else {
        let line = format!(
            "check no worker outlives the primary ✗ ({} still running)",
            alive.len()
        );
        facts.failures.push(line.clone());
        transcript.line(line);
        facts.fail(
            "no worker outlives the primary".into(),
            format!("{} still running after {ORPHAN_GRACE:?}", alive.len()),
        );
    }

    let noise = lesson.noise();
    if !noise.is_empty() {
        let line = format!(
            "✗ stdout carried {} line(s) that are not JSON events, first: {:?}",
            noise.len(),
            noise[0]
        );
        facts.failures.push(line.clone());
        transcript.line(line);
        facts.fail(
            "stdout to carry JSON events only".into(),
            format!("{} other line(s), first: {:?}", noise.len(), noise[0]),
        );
    }
}

impl Facts {
    /// Notes a failure in words, at the step running now.
    fn fail(&mut self, expected: String, happened: String) {
        self.failed.push(Failed {
            line: self.line,
            expected,
            happened,
        });
    }
}

/// The value of a fact a check names, from what the steps learned or the
/// lesson did; an error says why it has none (yet).
fn lookup(fact: &Fact, lesson: &Lesson, facts: &Facts) -> Result<Value, String> {
    match fact {
        Fact::Load { name, field } => load_fact(name, field, facts),
        Fact::Request { name, field } => request_fact(name, field, facts),
        Fact::Exit(field) => exit_fact(field, lesson),
        Fact::WorkersAlive => Ok(Value::from(lesson.alive_workers().len())),
        Fact::RolloutMinReady => crate::check::min_ready_during_rollout(&lesson.events())
            .map(Value::from)
            .ok_or_else(|| "no rollout started".to_string()),
        Fact::Events { func, kind, path } => {
            let events = lesson.events();
            let of_kind: Vec<&Value> = events
                .iter()
                .filter(|e| e["event"] == kind.as_str())
                .collect();
            over_events(*func, path, &of_kind)
        }
    }
}

/// `load.NAME.FIELD`: what a finished load's clients saw.
fn load_fact(name: &str, field: &str, facts: &Facts) -> Result<Value, String> {
    let report = facts.loads.get(name).ok_or_else(|| {
        if facts.running.contains_key(name) {
            format!("load {name} is still running: await it first")
        } else {
            format!("no load named {name} has run")
        }
    })?;
    let ms = |d: Option<Duration>| d.map_or(Value::Null, |d| Value::from(d.as_secs_f64() * 1000.0));
    Ok(match field {
        "ok" => Value::from(report.ok),
        "failed" => Value::from(report.failed),
        "sent" => Value::from(report.sent),
        "refused" => Value::from(report.refused()),
        kind @ ("reset" | "closed" | "timeout" | "error") => {
            Value::from(report.errors.get(kind).copied().unwrap_or(0))
        }
        "distinct_workers" => Value::from(report.by_worker.len()),
        "spread_pct" => Value::from(report.spread_pct()),
        "p50_ms" => ms(report.quantile(0.5)),
        "p99_ms" => ms(report.quantile(0.99)),
        status => {
            let code = status.trim_start_matches("status.");
            let count = code
                .parse::<u16>()
                .ok()
                .and_then(|code| report.statuses.get(&code).copied())
                .unwrap_or(0);
            Value::from(count)
        }
    })
}

/// `request.NAME.FIELD`: the one response a `request` step got, or how it
/// failed; `json.PATH` reads into its body.
fn request_fact(name: &str, field: &str, facts: &Facts) -> Result<Value, String> {
    let response = facts
        .requests
        .get(name)
        .ok_or_else(|| format!("no request named {name} was made"))?;
    Ok(match (response, field) {
        (Ok(r), "status") => Value::from(r.status),
        (Ok(r), "worker") => r.worker.clone().map_or(Value::Null, Value::from),
        (Ok(r), "body") => Value::from(r.body.clone()),
        (Err(failure), "error") => Value::from(*failure),
        (Ok(r), json) if json.starts_with("json.") => {
            let body: Value = serde_json::from_str(&r.body)
                .map_err(|error| format!("request {name}'s body is not JSON: {error}"))?;
            json.split('.')
                .skip(1)
                .try_fold(&body, crate::check::field)
                .cloned()
                .unwrap_or(Value::Null)
        }
        _ => Value::Null,
    })
}

/// `exit.FIELD`: how the primary ended, once it has.
fn exit_fact(field: &str, lesson: &Lesson) -> Result<Value, String> {
    let status = lesson
        .exit_status()
        .ok_or("the primary is still running: add a `wait_exit` step first")?;
    Ok(match field {
        "code" => status.code().map_or(Value::Null, Value::from),
        "signal" => {
            use std::os::unix::process::ExitStatusExt;
            status
                .signal()
                .and_then(|n| nix::sys::signal::Signal::try_from(n).ok())
                .map_or(Value::Null, |signal| Value::from(signal.as_str()))
        }
        _ => Value::from(lesson.stderr()),
    })
}

/// The script's arguments with `{dir}` replaced by the run's private folder.
fn with_dir(args: &[String], dir: Option<&tempfile::TempDir>) -> Vec<String> {
    match dir {
        Some(dir) => {
            let path = dir.path().to_string_lossy();
            args.iter().map(|arg| arg.replace("{dir}", &path)).collect()
        }
        None => args.to_vec(),
    }
}

/// The resident memory of `pid` in MiB (`VmRSS`), if it is still running.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// `8s`, `1.5s`, `500ms`: a script's own way of writing a duration.
fn format_secs(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{}s", duration.as_secs_f64())
    }
}

fn describe_wait(count: u64, event: &str, matching: &[(String, Value)]) -> String {
    let mut what = if count == 0 {
        format!("no {event}")
    } else {
        format!("{count} × {event}")
    };
    if !matching.is_empty() {
        let fields: Vec<String> = matching.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        what.push_str(&format!(" with {}", fields.join(", ")));
    }
    what
}

fn describe_load(spec: &LoadSpec) -> String {
    format!(
        "{} × GET {} from {} client{}, {}",
        spec.requests,
        spec.path,
        spec.connections,
        if spec.connections == 1 { "" } else { "s" },
        if spec.keep_alive {
            "keep-alive"
        } else {
            "a new connection each"
        }
    )
}

/// The live line under a finished load.
pub fn summarise(report: &LoadReport) -> String {
    let by_worker: Vec<String> = report
        .by_worker
        .iter()
        .map(|(w, n)| format!("{w}:{n}"))
        .collect();
    let errors: Vec<String> = report
        .errors
        .iter()
        .map(|(e, n)| format!("{e}:{n}"))
        .collect();
    let ms = |d: Option<Duration>| {
        d.map_or("-".into(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1000.0)
        })
    };
    format!(
        "{} sent, {} ok, {} failed{} in {:.2} s; by worker {}; spread {:.1}%; p50 {}, p99 {}",
        report.sent,
        report.ok,
        report.failed,
        if errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", errors.join(" "))
        },
        report.elapsed.as_secs_f64(),
        if by_worker.is_empty() {
            "-".into()
        } else {
            by_worker.join(" ")
        },
        report.spread_pct(),
        ms(report.quantile(0.5)),
        ms(report.quantile(0.99)),
    )
}
