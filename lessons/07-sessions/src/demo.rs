//! The demo's story, told by a client: log in, come back, count what the
//! cluster remembered — then come back to *another* cluster.
//!
//! Each simulated user logs in once and then asks "who am I?" a few times,
//! each time on a new connection, as a browser does after an idle pause.
//! Whether the answer is "you are ada" or "who are you?" depends only on
//! where sessions live and how requests are routed, which is the question.
//!
//! The second cluster is a second primary of this same program, started
//! on another port with the same `REDIS_URL` ([`supervisor::peer`]): two
//! machines behind a load balancer, as far as sessions can tell.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::bail;
use hyper::Method;
use hyper::header::{COOKIE, SET_COOKIE};
use loadgen::one::{Answer, request};
use serde::Serialize;

/// One request of a user: `method path`, with the session cookie if any.
async fn send(
    from: IpAddr,
    to: SocketAddr,
    method: Method,
    path: &str,
    cookie: Option<&str>,
) -> anyhow::Result<Answer> {
    let headers: Vec<(&str, &str)> = cookie.map(|c| (COOKIE.as_str(), c)).into_iter().collect();
    Ok(request(from, to, method, path, &headers, Duration::from_secs(10)).await?)
}

/// What the users saw.
#[derive(Debug, Default, Serialize)]
pub struct Seen {
    pub logins: u64,
    /// "Who am I?" requests sent after logging in.
    pub requests: u64,
    /// … answered with the user's own session.
    pub found: u64,
    /// … answered "no session".
    pub lost: u64,
    /// Workers that answered at least one request (a login or a "who am I?").
    pub workers: BTreeSet<String>,
    /// Users whose every request, login included, one worker answered.
    pub stuck: u64,
    /// Each user's cookie, to try on another cluster.
    #[serde(skip)]
    pub cookies: Vec<(IpAddr, String)>,
}

/// The address user `i` connects from: its own, or one for all.
pub fn source(i: usize, one_address: bool) -> IpAddr {
    if one_address {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::new(127, 0, 1, (10 + i % 240) as u8))
    }
}

// ANCHOR: users
/// `users` users each log in at `to`, then ask "who am I?" `each` times.
pub async fn users(
    to: SocketAddr,
    users: usize,
    each: usize,
    one_address: bool,
) -> anyhow::Result<Seen> {
    let mut seen = Seen::default();
    for i in 0..users {
        let from = source(i, one_address);
        let login = format!("/login?user=user{i}");
        let answer = send(from, to, Method::POST, &login, None).await?;
        // `sid=…; HttpOnly; …` → `sid=…`: what a browser sends back.
        let cookie = answer
            .header(SET_COOKIE.as_str())
            .and_then(|c| c.split(';').next())
            .map(str::to_owned);
        let Some(cookie) = cookie.filter(|_| answer.status == 200) else {
            bail!(
                "user{i} could not log in: {} {}",
                answer.status,
                answer.body.trim()
            );
        };
        seen.logins += 1;
        // Every worker this user met, the one that logged it in included.
        let mut answered_by: BTreeSet<String> =
            answer.worker().map(str::to_owned).into_iter().collect();
        for _ in 0..each {
            let me = send(from, to, Method::GET, "/me", Some(&cookie)).await?;
            seen.requests += 1;
            match me.status {
                200 => seen.found += 1,
                401 => seen.lost += 1,
                other => bail!("/me answered {other}: {}", me.body.trim()),
            }
            answered_by.extend(me.worker().map(str::to_owned));
        }
        seen.stuck += u64::from(answered_by.len() == 1);
        seen.workers.extend(answered_by);
        seen.cookies.push((from, cookie));
    }
    Ok(seen)
}
// ANCHOR_END: users

/// Each of `cookies` asks "who am I?" once at `to`; how many were known.
pub async fn come_back(to: SocketAddr, cookies: &[(IpAddr, String)]) -> anyhow::Result<u64> {
    let mut found = 0;
    for (from, cookie) in cookies {
        let me = send(*from, to, Method::GET, "/me", Some(cookie)).await?;
        found += u64::from(me.status == 200);
    }
    Ok(found)
}
