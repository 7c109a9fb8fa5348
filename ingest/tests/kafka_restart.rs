//! Fault test: the Kafka broker is killed (SIGKILL) and restarted in the
//! middle of a load run. Every event that got a 2xx is in Kafka exactly once,
//! checked by event id; requests during the outage wait, then succeed or get
//! 503. Uses a broker of its own so nothing else is disturbed. Run through
//! `./dev test`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pulse_common::clock::now_ms;
use pulse_common::config::{KafkaClient, Topics};
use pulse_common::event::Event;
use pulse_common::kafka::client_config;
use pulse_common::schemas::EventKind;
use pulse_testkit::{start_ingest, start_registry, unique, ScriptedServer, Stack};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use serde_json::json;

const CLIENTS: usize = 4;
const BATCH: usize = 20;

#[derive(Default)]
struct Outcomes {
    /// Event ids of requests answered 2xx, with when (relative to the kill).
    accepted: Vec<(String, bool)>,
    /// Status counts of every other answer.
    refused: HashMap<u16, usize>,
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn acknowledged_events_survive_a_broker_restart_exactly_once() {
    let stack = Stack::from_env();
    let broker = ScriptedServer::kafka();
    let bootstrap = format!("127.0.0.1:{}", broker.port());
    tokio::task::block_in_place(|| broker.start());

    let prefix = unique("fault") + ".";
    let registry = start_registry(&stack, &prefix).await;
    let ingest = start_ingest(
        &stack,
        &prefix,
        &registry.url,
        &[
            ("PULSE_KAFKA_BOOTSTRAP", bootstrap.clone()),
            ("PULSE_EVENT_PARTITIONS", "3".into()),
            ("PULSE_INGEST_DELIVERY_TIMEOUT_MS", "30000".into()),
        ],
    )
    .await;

    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let killed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("{}/v1/events", ingest.url);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (outcomes, killed, stop, url) = (outcomes.clone(), killed.clone(), stop.clone(), url.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let ids: Vec<String> = (0..BATCH)
                        .map(|_| {
                            n += 1;
                            format!("00000000-0000-4000-8{c:03x}-{n:012x}")
                        })
                        .collect();
                    let body: Vec<_> = ids
                        .iter()
                        .map(|id| json!({"kind": "telemetry", "event_id": id, "tenant_id": "acme",
                            "source_id": format!("dev-{c}"), "event_time": now_ms(), "readings": {"v": 1.0}}))
                        .collect();
                    let after_kill = killed.load(Ordering::SeqCst);
                    let status = match http.post(&url).json(&body).send().await {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 0,
                    };
                    let mut o = outcomes.lock().expect("outcomes");
                    if (200..300).contains(&status) {
                        o.accepted.extend(ids.into_iter().map(|id| (id, after_kill)));
                    } else {
                        *o.refused.entry(status).or_default() += 1;
                    }
                }
            })
        })
        .collect();

    // Load before the crash, then kill the broker and bring it back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = outcomes.lock().expect("outcomes").accepted.len();
    assert!(before > 0, "no events accepted before the crash");
    killed.store(true, Ordering::SeqCst);
    let outage = Instant::now();
    tokio::task::block_in_place(|| {
        broker.kill();
        broker.start();
    });
    let outage = outage.elapsed();
    // Load after the restart until fresh requests get through again.
    let resumed_at = outcomes.lock().expect("outcomes").accepted.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while outcomes.lock().expect("outcomes").accepted.len() < resumed_at + 10 * BATCH {
        assert!(
            Instant::now() < deadline,
            "ingest did not recover after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client task");
    }

    let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes"));
    let accepted: HashMap<&str, bool> = outcomes
        .accepted
        .iter()
        .map(|(id, k)| (id.as_str(), *k))
        .collect();
    assert_eq!(accepted.len(), outcomes.accepted.len(), "ids are unique");

    // Every record on the topic, counted by event id.
    let mut cfg = client_config(&KafkaClient::plaintext(&bootstrap));
    cfg.set("group.id", unique("fault-reader"))
        .set("auto.offset.reset", "earliest");
    let consumer: StreamConsumer = cfg.create().expect("consumer");
    let topics = Topics::new(prefix);
    consumer
        .subscribe(&[&topics.events(EventKind::Telemetry)])
        .expect("subscribe");
    let decoder = AvroDecoder::new(SrSettings::new(registry.url.clone()));
    let mut seen: HashMap<String, usize> = HashMap::new();
    loop {
        let wait = if seen.len() < accepted.len() {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(3)
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Ok(m)) => {
                let value = decoder.decode(m.payload()).await.expect("decodes").value;
                let id = Event::from_avro(EventKind::Telemetry, value)
                    .expect("an event")
                    .event_id;
                *seen.entry(id).or_default() += 1;
            }
            Ok(Err(e)) => panic!("consumer error: {e}"),
            Err(_) => break,
        }
    }
    let missing: Vec<_> = accepted
        .keys()
        .filter(|id| !seen.contains_key(**id))
        .collect();
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    let refused_written = seen
        .keys()
        .filter(|id| !accepted.contains_key(id.as_str()))
        .count();
    let during = accepted.values().filter(|k| **k).count();
    eprintln!(
        "broker down and back in {outage:?}; accepted {} events ({before} before the kill, {during} after), \
         refused requests by status {:?}, refused events found in Kafka anyway: {refused_written}",
        accepted.len(),
        outcomes.refused
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        duplicated.is_empty(),
        "events written twice: {:?}",
        &duplicated[..duplicated.len().min(5)]
    );
    assert!(during > 0, "nothing accepted after the kill");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn requests_get_503_with_retry_after_while_kafka_is_down_then_succeed() {
    let stack = Stack::from_env();
    let broker = ScriptedServer::kafka();
    tokio::task::block_in_place(|| broker.start());
    let prefix = unique("down") + ".";
    let registry = start_registry(&stack, &prefix).await;
    let ingest = start_ingest(
        &stack,
        &prefix,
        &registry.url,
        &[
            (
                "PULSE_KAFKA_BOOTSTRAP",
                format!("127.0.0.1:{}", broker.port()),
            ),
            ("PULSE_INGEST_DELIVERY_TIMEOUT_MS", "2000".into()),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/events", ingest.url);
    let event = |n: u64| {
        json!({"kind": "telemetry", "event_id": format!("00000000-0000-4000-8000-{n:012x}"),
        "tenant_id": "acme", "source_id": "dev-1", "event_time": now_ms(), "readings": {"v": 1.0}})
    };

    assert_eq!(
        http.post(&url)
            .json(&event(1))
            .send()
            .await
            .expect("answer")
            .status(),
        202
    );
    tokio::task::block_in_place(|| broker.kill());
    let started = Instant::now();
    let r = http
        .post(&url)
        .json(&event(2))
        .send()
        .await
        .expect("answer");
    let waited = started.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"], "kafka_unavailable");
    assert!(
        waited >= Duration::from_millis(1500),
        "answered before the bound: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "waited past the bound: {waited:?}"
    );

    tokio::task::block_in_place(|| broker.start());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = http
            .post(&url)
            .json(&event(3))
            .send()
            .await
            .expect("answer")
            .status();
        if status == 202 {
            break;
        }
        assert_eq!(status, 503, "only 503 while recovering");
        assert!(Instant::now() < deadline, "ingest did not recover");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
