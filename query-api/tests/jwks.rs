//! RS256 keys from a JWKS URL: a token signed with a key the provider has
//! not published is refused; once the provider publishes it, the API picks
//! it up without a restart and accepts the token; once the provider retires
//! it, the token is refused again. A provider that is down when the API
//! starts is waited for: `/readyz` says so, and the API becomes ready once
//! the provider answers. Run through `./dev test`.

use pulse_testkit::query_api as support;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use pulse_common::clock::now_ms;
use pulse_testkit::{free_port, poll_until};
use reqwest::StatusCode;
use serde_json::json;
use support::{row, spawn_api, start_api_with};

const EMPTY: &str = r#"{"keys":[]}"#;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .expect("fixture")
}

/// A token signed with the second test key, naming its key id.
fn rotated_key_token() -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rotated-key-2".into());
    let claims = json!({
        "sub": "ann", "tenant": "acme", "role": "analyst", "exp": now_ms() / 1000 + 3600
    });
    let key = EncodingKey::from_rsa_pem(&fixture("rs256-test-2-private.pem")).expect("RSA key");
    encode(&header, &claims, &key).expect("token")
}

/// The provider's current document, and how many times it was fetched.
type Document = Arc<Mutex<(String, usize)>>;

fn publish(document: &Document, text: &str) -> usize {
    let mut d = document.lock().expect("document");
    d.0 = text.to_string();
    d.1
}

fn fetches(document: &Document) -> usize {
    document.lock().map(|d| d.1).unwrap_or_default()
}

/// Serves whatever `document` holds at /jwks.json, on any free port.
async fn provider(document: Document) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    serve_provider(listener, document)
}

fn serve_provider(listener: tokio::net::TcpListener, document: Document) -> String {
    let app = Router::new()
        .route(
            "/jwks.json",
            get(|State(d): State<Document>| async move {
                let mut d = d.lock().expect("document");
                d.1 += 1;
                d.0.clone()
            }),
        )
        .with_state(document);
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/jwks.json")
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn keys_rotate_with_the_providers_set_without_a_restart() {
    let document: Document = Arc::new(Mutex::new((EMPTY.to_string(), 0)));
    let url = provider(document.clone()).await;
    let api = start_api_with(
        &[row("acme", "boiler-1", "acme-event-1")],
        &[
            ("PULSE_JWT_JWKS_URL", &url),
            ("PULSE_JWT_JWKS_REFRESH_S", "2"),
        ],
    )
    .await;
    let token = rotated_key_token();

    let (status, body) = api.get("/v1/events", Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let published = String::from_utf8(fixture("rs256-test-2-jwks.json")).expect("UTF-8");
    publish(&document, &published);
    let body = poll_until("the published key", Duration::from_secs(20), || async {
        let (status, body) = api.get("/v1/events", Some(&token)).await;
        (status == StatusCode::OK).then_some(body)
    })
    .await;
    assert_eq!(body["events"][0]["event_id"], "acme-event-1", "{body}");

    // The provider retires the key; a broken answer in between changes nothing.
    let before = publish(&document, "not JSON");
    poll_until(
        "a fetch of the broken set",
        Duration::from_secs(20),
        || async { (fetches(&document) > before).then_some(()) },
    )
    .await;
    let (status, _) = api.get("/v1/events", Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "a bad fetch dropped the keys");
    publish(&document, EMPTY);
    poll_until(
        "the retired key refused",
        Duration::from_secs(20),
        || async {
            let (status, _) = api.get("/v1/events", Some(&token)).await;
            (status == StatusCode::UNAUTHORIZED).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn a_provider_down_at_start_is_waited_for() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/jwks.json");
    let mut api = spawn_api(&[("PULSE_JWT_JWKS_URL", &url)]).await;
    let service = api.service();
    let waiting = poll_until(
        "/readyz saying the API waits for the JWKS",
        Duration::from_secs(30),
        || async move {
            let (status, body) = service.readyz().await?;
            (status == 503 && body.contains("waiting for the JWKS")).then_some(body)
        },
    )
    .await;
    assert!(waiting.contains(&url), "{waiting}");
    assert_eq!(
        api.service_mut().exited(),
        None,
        "the API exited: {waiting}"
    );

    let published = String::from_utf8(fixture("rs256-test-2-jwks.json")).expect("UTF-8");
    let document: Document = Arc::new(Mutex::new((published, 0)));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the provider's port");
    serve_provider(listener, document.clone());
    api.service_mut().wait_ready(Duration::from_secs(60)).await;
    let (status, body) = api.get("/v1/events", Some(&rotated_key_token())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(fetches(&document) >= 1);
}
