//! Start-up against dependencies that are not there yet: with Kafka down
//! (so the results topic does not exist yet and cannot be created), the API
//! serves /readyz with 503 and the step it waits for, becomes ready once
//! Kafka is up and the topic created, and a SIGTERM while waiting ends it at
//! once. Started before its database exists, it waits for the processor's
//! tables, then creates its own audit table, with the record of a request
//! answered meanwhile in it. Run through `./dev test`.

use pulse_testkit::query_api as support;
use std::time::{Duration, Instant};

use pulse_testkit::{free_port, poll_until, unique, ScriptedServer, Service, Stack};

async fn spawn_api(kafka_port: u16) -> Service {
    let stack = Stack::from_env();
    let database = support::migrated_database(&stack.clickhouse_url).await;
    spawn_api_on(&stack, kafka_port, database)
}

fn spawn_api_on(stack: &Stack, kafka_port: u16, database: String) -> Service {
    let port = free_port();
    let mut env = vec![
        ("PULSE_QUERY_LISTEN", format!("127.0.0.1:{port}")),
        ("PULSE_TOPIC_PREFIX", unique("startup") + "."),
        ("PULSE_KAFKA_BOOTSTRAP", format!("127.0.0.1:{kafka_port}")),
        ("PULSE_CLICKHOUSE_DATABASE", database),
        ("PULSE_RESULT_PARTITIONS", "1".to_string()),
    ];
    env.extend(support::auth_env(&unique("startup-auth")));
    Service::spawn(stack, "pulse-query-api", port, &[], &env)
}

/// /readyz once it answers 503 naming what the API waits for.
async fn waiting_for(api: &Service) -> String {
    poll_until(
        "/readyz saying what it waits for",
        Duration::from_secs(30),
        || async {
            match api.readyz().await {
                Some((503, body)) if body.starts_with("not ready: waiting for ") => Some(body),
                Some((status, body)) => panic!("/readyz answered {status}: {body}"),
                None => None,
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn the_api_waits_for_kafka_and_its_results_topic_and_then_is_ready() {
    let kafka = ScriptedServer::kafka();
    let mut api = spawn_api(kafka.port()).await;
    let reason = waiting_for(&api).await;
    assert!(reason.contains("the results topic"), "{reason}");
    assert_eq!(api.exited(), None, "the API exited while Kafka was down");

    kafka.start();
    api.wait_ready(Duration::from_secs(120)).await;
    assert_eq!(api.readyz().await, Some((200, "ready".to_string())));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn sigterm_while_waiting_for_kafka_ends_the_api_promptly() {
    // Nothing listens on this port: Kafka is down for the whole test.
    let mut api = spawn_api(free_port()).await;
    waiting_for(&api).await;
    let asked = Instant::now();
    let status = api.stop().expect("the API exits");
    assert!(status.success(), "{status}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "took {:?} to stop",
        asked.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn started_before_its_database_the_api_creates_its_audit_table_once_it_is_there() {
    let stack = Stack::from_env();
    let kafka_port = stack
        .kafka_bootstrap
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a Kafka port");
    let database = unique("api_late_");
    let mut api = spawn_api_on(&stack, kafka_port, database.clone());
    poll_until(
        "/readyz waiting for the ClickHouse tables",
        Duration::from_secs(60),
        || async {
            let reason = waiting_for(&api).await;
            reason.contains("the ClickHouse tables").then_some(())
        },
    )
    .await;
    // Answered meanwhile, storage not there: 503, its audit record queued.
    let response = reqwest::Client::new()
        .get(format!("{}/v1/events?limit=1", api.url))
        .bearer_auth(support::hs256("acme", "analyst"))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(response.status().as_u16(), 503);

    // The processor's migrations make the database and its tables.
    support::migrate(&stack.clickhouse_url, &database).await;
    api.wait_ready(Duration::from_secs(60)).await;
    let clickhouse = pulse_testkit::clickhouse(&stack.clickhouse_url, &database);
    let recorded: Vec<(String, u16)> = poll_until(
        "the early request in the API's audit table",
        Duration::from_secs(30),
        || async {
            let rows: Vec<(String, u16)> = clickhouse
                .query("SELECT route, status FROM audit ORDER BY time_ms")
                .fetch_all()
                .await
                .ok()?;
            (!rows.is_empty()).then_some(rows)
        },
    )
    .await;
    assert_eq!(recorded, [("/v1/events".to_string(), 503)]);
}
