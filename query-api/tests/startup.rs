//! Start-up against dependencies that are not there yet: with Kafka down
//! (so the results topic does not exist yet and cannot be created), the API
//! serves /readyz with 503 and the step it waits for, becomes ready once
//! Kafka is up and the topic created, and a SIGTERM while waiting ends it at
//! once. Run through `./dev test`.

mod support;

use std::time::{Duration, Instant};

use pulse_testkit::{free_port, poll_until, unique, ScriptedServer, Service, Stack};

async fn spawn_api(kafka_port: u16) -> Service {
    let stack = Stack::from_env();
    let database = support::migrated_database(&stack.clickhouse_url).await;
    let port = free_port();
    let mut env = vec![
        ("PULSE_QUERY_LISTEN", format!("127.0.0.1:{port}")),
        ("PULSE_TOPIC_PREFIX", unique("startup") + "."),
        ("PULSE_KAFKA_BOOTSTRAP", format!("127.0.0.1:{kafka_port}")),
        ("PULSE_CLICKHOUSE_DATABASE", database),
        ("PULSE_RESULT_PARTITIONS", "1".to_string()),
    ];
    env.extend(support::auth_env(&unique("startup-auth")));
    Service::spawn(&stack, "pulse-query-api", port, &[], &env)
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
