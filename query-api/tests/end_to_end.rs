//! The whole path on the real stack: an event POSTed to ingest is in Kafka
//! as Confluent-framed Avro, in ClickHouse with a score, returned over HTTP
//! and pushed to a WebSocket subscriber. Run through `./dev test`.

use pulse_testkit::query_api as support;
use std::collections::BTreeMap;
use std::time::Duration;

use apache_avro::types::Value;
use futures::StreamExt;
use pulse_common::clock::now_ms;
use pulse_common::config::KafkaClient;
use pulse_common::event::Event;
use pulse_common::kafka::client_config;
use pulse_common::schemas::EventKind;
use pulse_common::scored::{Alert, ScoredEvent};
use pulse_testkit::{clickhouse, poll_until, unique};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use serde_json::{json, Value as Json};

use pulse_testkit::pipeline::{start_pipeline, Pipeline};

const TENANT: &str = "acme";
const WAIT: Duration = Duration::from_secs(60);

fn telemetry(id: &str, source: &str, readings: Json) -> Json {
    json!({
        "kind": "telemetry",
        "event_id": id,
        "tenant_id": TENANT,
        "source_id": source,
        "event_time": now_ms(),
        "readings": readings,
        "firmware_version": "2.1.0"
    })
}

/// Reads every record of `topic` from the start until `n` have arrived.
async fn read_topic(bootstrap: &str, topic: &str, n: usize) -> Vec<Vec<u8>> {
    let mut cfg = client_config(&KafkaClient::plaintext(bootstrap));
    cfg.set("group.id", unique("e2e-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let consumer: StreamConsumer = cfg.create().expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(WAIT, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} records on {topic}", out.len()))
            .expect("record");
        out.push(m.payload().unwrap_or_default().to_vec());
    }
    // Nothing else arrives: rejected requests wrote nothing.
    let extra = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await;
    assert!(
        extra.is_err(),
        "{topic} holds more than the {n} accepted events"
    );
    out
}

async fn clickhouse_row(p: &Pipeline, event_id: &str) -> Option<ScoredEvent> {
    let client = clickhouse(&p.stack.clickhouse_url, &p.database);
    client
        .query("SELECT ?fields FROM events FINAL WHERE event_id = ?")
        .bind(event_id)
        .fetch_optional::<ScoredEvent>()
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn event_travels_from_http_to_kafka_clickhouse_http_and_websocket() {
    let p = start_pipeline().await;
    let http = reqwest::Client::new();

    // A dashboard subscribes before the events arrive.
    let ws_url = format!(
        "{}/v1/stream?access_token={}",
        p.query.url.replace("http", "ws"),
        support::hs256(TENANT, "dashboard")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("websocket connects");

    let normal_id = uuid::Uuid::new_v4().to_string();
    let anomaly_id = uuid::Uuid::new_v4().to_string();
    let readings =
        json!({"temperature_c": 21.0, "humidity_pct": 55.0, "vibration_g": 0.2, "battery_v": 3.8});
    let batch = json!([
        telemetry(&normal_id, "dev-1", readings.clone()),
        // Hot, yet as humid as a cool day: breaks how readings move together.
        telemetry(
            &anomaly_id,
            "dev-2",
            json!({"temperature_c": 36.0, "humidity_pct": 55.0, "vibration_g": 0.2, "battery_v": 3.8})
        ),
    ]);

    // A request with one bad event is rejected whole, naming the event and field.
    let mut bad = telemetry(&uuid::Uuid::new_v4().to_string(), "dev-3", readings.clone());
    bad["readings"]["temperature_c"] = json!("hot");
    let rejected = http
        .post(format!("{}/v1/events", p.ingest.url))
        .json(&json!([
            telemetry(&uuid::Uuid::new_v4().to_string(), "dev-3", readings.clone()),
            bad
        ]))
        .send()
        .await
        .expect("ingest answers");
    assert_eq!(rejected.status(), 422);
    let body: Json = rejected.json().await.expect("json error body");
    assert_eq!(body["errors"][0]["index"], 1);
    assert_eq!(body["errors"][0]["field"], "readings.temperature_c");

    let accepted = http
        .post(format!("{}/v1/events", p.ingest.url))
        .json(&batch)
        .send()
        .await
        .expect("ingest answers");
    assert_eq!(accepted.status(), 202);
    let body: Json = accepted.json().await.expect("json body");
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["event_ids"], json!([normal_id, anomaly_id]));

    // Hop 1: Kafka holds exactly the accepted events, Confluent-framed Avro
    // that decodes through the registry to what was posted.
    let payloads = read_topic(
        &p.stack.kafka_bootstrap,
        &p.topics.events(EventKind::Telemetry),
        2,
    )
    .await;
    let decoder = AvroDecoder::new(SrSettings::new(p.registry.url.clone()));
    let mut decoded = BTreeMap::new();
    for payload in &payloads {
        assert_eq!(payload[0], 0, "Confluent magic byte");
        let value = decoder
            .decode(Some(payload))
            .await
            .expect("decodes via registry")
            .value;
        let event = Event::from_avro(EventKind::Telemetry, value.clone()).expect("an event");
        assert!(
            matches!(&value, Value::Record(f) if f.len() == 6),
            "written with v2"
        );
        decoded.insert(event.event_id.clone(), event);
    }
    let normal = &decoded[&normal_id];
    assert_eq!(normal.tenant_id, TENANT);
    assert_eq!(normal.source_id, "dev-1");
    assert_eq!(normal.firmware_version.as_deref(), Some("2.1.0"));
    assert_eq!(normal.readings.get("humidity_pct"), Some(&55.0));
    assert_eq!(
        decoded[&anomaly_id].readings.get("temperature_c"),
        Some(&36.0)
    );

    // Hop 2: ClickHouse rows with scores; the model flags only the anomaly.
    let normal_row = poll_until("normal row in ClickHouse", WAIT, || {
        clickhouse_row(&p, &normal_id)
    })
    .await;
    let anomaly_row = poll_until("anomaly row in ClickHouse", WAIT, || {
        clickhouse_row(&p, &anomaly_id)
    })
    .await;
    assert_eq!(normal_row.tenant_id, TENANT);
    assert_eq!(normal_row.source_id, "dev-1");
    assert_eq!(&*normal_row.kind, "telemetry");
    assert_eq!(normal_row.event_time_ms, normal.event_time_ms);
    assert_eq!(
        normal_row.reading_names,
        ["battery_v", "humidity_pct", "temperature_c", "vibration_g"]
    );
    assert_eq!(normal_row.reading_values, [3.8, 55.0, 21.0, 0.2]);
    assert_eq!(normal_row.firmware_version, "2.1.0");
    assert_eq!(normal_row.is_anomaly, 0, "score {}", normal_row.score);
    assert_eq!(anomaly_row.is_anomaly, 1, "score {}", anomaly_row.score);
    assert!(anomaly_row.score > 10.0 * normal_row.score.max(1e-3));

    // The alerts topic holds one alert: the anomaly's.
    let alerts = read_topic(&p.stack.kafka_bootstrap, &p.topics.alerts(), 1).await;
    let alert: Alert = serde_json::from_slice(&alerts[0]).expect("an alert");
    assert_eq!(alert.event_id, anomaly_id);
    assert_eq!(alert.source_id, "dev-2");
    assert_eq!(alert.score, anomaly_row.score);
    assert!(alert.score > alert.threshold);

    // Hop 3: the query API returns the stored row, scoped to the tenant.
    let got: ScoredEvent = http
        .get(format!("{}/v1/events/{anomaly_id}", p.query.url))
        .bearer_auth(support::hs256(TENANT, "analyst"))
        .send()
        .await
        .expect("query answers")
        .json()
        .await
        .expect("an event");
    assert_eq!(got, anomaly_row);
    let other_tenant = http
        .get(format!("{}/v1/events/{anomaly_id}", p.query.url))
        .bearer_auth(support::hs256("globex", "analyst"))
        .send()
        .await
        .expect("query answers");
    assert_eq!(other_tenant.status(), 404);

    // Hop 4: the WebSocket subscriber received both results.
    let mut pushed = BTreeMap::new();
    while pushed.len() < 2 {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a pushed result in time")
            .expect("stream open")
            .expect("a message");
        let event: ScoredEvent =
            serde_json::from_str(msg.to_text().expect("text")).expect("a scored event");
        pushed.insert(event.event_id.clone(), event);
    }
    assert_eq!(pushed[&anomaly_id].score, anomaly_row.score);
    assert_eq!(pushed[&anomaly_id].is_anomaly, 1);
    assert_eq!(pushed[&normal_id].source_id, "dev-1");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn v1_telemetry_and_app_events_are_processed_alongside_v2() {
    let p = start_pipeline().await;
    let http = reqwest::Client::new();
    let v1_id = uuid::Uuid::new_v4().to_string();
    let app_id = uuid::Uuid::new_v4().to_string();
    let events = json!([
        {
            "kind": "telemetry", "schema_version": 1, "event_id": v1_id, "tenant_id": TENANT,
            "source_id": "old-device", "event_time": now_ms(), "readings": {"temperature_c": 20.0}
        },
        {
            "kind": "app", "event_id": app_id, "tenant_id": TENANT, "source_id": "shop-app",
            "event_time": now_ms(), "event_type": "checkout_completed", "properties": {"items": "3"}
        }
    ]);
    let r = http
        .post(format!("{}/v1/events", p.ingest.url))
        .json(&events)
        .send()
        .await
        .expect("ingest answers");
    assert_eq!(r.status(), 202);

    let v1_row = poll_until("v1 row", WAIT, || clickhouse_row(&p, &v1_id)).await;
    assert_eq!(v1_row.firmware_version, "", "v1 has no firmware field");
    assert_eq!(v1_row.reading_values, [20.0]);
    let registry_v1 = reqwest::get(format!(
        "{}/subjects/{}-value/versions/1",
        p.registry.url,
        p.topics.events(EventKind::Telemetry)
    ))
    .await
    .expect("registry answers")
    .json::<Json>()
    .await
    .expect("json");
    assert_eq!(
        registry_v1["id"].as_u64(),
        Some(u64::from(v1_row.schema_id))
    );

    let app_row = poll_until("app row", WAIT, || clickhouse_row(&p, &app_id)).await;
    assert_eq!(&*app_row.kind, "app");
    assert_eq!(app_row.event_type, "checkout_completed");
    assert_eq!(app_row.properties_json, r#"{"items":"3"}"#);
    assert_eq!(app_row.score, 0.0);
}
