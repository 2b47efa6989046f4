//! `Life`'s moves, with time passed in: no clock, no process.

use std::time::Duration;

use super::*;

fn at(secs: u64) -> Instant {
    // One fixed origin per test run is enough: only differences matter.
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now) + Duration::from_secs(secs)
}

fn ready() -> Life {
    let mut life = Life::Starting;
    assert!(life.listening());
    assert!(life.ready());
    life
}

#[test]
fn events_move_forward_only() {
    let mut life = ready();
    assert!(!life.listening(), "a ready worker does not go back");
    assert_eq!(life.state(), WorkerState::Ready);
    assert!(life.channel_closed());
    assert!(!life.ready(), "a leaving worker does not come back");
    assert_eq!(life.state(), WorkerState::Leaving);
    assert!(!life.channel_closed());
}

#[test]
fn a_worker_may_be_ready_without_listening_first() {
    let mut life = Life::Starting;
    assert!(life.ready());
    assert!(life.is_ready());
}

#[test]
fn an_exit_nobody_asked_for_is_a_crash_or_a_failed_start() {
    let mut started = ready();
    started.channel_closed();
    assert_eq!(started.exit_reason(), ExitReason::Crashed);
    assert!(!started.exited_after_disconnect());

    let mut never = Life::Starting;
    never.channel_closed();
    assert_eq!(never.exit_reason(), ExitReason::FailedStart);
}

#[test]
fn the_first_reason_and_deadline_stay() {
    let mut life = ready();
    assert!(life.depart(ExitReason::Replaced, at(10)));
    assert!(!life.depart(ExitReason::Shutdown, at(99)));
    assert_eq!(life.state(), WorkerState::Draining);
    assert!(!life.in_service() && !life.is_ready());
    assert_eq!(life.exit_reason(), ExitReason::Replaced);
    assert_eq!(life.deadline(at(1)), Some(at(10)));
    assert!(life.exited_after_disconnect());
}

#[test]
fn a_late_ready_keeps_a_departing_worker_out_but_counts() {
    let mut life = Life::Starting;
    life.depart(ExitReason::ScaledDown, at(5));
    assert!(!life.ever_ready());
    assert!(!life.ready());
    assert_eq!(life.state(), WorkerState::Draining);
    assert!(life.ever_ready());
}

#[test]
fn the_ready_deadline_applies_until_ready_and_is_refused_after() {
    let mut life = Life::Starting;
    assert_eq!(life.deadline(at(3)), Some(at(3)));
    life.listening();
    assert_eq!(life.deadline(at(3)), Some(at(3)));
    assert!(life.give_up_on_start());
    assert_eq!(life.exit_reason(), ExitReason::NotReady);
    assert!(life.killed());
    assert!(!life.exited_after_disconnect(), "killed without a word");
    assert_eq!(life.deadline(at(3)), None, "nothing is due once killed");

    let mut late = ready();
    assert_eq!(late.deadline(at(3)), None);
    assert!(!late.give_up_on_start());
    assert!(late.in_service());
}

#[test]
fn only_a_worker_told_to_go_overruns_a_drain() {
    let mut life = ready();
    assert!(!life.cut_drain(), "nobody asked it to go");
    life.depart(ExitReason::Replaced, at(10));
    assert!(life.cut_drain());
    assert!(!life.cut_drain(), "killed once");
    assert!(!life.kill(ExitReason::Shutdown));
    assert_eq!(life.exit_reason(), ExitReason::Replaced);

    let mut not_ready = Life::Starting;
    not_ready.give_up_on_start();
    assert!(!not_ready.cut_drain(), "killed without being told");
}

#[test]
fn a_worker_is_killed_once() {
    let mut life = ready();
    life.depart(ExitReason::Shutdown, at(10));
    assert!(life.kill(ExitReason::Shutdown));
    assert!(!life.kill(ExitReason::Shutdown));
    assert_eq!(life.deadline(at(0)), None);
    assert!(life.exited_after_disconnect(), "told first, then killed");
}

#[test]
fn a_kill_without_a_reason_gets_the_one_given_and_keeps_an_earlier_one() {
    let mut crashed = ready();
    crashed.channel_closed();
    assert!(crashed.kill(ExitReason::Shutdown));
    assert_eq!(crashed.exit_reason(), ExitReason::Shutdown);

    let mut replaced = ready();
    replaced.depart(ExitReason::Replaced, at(10));
    replaced.kill(ExitReason::Shutdown);
    assert_eq!(replaced.exit_reason(), ExitReason::Replaced);
}

#[test]
fn a_departure_survives_the_channel_closing() {
    let mut life = ready();
    life.depart(ExitReason::Hung, at(10));
    life.channel_closed();
    assert_eq!(life.state(), WorkerState::Leaving);
    assert_eq!(life.exit_reason(), ExitReason::Hung);
    assert_eq!(life.deadline(at(0)), Some(at(10)));
    assert!(life.ever_ready());
}

#[test]
fn a_leaving_worker_told_to_go_keeps_leaving_with_that_reason() {
    let mut life = Life::Starting;
    life.channel_closed();
    assert!(life.depart(ExitReason::Shutdown, at(10)));
    assert_eq!(life.state(), WorkerState::Leaving);
    assert_eq!(life.exit_reason(), ExitReason::Shutdown);
    assert!(!life.ever_ready());
}
