//! WebSocket heartbeats: a subscribed dashboard is pinged every heartbeat
//! and, answering, stays connected; a client that stops answering is
//! dropped. Run through `./dev test`.

mod support;

use std::time::Duration;

use futures::StreamExt;
use support::{row, start_api_with};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn clients_are_pinged_and_silent_ones_dropped() {
    let api = start_api_with(
        &[row("acme", "boiler-1", "acme-event-1")],
        &[("PULSE_WS_HEARTBEAT_S", "1")],
    )
    .await;
    let url = format!(
        "{}/v1/stream?access_token={}",
        api.url.replace("http", "ws"),
        support::hs256("acme", "dashboard")
    );

    // Reading answers pings (the client library pongs): pinged again and
    // again for five heartbeats, and still connected.
    let (mut socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("connects");
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < until {
        match tokio::time::timeout_at(until, socket.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(other))) => panic!("unexpected message {other:?}"),
            Ok(Some(Err(e))) => panic!("connection failed: {e}"),
            Ok(None) => panic!("connection closed while answering"),
            Err(_) => break,
        }
    }
    assert!(pings >= 4, "{pings} pings in 5 s");

    // A client that stops reading (so stops answering) is dropped after
    // three silent heartbeats; its silence is the fault under test.
    let (mut silent, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("connects");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match silent.next().await {
                Some(Ok(Message::Ping(_))) => continue,
                Some(Ok(other)) => return Some(other),
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await;
    assert!(
        matches!(ended, Ok(None) | Ok(Some(Message::Close(_)))),
        "the silent client was not dropped: {ended:?}"
    );
}
