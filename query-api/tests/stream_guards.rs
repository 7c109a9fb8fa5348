//! The guards of the live stream and of the query-string token, against the
//! real API: a token in the query string (HS256 or RS256) authenticates
//! `/v1/stream` only, and never reaches the log; a tenant parameter is
//! refused; each tenant has a cap on open streams (429
//! beyond it, the slot freed when a stream closes); a client message over
//! the limit ends the connection; a stream is closed when its token
//! expires. Run through `./dev test`.

use pulse_testkit::query_api as support;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pulse_testkit::{poll_until, unique};
use reqwest::StatusCode;
use support::{start_api_logging, start_api_with, Api};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

fn stream_url(api: &Api, token: &str) -> String {
    format!(
        "{}/v1/stream?access_token={token}",
        api.url.replace("http", "ws")
    )
}

async fn connect(url: &str) -> Result<Socket, tungstenite::Error> {
    tokio_tungstenite::connect_async(url).await.map(|(s, _)| s)
}

/// The first message that is not a ping within `within`; None when the
/// connection ended without a close frame, Err when none came in time.
async fn next_non_ping(socket: &mut Socket, within: Duration) -> Result<Option<Message>, ()> {
    tokio::time::timeout(within, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(m)) => return Some(m),
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .map_err(|_| ())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn a_query_string_token_opens_the_stream_only_and_is_never_logged() {
    let log = std::env::temp_dir().join(format!("{}.log", unique("query-api-log")));
    let api = start_api_logging(&[("RUST_LOG", "info,tower_http=debug")], &log).await;
    let analyst = support::hs256("acme", "analyst");
    let admin = support::hs256("acme", "admin");
    for (path, token) in [
        ("/v1/events", &analyst),
        ("/v1/anomalies", &analyst),
        ("/v1/devices", &analyst),
        ("/v1/export", &analyst),
        ("/v1/audit", &admin),
    ] {
        let (status, body) = api.get(&format!("{path}?access_token={token}"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        assert_eq!(
            body["error"], "missing credentials: send 'Authorization: Bearer <token or API key>'",
            "{path}"
        );
    }
    // The same token in the header is fine.
    let (status, _) = api.get("/v1/events", Some(&analyst)).await;
    assert_eq!(status, StatusCode::OK);
    let dashboard = support::hs256("acme", "dashboard");
    let mut socket = connect(&stream_url(&api, &dashboard))
        .await
        .expect("the stream takes a query-string token");
    socket.close(None).await.expect("closed");
    // An RS256 token opens it too, and with nothing published the stream
    // stays open and quiet.
    let rs256 = support::rs256("acme", "dashboard");
    let mut socket = connect(&stream_url(&api, &rs256))
        .await
        .expect("the stream takes an RS256 token");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), socket.next())
            .await
            .is_err()
    );
    socket.close(None).await.expect("closed");
    // The token names the tenant: a tenant parameter is refused.
    match connect(&format!(
        "{}&tenant_id=globex",
        stream_url(&api, &dashboard)
    ))
    .await
    {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 400),
        other => panic!("a tenant parameter on the stream: expected 400, got {other:?}"),
    }
    // A plain GET with the token is not a WebSocket handshake: 400 as JSON,
    // as every other refusal.
    let (status, body) = api.get("/v1/stream", Some(&dashboard)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "upgrade", "{body}");

    // Every request above is in the log (tower_http's spans), none with a token.
    let text = poll_until(
        "the stream's request in the API's log",
        Duration::from_secs(20),
        || async {
            let text = std::fs::read_to_string(&log).ok()?;
            text.contains("/v1/stream?access_token=%28redacted%29")
                .then_some(text)
        },
    )
    .await;
    assert!(text.contains("/v1/events?access_token=%28redacted%29"));
    for token in [&analyst, &admin, &dashboard] {
        assert!(!text.contains(token.as_str()), "a token in the log");
    }
    // The start-up probes are not in the request log, and no answer above
    // (the 503s of /readyz while starting among them) is logged as an error.
    // (The log is coloured, so a field's name and value are apart: match
    // the path alone, which only a request span prints.)
    assert!(!text.contains("/readyz"), "{text}");
    assert!(!text.contains("ERROR"), "{text}");
    let _ = std::fs::remove_file(&log);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn a_tenant_has_at_most_its_cap_of_streams_and_a_closed_one_frees_its_slot() {
    let api = start_api_with(&[], &[("PULSE_WS_MAX_STREAMS_PER_TENANT", "2")]).await;
    let acme = stream_url(&api, &support::hs256("acme", "dashboard"));
    let mut first = connect(&acme).await.expect("first stream");
    let _second = connect(&acme).await.expect("second stream");
    match connect(&acme).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            assert!(
                body.contains("tenant acme has 2 streams open, the most it may"),
                "{body}"
            );
        }
        other => panic!("a third stream of acme: {:?}", other.map(|_| ())),
    }
    // Another tenant has a cap of its own.
    let _globex = connect(&stream_url(&api, &support::hs256("globex", "dashboard")))
        .await
        .expect("globex's stream");
    // Closing one frees its slot, as soon as the API has seen the close.
    first.close(None).await.expect("closed");
    let _third = poll_until("a freed slot", Duration::from_secs(10), || async {
        connect(&acme).await.ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn a_client_message_over_the_default_limit_ends_the_connection() {
    let api = start_api_with(&[], &[]).await;
    let mut socket = connect(&stream_url(&api, &support::hs256("acme", "dashboard")))
        .await
        .expect("connects");
    // Small messages are fine (they count as signs of life).
    socket
        .send(Message::Text("x".repeat(1024).into()))
        .await
        .expect("sent");
    assert_eq!(
        next_non_ping(&mut socket, Duration::from_secs(2)).await,
        Err(()),
        "a small message ended the connection"
    );
    // Over the 64 KiB default: the connection ends (well before the
    // heartbeat, 15 s, would end it).
    socket
        .send(Message::Text("x".repeat(64 * 1024 + 1).into()))
        .await
        .expect("sent");
    let ended = next_non_ping(&mut socket, Duration::from_secs(10)).await;
    assert!(
        matches!(ended, Ok(None) | Ok(Some(Message::Close(_)))),
        "still connected after an oversized message: {ended:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn a_stream_is_closed_when_its_token_expires() {
    let api = start_api_with(&[], &[]).await;
    let token = support::hs256_with("acme", "dashboard", 2, support::HS256_SECRET);
    let mut socket = connect(&stream_url(&api, &token)).await.expect("connects");
    let started = tokio::time::Instant::now();
    match next_non_ping(&mut socket, Duration::from_secs(10)).await {
        Ok(Some(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 4001);
            assert_eq!(frame.reason.as_str(), "token expired");
        }
        other => panic!("no close frame at expiry: {other:?}"),
    }
    // Not before the token expired (`exp` has whole seconds).
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed early"
    );
    // A fresh token connects again.
    connect(&stream_url(&api, &support::hs256("acme", "dashboard")))
        .await
        .expect("reconnects");
}
