//! Redis pub/sub under RESP2 and RESP3: what a subscribed connection may
//! still do. Lesson 10's chat (and the usual answer in Node) opens a second
//! connection to publish because, under RESP2, a subscribed connection can
//! only (un)subscribe, PING, QUIT or RESET. RESP3 lifts that.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a subscribed connection answers to a `GET`, with or without
/// `HELLO 3` first: the replies, up to the `PING` sent last.
async fn get_while_subscribed(socket: &str, hello: &str) -> String {
    let mut stream = match tokio::net::UnixStream::connect(socket).await {
        Ok(stream) => stream,
        Err(error) => panic!("connecting to {socket}: {error}"),
    };
    let commands = format!("{hello}SUBSCRIBE chat\r\nGET anything\r\nPING\r\n");
    if let Err(error) = stream.write_all(commands.as_bytes()).await {
        panic!("{error}");
    }
    let mut replies = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&replies)
            .to_lowercase()
            .contains("pong")
        {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => replies.extend_from_slice(&buffer[..n]),
            }
        }
    });
    let _ = read.await;
    String::from_utf8_lossy(&replies).into_owned()
}

#[tokio::test]
async fn a_subscribed_connection_may_send_other_commands_only_under_resp3() {
    let redis = match redis_helper::Redis::start_private().await {
        Ok(redis) => redis,
        Err(error) => panic!("this test needs redis-server: {error}"),
    };
    let socket = redis.url().trim_start_matches("redis+unix://").to_owned();
    // RESP2, the default (and all ioredis speaks): only (un)subscribe,
    // PING, QUIT and RESET.
    let resp2 = get_while_subscribed(&socket, "").await;
    assert!(resp2.contains("-ERR Can't execute 'get'"), "{resp2}");
    // RESP3 (Redis 6 and later, after HELLO 3): messages arrive as
    // pushes, out of band, so the GET is answered (a null, `_`).
    let resp3 = get_while_subscribed(&socket, "HELLO 3\r\n").await;
    assert!(!resp3.contains("-ERR"), "{resp3}");
    assert!(resp3.contains(">3\r\n$9\r\nsubscribe"), "{resp3}");
    assert!(resp3.contains("_\r\n"), "{resp3}");
}
