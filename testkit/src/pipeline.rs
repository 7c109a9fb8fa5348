//! The whole pipeline of one test: registry, ingest, processor and query
//! API on topics and a database of their own.

use pulse_common::config::Topics;

use crate::query_api::auth_env;
use crate::{free_port, start_registry, unique, Service, Stack};

/// Registry, ingest, processor and query API of one test, on their own
/// topics and database.
pub struct Pipeline {
    pub stack: Stack,
    pub topics: Topics,
    pub database: String,
    pub registry: Service,
    pub ingest: Service,
    pub processor: Service,
    pub query: Service,
}

pub async fn start_pipeline() -> Pipeline {
    let stack = Stack::from_env();
    let prefix = unique("e2e") + ".";
    let database = unique("e2e_");
    let registry = start_registry(&stack, &prefix).await;
    let common = |listen_var: &'static str, port: u16| {
        vec![
            (listen_var, format!("127.0.0.1:{port}")),
            ("PULSE_TOPIC_PREFIX", prefix.clone()),
            ("PULSE_REGISTRY_URL", registry.url.clone()),
            ("PULSE_CLICKHOUSE_DATABASE", database.clone()),
            ("PULSE_PROCESSOR_GROUP", format!("{prefix}processor")),
            ("PULSE_EVENT_PARTITIONS", "3".to_string()),
            ("PULSE_RESULT_PARTITIONS", "3".to_string()),
        ]
    };
    let port = free_port();
    let ingest = Service::start(
        &stack,
        "pulse-ingest",
        port,
        &[],
        &common("PULSE_INGEST_LISTEN", port),
    )
    .await;
    let port = free_port();
    let processor = Service::start(
        &stack,
        "pulse-processor",
        port,
        &[],
        &common("PULSE_PROCESSOR_LISTEN", port),
    )
    .await;
    let port = free_port();
    let mut query_env = common("PULSE_QUERY_LISTEN", port);
    query_env.extend(auth_env(&prefix));
    let query = Service::start(&stack, "pulse-query-api", port, &[], &query_env).await;
    Pipeline {
        topics: Topics::new(prefix),
        stack,
        database,
        registry,
        ingest,
        processor,
        query,
    }
}
