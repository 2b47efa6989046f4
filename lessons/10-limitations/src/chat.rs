//! `websocket`: a WebSocket stays with the worker that accepted it.
//!
//! A chat room in a cluster: each client's WebSocket lives in one worker,
//! and a worker can only write to its own sockets. A message sent by a
//! client on worker 1 reaches the clients of worker 1 — and nobody else —
//! unless the workers pass it on to each other. Here they do it through
//! Redis pub/sub: each worker publishes what its clients send, and
//! subscribes to what everyone publishes. `--no-pubsub` leaves that out.
//!
//! The worker takes the connection over from hyper (`hyper::upgrade::on`)
//! and speaks WebSocket on it with tokio-tungstenite.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hyper::header::{CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper_util::rt::TokioIo;
use redis_helper::Redis;
use serde_json::json;
use supervisor::http::{Request, Response, serve, text};
use supervisor::{Cluster, ClusterArgs, Worker, WorkerId};
use tokio::sync::broadcast;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Chat clients
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(2..=500))]
    clients: u16,
    /// Do not pass messages between workers (no Redis)
    #[arg(long)]
    no_pubsub: bool,
    /// Then Redis goes away and comes back under the room: a line said
    /// during the outage, and one after it (a private Redis is stopped and
    /// started here; REDIS_URL's must be stopped and started by someone else)
    #[arg(long, conflicts_with = "no_pubsub")]
    outage: bool,
}

/// The Redis channel every worker publishes to and listens on.
const CHANNEL: &str = "lesson10:chat";
/// How long a client waits for a message it may never get.
const PATIENCE: Duration = Duration::from_secs(1);
/// A worker's first wait before it subscribes again; it doubles after
/// each failed try, up to `RESUBSCRIBE_MAX`.
const RESUBSCRIBE_FIRST: Duration = Duration::from_millis(50);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(2);

pub async fn primary(args: Args) -> anyhow::Result<()> {
    let mut redis = if args.no_pubsub {
        None
    } else {
        Some(Redis::from_env_or_start().await?)
    };
    let mut options = args.cluster.options();
    options
        .worker_env
        .extend(redis.as_ref().map(Redis::worker_env));
    let workers = options.workers;
    let cluster = Cluster::start(options)
        .await
        .context("starting the cluster")?;
    if let Some(redis) = &redis {
        let log = cluster.clone();
        redis.tell(move |line| log.note_line(line));
    }
    cluster.wait_ready(workers, Duration::from_secs(30)).await?;
    let told = async {
        let mut room = Room::join(&cluster, usize::from(args.clients)).await?;
        // Watch Redis from here before anyone may stop it: this
        // subscription's stream ends when the server goes.
        let watch = match (&redis, args.outage) {
            (Some(redis), true) => Some(watch(redis.url()).await?),
            _ => None,
        };
        room.first_words(&cluster, !args.no_pubsub).await;
        if let (Some(redis), Some(watch)) = (redis.as_mut(), watch) {
            outage(&cluster, redis, watch, &mut room, workers).await?;
        }
        room.leave().await;
        anyhow::Ok(())
    }
    .await;
    cluster.shutdown();
    cluster.run().await?;
    told
}

// ANCHOR: room
type Client = WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The chat room: clients connected (round-robin spreads them over the
/// workers), each knowing the worker it is on.
struct Room {
    sockets: Vec<Client>,
    workers: Vec<String>,
}

/// What the room heard of one line.
struct Heard {
    /// Clients that got the line within `PATIENCE`.
    heard: u64,
    /// Every other line any client got meanwhile.
    others: Vec<String>,
}

impl Room {
    async fn join(cluster: &Cluster, clients: usize) -> anyhow::Result<Room> {
        let url = format!("ws://{}/chat", cluster.addr());
        let mut room = Room {
            sockets: Vec::new(),
            workers: Vec::new(),
        };
        for _ in 0..clients {
            let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
            // The worker says who it is first.
            let welcome = tokio::time::timeout(Duration::from_secs(10), socket.next())
                .await
                .context("no welcome")?
                .context("closed before the welcome")??;
            let worker = welcome.to_text().unwrap_or("?");
            (room.workers).push(worker.trim_start_matches("worker ").to_owned());
            room.sockets.push(socket);
        }
        Ok(room)
    }

    /// Client 0 says `line`; every client listens for it, all at once,
    /// for `PATIENCE`.
    async fn say(&mut self, line: &str) -> anyhow::Result<Heard> {
        self.sockets[0].send(Message::text(line)).await?;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let listening = self.sockets.iter_mut().map(|socket| async move {
            let mut others = Vec::new();
            let heard = tokio::time::timeout_at(deadline, async {
                while let Some(Ok(message)) = socket.next().await {
                    match message.to_text() {
                        Ok(text) if text == line => return true,
                        Ok(text) => others.push(text.to_owned()),
                        Err(_) => {}
                    }
                }
                false
            })
            .await
                == Ok(true);
            (heard, others)
        });
        let mut all = Heard {
            heard: 0,
            others: Vec::new(),
        };
        for (heard, others) in futures_util::future::join_all(listening).await {
            all.heard += u64::from(heard);
            all.others.extend(others);
        }
        Ok(all)
    }

    /// The first line, and the `websocket` report.
    async fn first_words(&mut self, cluster: &Cluster, pubsub: bool) {
        let clients = self.sockets.len();
        let heard = self.say("hello from client 0").await.map_or(0, |h| h.heard);
        let workers = &self.workers;
        let on_senders_worker = workers.iter().filter(|w| **w == workers[0]).count();
        let spread = workers
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        cluster.report(
            "websocket",
            &json!({
                "clients": clients,
                "workers_with_clients": spread,
                "on_senders_worker": on_senders_worker,
                "heard": heard,
                "pubsub": pubsub,
            }),
            &format!(
                "{clients} clients on {spread} workers; client 0 (on worker {}) spoke; {heard} heard it ({on_senders_worker} share its worker){}",
                workers[0],
                if pubsub { "" } else { " — without pub/sub, only its own worker's clients" }
            ),
        );
    }

    async fn leave(self) {
        for mut socket in self.sockets {
            let _ = socket.close(None).await;
        }
    }
}
// ANCHOR_END: room

// ANCHOR: outage
/// Redis goes away under the room and comes back. A line said meanwhile
/// reaches nobody, then or later: pub/sub delivers at most once, and keeps
/// nothing for a subscriber that is not there. Once every worker has
/// subscribed again, a line reaches every client again.
async fn outage(
    cluster: &Cluster,
    redis: &mut Redis,
    mut watch: redis::aio::PubSub,
    room: &mut Room,
    workers: usize,
) -> anyhow::Result<()> {
    if redis.is_private() {
        redis.stop().await;
    } else {
        cluster.note_line("waiting for the Redis in REDIS_URL to go away: stop it, then start it");
    }
    let gone = tokio::time::timeout(Duration::from_secs(60), async {
        let mut messages = watch.on_message();
        while messages.next().await.is_some() {}
    });
    gone.await.context("Redis did not go away within 60 s")?;
    cluster.report("redis_gone", &json!({}), "Redis is gone");

    let during = room.say("said during the outage").await?;
    cluster.report(
        "during_outage",
        &json!({ "heard": during.heard }),
        &format!(
            "client 0 spoke while Redis was away: {} heard it",
            during.heard
        ),
    );

    if redis.is_private() {
        redis.restart().await?;
    }
    let back = tokio::time::Instant::now();
    let subscribed = subscribers_when_all_back(redis.url(), workers).await?;
    let after = room.say("said after the outage").await?;
    let late = after
        .others
        .iter()
        .filter(|text| *text == "said during the outage")
        .count();
    cluster.report(
        "after_outage",
        &json!({
            "subscribers": subscribed,
            "resubscribed_ms": back.elapsed().as_millis() as u64,
            "heard": after.heard,
            "heard_the_line_said_during_the_outage": late,
        }),
        &format!(
            "Redis is back; {subscribed} of {workers} workers subscribed again; client 0 spoke: {} heard it; the line said during the outage reached {late} clients, then or since",
            after.heard
        ),
    );
    Ok(())
}
// ANCHOR_END: outage

/// A subscription of the primary's own, to see Redis go.
async fn watch(url: &str) -> anyhow::Result<redis::aio::PubSub> {
    let client = redis::Client::open(url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe("lesson10:watch").await?;
    Ok(pubsub)
}

/// Waits (bounded) until Redis answers again and counts `workers`
/// subscribers on the chat channel; returns how many it counted last.
async fn subscribers_when_all_back(url: &str, workers: usize) -> anyhow::Result<usize> {
    let client = redis::Client::open(url)?;
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut pause = RESUBSCRIBE_FIRST;
    let mut counted = 0;
    while tokio::time::Instant::now() < give_up {
        if let Ok(mut connection) = client.get_multiplexed_async_connection().await {
            let numsub: Result<(String, usize), _> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(CHANNEL)
                .query_async(&mut connection)
                .await;
            if let Ok((_, n)) = numsub {
                counted = n;
                if n >= workers {
                    break;
                }
            }
        }
        // Nothing announces a server that is back, or a worker that has
        // subscribed again: ask again, a little later each time.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
    Ok(counted)
}

pub async fn worker(args: Args) -> anyhow::Result<()> {
    let worker = Arc::new(Worker::connect().await?);
    let id = worker.id();
    // Messages for this worker's own sockets.
    let (local, _) = broadcast::channel::<String>(1024);
    let publisher = if args.no_pubsub {
        None
    } else {
        let url = std::env::var(redis_helper::REDIS_URL_VAR).context("no REDIS_URL")?;
        relay_from_redis(&url, local.clone(), Arc::clone(&worker)).await?;
        Some(redis_helper::connect(&url).await?)
    };
    let listener = worker.listen().await?;
    // Subscribed before ready: no message published after we said ready
    // can be missed.
    worker.ready()?;

    let handler = move |request: Request| {
        let (local, publisher) = (local.clone(), publisher.clone());
        async move {
            match request.uri().path() {
                "/chat" => upgrade(request, id, local, publisher),
                _ => text(200, "connect a WebSocket to /chat\n"),
            }
        }
    };
    serve(listener, handler, worker.disconnected()).await;
    Ok(())
}

// ANCHOR: relay
/// Everything published on the channel goes to this worker's sockets. The
/// first subscription must work (the worker is not ready without it);
/// after that, a lost connection is subscribed again, with backoff.
async fn relay_from_redis(
    url: &str,
    local: broadcast::Sender<String>,
    worker: Arc<Worker>,
) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut pubsub = subscribe(&client).await?;
    tokio::spawn(async move {
        loop {
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                if let Ok(text) = message.get_payload::<String>() {
                    let _ = local.send(text);
                }
            }
            // The stream ended: the connection is gone, and the
            // subscription with it. Pub/sub keeps nothing for an absent
            // subscriber: what is published until we are back is lost.
            drop(messages);
            let lost = tokio::time::Instant::now();
            say(
                &worker,
                "lost",
                "the Redis subscription dropped; lines published until it is back are lost for this worker's clients",
            );
            let mut pause = RESUBSCRIBE_FIRST;
            let mut tries = 1;
            pubsub = loop {
                match subscribe(&client).await {
                    Ok(pubsub) => break pubsub,
                    Err(_) => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(RESUBSCRIBE_MAX);
                        tries += 1;
                    }
                }
            };
            let back = format!(
                "subscribed again after {} ms ({tries} tries)",
                lost.elapsed().as_millis()
            );
            say(&worker, "resubscribed", &back);
        }
    });
    Ok(())
}

async fn subscribe(client: &redis::Client) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(CHANNEL).await?;
    Ok(pubsub)
}

/// One line on stderr, and the same news to the primary (a `message`
/// event), once per loss and once per return.
fn say(worker: &Worker, relay: &str, line: &str) {
    supervisor::report::stderr_line(&format!("[worker {}] {line}", worker.id()));
    let _ = worker.send(&json!({ "relay": relay }));
}
// ANCHOR_END: relay

/// Answers the WebSocket handshake and hands the connection to `chat`.
fn upgrade(
    mut request: Request,
    id: WorkerId,
    local: broadcast::Sender<String>,
    publisher: Option<redis::aio::ConnectionManager>,
) -> Response {
    let Some(key) = request.headers().get(SEC_WEBSOCKET_KEY) else {
        return text(400, "a WebSocket handshake needs Sec-WebSocket-Key\n");
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgraded = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgraded.await {
            let socket =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            chat(socket, id, local, publisher).await;
        }
    });
    let mut response = text(101, "");
    let headers = response.headers_mut();
    headers.remove(hyper::header::CONTENT_TYPE);
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

// ANCHOR: chat
/// One client: what it says goes out (to Redis, or to this worker only);
/// what this worker hears goes to it.
async fn chat<S>(
    mut socket: WebSocketStream<S>,
    id: WorkerId,
    local: broadcast::Sender<String>,
    mut publisher: Option<redis::aio::ConnectionManager>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut heard = local.subscribe();
    if socket
        .send(Message::text(format!("worker {id}")))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Text(said))) => {
                    let said = said.as_str().to_owned();
                    match &mut publisher {
                        Some(redis) => {
                            let publish = redis::cmd("PUBLISH").arg(CHANNEL).arg(said).clone();
                            // A connection that dropped fails the first command
                            // after it, and the manager connects again: try
                            // once more. Redis still away: the line is lost.
                            if publish.query_async::<()>(redis).await.is_err() {
                                let _ = publish.query_async::<()>(redis).await;
                            }
                        }
                        None => {
                            let _ = local.send(said);
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            Ok(text) = heard.recv() => {
                if socket.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
        }
    }
}
// ANCHOR_END: chat
