//! Start-up order: the registry, ingest and the processor are started
//! before Kafka and ClickHouse exist. None exits; each answers `/readyz`
//! with 503 and what it waits for, and ingest refuses events with 503
//! meanwhile. Once the servers start, all become ready on their own and an
//! event posted to ingest is stored. (The query API's own start-up test,
//! with its results topic created after it starts, is
//! `query-api/tests/startup.rs`.) Run through `./dev test`.

use std::time::Duration;

use pulse_common::clock::now_ms;
use pulse_testkit::{
    clickhouse, free_port, ingest_settings, poll_until, processor_settings, unique, ScriptedServer,
    Service, Stack,
};
use serde_json::json;

/// Polls `service`'s `/readyz` until it answers 503 naming `waiting`.
async fn waits_for(service: &mut Service, waiting: &str) {
    let name = service.name.clone();
    poll_until(
        &format!("{name} saying it waits for {waiting}"),
        Duration::from_secs(30),
        || async {
            let (status, body) = service.readyz().await?;
            (status == 503 && body.contains(&format!("waiting for {waiting}"))).then_some(body)
        },
    )
    .await;
    assert_eq!(service.exited(), None, "{name} exited while waiting");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn services_started_before_kafka_and_clickhouse_wait_for_them_and_become_ready() {
    let shared = Stack::from_env();
    let kafka = ScriptedServer::kafka();
    let server = ScriptedServer::clickhouse();
    let stack = Stack {
        kafka_bootstrap: format!("127.0.0.1:{}", kafka.port()),
        clickhouse_url: format!("http://127.0.0.1:{}", server.port()),
        ..shared
    };
    let prefix = unique("order") + ".";
    let database = unique("order_");
    let (api_port, metrics_port) = (free_port(), free_port());
    // Its /readyz answers on the metrics port while the API port waits.
    let mut registry = Service::spawn(
        &stack,
        "pulse-registry",
        metrics_port,
        &[],
        &[
            ("PULSE_REGISTRY_LISTEN", format!("127.0.0.1:{api_port}")),
            (
                "PULSE_REGISTRY_METRICS_LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            ),
            ("PULSE_REGISTRY_TOPIC", format!("{prefix}_schemas")),
        ],
    );
    let registry_url = format!("http://127.0.0.1:{api_port}");

    let port = free_port();
    let mut ingest = Service::spawn(
        &stack,
        "pulse-ingest",
        port,
        &[],
        &ingest_settings(&prefix, &registry_url, port, &[]),
    );
    let port = free_port();
    let mut processor = Service::spawn(
        &stack,
        "pulse-processor",
        port,
        &[],
        &processor_settings(&prefix, &registry_url, &database, port, &[]),
    );
    waits_for(&mut registry, "Kafka (the schemas topic)").await;
    waits_for(&mut ingest, "Kafka topics").await;
    waits_for(&mut processor, "").await;
    let http = reqwest::Client::new();
    let event = json!({
        "kind": "telemetry", "event_id": "00000000-0000-4000-8000-00000000c0de",
        "tenant_id": "acme", "source_id": "early-bird", "event_time": now_ms(),
        "readings": {"temperature_c": 21.5}
    });
    let early = http
        .post(format!("{}/v1/events", ingest.url))
        .json(&event)
        .send()
        .await
        .expect("ingest answers while starting");
    assert_eq!(early.status().as_u16(), 503);
    assert_eq!(
        early.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let body: serde_json::Value = early.json().await.expect("json");
    assert_eq!(body["error"], "starting", "{body}");

    tokio::task::block_in_place(|| {
        server.start();
        kafka.start();
    });
    registry.wait_ready(Duration::from_secs(120)).await;
    ingest.wait_ready(Duration::from_secs(120)).await;
    processor.wait_ready(Duration::from_secs(120)).await;

    let accepted = http
        .post(format!("{}/v1/events", ingest.url))
        .json(&event)
        .send()
        .await
        .expect("ingest answers");
    assert_eq!(accepted.status().as_u16(), 202);
    let client = clickhouse(&stack.clickhouse_url, &database);
    let stored = poll_until("the event stored", Duration::from_secs(60), || async {
        client
            .query("SELECT source_id FROM events")
            .fetch_all::<String>()
            .await
            .ok()
            .filter(|rows| !rows.is_empty())
    })
    .await;
    assert_eq!(stored, ["early-bird"]);
}
