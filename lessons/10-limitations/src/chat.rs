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
}

/// The Redis channel every worker publishes to and listens on.
const CHANNEL: &str = "lesson10:chat";
/// How long a client waits for a message it may never get.
const PATIENCE: Duration = Duration::from_secs(1);

pub async fn primary(args: Args) -> anyhow::Result<()> {
    let redis = if args.no_pubsub {
        None
    } else {
        Some(Redis::from_env_or_start().await?)
    };
    let options = args.cluster.options();
    let workers = options.workers;
    let cluster = redis_helper::start_cluster(redis.as_ref(), options)
        .await
        .context("starting the cluster")?;
    cluster.wait_ready(workers, Duration::from_secs(30)).await?;
    let told = room(&cluster, usize::from(args.clients), !args.no_pubsub).await;
    cluster.shutdown();
    cluster.run().await?;
    told
}

// ANCHOR: room
/// Clients join (round-robin spreads their connections), client 0 speaks,
/// and everyone who heard it is counted.
async fn room(cluster: &Cluster, clients: usize, pubsub: bool) -> anyhow::Result<()> {
    let url = format!("ws://{}/chat", cluster.addr());
    let mut sockets = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..clients {
        let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
        // The worker says who it is first.
        let welcome = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .context("no welcome")?
            .context("closed before the welcome")??;
        workers.push(
            welcome
                .to_text()
                .unwrap_or("?")
                .trim_start_matches("worker ")
                .to_owned(),
        );
        sockets.push(socket);
    }
    let said = "hello from client 0";
    sockets[0].send(Message::text(said)).await?;
    let mut heard = 0;
    for socket in &mut sockets {
        let waited = tokio::time::timeout(PATIENCE, async {
            while let Some(Ok(message)) = socket.next().await {
                if message.to_text().is_ok_and(|text| text == said) {
                    return true;
                }
            }
            false
        })
        .await;
        heard += u64::from(waited == Ok(true));
    }
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
    for mut socket in sockets {
        let _ = socket.close(None).await;
    }
    Ok(())
}
// ANCHOR_END: room

pub async fn worker(args: Args) -> anyhow::Result<()> {
    let worker = Worker::connect().await?;
    let id = worker.id();
    // Messages for this worker's own sockets.
    let (local, _) = broadcast::channel::<String>(1024);
    let publisher = if args.no_pubsub {
        None
    } else {
        let url = std::env::var(redis_helper::REDIS_URL_VAR).context("no REDIS_URL")?;
        relay_from_redis(&url, local.clone()).await?;
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
/// Everything published on the channel goes to this worker's sockets.
async fn relay_from_redis(url: &str, local: broadcast::Sender<String>) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(CHANNEL).await?;
    tokio::spawn(async move {
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            if let Ok(text) = message.get_payload::<String>() {
                let _ = local.send(text);
            }
        }
    });
    Ok(())
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
                            let _ = redis::cmd("PUBLISH").arg(CHANNEL).arg(said).query_async::<()>(redis).await;
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
