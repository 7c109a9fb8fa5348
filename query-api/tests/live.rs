//! The WebSocket stream against the real Kafka: a subscribed dashboard is
//! pinged every heartbeat and, answering, stays connected; a client that
//! stops answering is dropped; a client that reconnects with its last
//! cursor gets exactly what it missed, and is told when that is older than
//! the window. Run through `./dev test`.

use pulse_testkit::query_api as support;
use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use pulse_testkit::Stack;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::Value;
use support::{row, start_api_with, Api};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

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

/// Publishes results `from..to` of tenant acme, devices d0, d1 and d2 in
/// turn, to the API's results topic, as the processor does.
async fn publish(api: &Api, from: usize, to: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", Stack::from_env().kafka_bootstrap)
        .create()
        .expect("producer");
    let topic = format!("{}results", api.topic_prefix);
    for i in from..to {
        let r = row("acme", &format!("d{}", i % 3), &format!("r{i:03}"));
        let json = serde_json::to_string(&r).expect("JSON");
        producer
            .send(
                FutureRecord::to(&topic).key(&r.source_id).payload(&json),
                Duration::from_secs(10),
            )
            .await
            .expect("result published");
    }
}

/// The next text message, skipping pings.
async fn next_text(socket: &mut Socket) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("a message in time")
            .expect("stream open")
            .expect("a message");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).expect("JSON");
        }
    }
}

async fn connect(url: &str) -> Socket {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connects")
        .0
}

fn ids_of(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["event_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn a_client_resumes_after_a_reconnect_with_nothing_missed_or_repeated() {
    let api = start_api_with(
        &[],
        &[
            ("PULSE_RESULT_PARTITIONS", "3"),
            ("PULSE_WS_RESUME_WINDOW", "50"),
        ],
    )
    .await;
    let base = format!(
        "{}/v1/stream?source_id=d0,d1&access_token={}",
        api.url.replace("http", "ws"),
        support::hs256("acme", "dashboard")
    );

    // 30 results, 20 of them for d0 and d1; the client reads 10 and goes.
    let mut socket = connect(&base).await;
    publish(&api, 0, 30).await;
    let mut first = Vec::new();
    for _ in 0..10 {
        first.push(next_text(&mut socket).await);
    }
    let cursor = first[9]["cursor"].as_str().expect("a cursor").to_string();
    let early_cursor = first[0]["cursor"].as_str().expect("a cursor").to_string();
    drop(socket);

    // 30 more while it is away; it comes back with its cursor.
    publish(&api, 30, 60).await;
    let mut resumed = connect(&format!("{base}&resume={cursor}")).await;
    let mut second = Vec::new();
    for _ in 0..30 {
        second.push(next_text(&mut resumed).await);
    }
    let expected: BTreeSet<String> = (0..60)
        .filter(|i| i % 3 != 2)
        .map(|i| format!("r{i:03}"))
        .collect();
    let got: Vec<String> = ids_of(&first).into_iter().chain(ids_of(&second)).collect();
    assert_eq!(got.len(), 40, "{got:?}");
    assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(second.iter().all(|m| m.get("type").is_none()), "{second:?}");
    // And it goes on live.
    publish(&api, 60, 61).await;
    assert_eq!(next_text(&mut resumed).await["event_id"], "r060");

    // From before the 50-result window: told of the gap first, then what the
    // window still holds.
    let mut late = connect(&format!("{base}&resume={early_cursor}")).await;
    let note = next_text(&mut late).await;
    assert_eq!(note["type"], "gap", "{note}");
    let after_gap = next_text(&mut late).await;
    assert!(after_gap["event_id"].as_str().is_some(), "{after_gap}");

    // A cursor the API did not send is refused.
    match tokio_tungstenite::connect_async(format!("{base}&resume=not-a-cursor")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 400),
        other => panic!("expected 400, got {other:?}"),
    }
}
