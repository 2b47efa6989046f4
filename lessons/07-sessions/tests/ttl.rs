//! A session's time to live slides on use, in both stores: a user who comes
//! back more often than the TTL stays logged in for as long as they like,
//! each answer sends the cookie again with a fresh `Max-Age`, and a user
//! who stays away longer than the TTL is logged out. Time passing is the
//! subject here, so the test lets it pass: about 7 s per store, both stores
//! at once.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hyper::Method;
use hyper::header::{COOKIE, SET_COOKIE};
use loadgen::one::{Answer, request};
use scenarios::lesson::Lesson;

const BIN: &str = env!("CARGO_BIN_EXE_lesson-07");
const TTL: Duration = Duration::from_secs(2);

type Failure = Box<dyn std::error::Error + Send + Sync>;

async fn send(
    to: SocketAddr,
    method: Method,
    path: &str,
    cookie: Option<&str>,
) -> Result<Answer, Failure> {
    let headers: Vec<(&str, &str)> = cookie.map(|c| (COOKIE.as_str(), c)).into_iter().collect();
    let from = IpAddr::V4(Ipv4Addr::LOCALHOST);
    Ok(request(from, to, method, path, &headers, Duration::from_secs(10)).await?)
}

async fn slides(store: &str) -> Result<(), Failure> {
    let args: Vec<String> = [
        "--serve",
        "--store",
        store,
        "--workers",
        "1",
        "--session-ttl",
        "2s",
    ]
    .map(str::to_owned)
    .into();
    let mut lesson = Lesson::start(BIN.as_ref(), &args)?;
    let addr = lesson.addr().await?;
    let ready = lesson
        .wait_until(Duration::from_secs(30), |events| {
            events.iter().any(|e| e["event"] == "ready")
        })
        .await;
    assert!(ready, "{store}: workers not ready:\n{}", lesson.stderr());
    let outcome = story(addr, store).await;
    lesson.kill_all().await;
    outcome
}

async fn story(addr: SocketAddr, store: &str) -> Result<(), Failure> {
    let login = send(addr, Method::POST, "/login?user=ada", None).await?;
    let set = login
        .header(SET_COOKIE.as_str())
        .ok_or("no cookie at login")?;
    assert!(set.contains("Max-Age=2"), "{store}: {set}");
    let cookie = set.split(';').next().ok_or("empty cookie")?.to_owned();

    // Twice the TTL, using the session every quarter of it. (One worker:
    // with sessions in memory, round-robin would move the user; that is
    // the chapter's first story, not this one.)
    let mut used = 0;
    let until = tokio::time::Instant::now() + 2 * TTL;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(TTL / 4).await;
        let me = send(addr, Method::GET, "/me", Some(&cookie)).await?;
        assert_eq!(
            me.status, 200,
            "{store}: logged out after {used} uses: {}",
            me.body
        );
        let again = me.header(SET_COOKIE.as_str()).ok_or("no cookie on /me")?;
        assert!(again.contains("Max-Age=2"), "{store}: {again}");
        used += 1;
    }
    assert!(used >= 6, "{store}: the session was used only {used} times");

    // Away for longer than the TTL: gone.
    tokio::time::sleep(TTL + TTL / 2).await;
    let me = send(addr, Method::GET, "/me", Some(&cookie)).await?;
    assert_eq!(
        me.status, 401,
        "{store}: still logged in after an idle TTL: {}",
        me.body
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_session_lives_while_it_is_used() -> Result<(), Failure> {
    slides("redis").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_session_lives_while_it_is_used() -> Result<(), Failure> {
    slides("memory").await
}
