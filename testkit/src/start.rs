//! The services started as the integration tests run them: a registry,
//! an ingest gateway and a processor of a test's own.

use crate::service::Service;
use crate::stack::{free_port, Stack};

/// A schema registry of a test's own, on a topic no other test uses.
pub async fn start_registry(stack: &Stack, prefix: &str) -> Service {
    let port = free_port();
    Service::start(
        stack,
        "pulse-registry",
        port,
        &[],
        &[
            ("PULSE_REGISTRY_LISTEN", format!("127.0.0.1:{port}")),
            ("PULSE_REGISTRY_TOPIC", format!("{prefix}_schemas")),
            // Its /metrics on a port of the OS's choosing: several run at once.
            ("PULSE_REGISTRY_METRICS_LISTEN", "127.0.0.1:0".into()),
        ],
    )
    .await
}

/// An ingest gateway of a test's own: topics under `prefix`, schemas in the
/// registry at `registry_url`, plus the test's own settings.
pub async fn start_ingest(
    stack: &Stack,
    prefix: &str,
    registry_url: &str,
    settings: &[(&str, String)],
) -> Service {
    let port = free_port();
    let env = ingest_settings(prefix, registry_url, port, settings);
    Service::start(stack, "pulse-ingest", port, &[], &env).await
}

/// The environment [`start_ingest`] gives a gateway serving on `port`.
pub fn ingest_settings<'a>(
    prefix: &str,
    registry_url: &str,
    port: u16,
    settings: &[(&'a str, String)],
) -> Vec<(&'a str, String)> {
    let mut env = vec![
        ("PULSE_INGEST_LISTEN", format!("127.0.0.1:{port}")),
        ("PULSE_TOPIC_PREFIX", prefix.to_string()),
        ("PULSE_REGISTRY_URL", registry_url.to_string()),
    ];
    env.extend(settings.iter().cloned());
    env
}

/// Starts a processor of the events under `prefix`, storing into
/// `database`, serving its ops endpoints on `port` (a restarted instance
/// may keep its port); `settings` add to or override the defaults.
pub async fn start_processor(
    stack: &Stack,
    prefix: &str,
    registry_url: &str,
    database: &str,
    port: u16,
    settings: &[(&str, String)],
) -> Service {
    let env = processor_settings(prefix, registry_url, database, port, settings);
    Service::start(stack, "pulse-processor", port, &[], &env).await
}

/// The environment [`start_processor`] gives a processor.
pub fn processor_settings<'a>(
    prefix: &str,
    registry_url: &str,
    database: &str,
    port: u16,
    settings: &[(&'a str, String)],
) -> Vec<(&'a str, String)> {
    let mut env = vec![
        ("PULSE_PROCESSOR_LISTEN", format!("127.0.0.1:{port}")),
        ("PULSE_TOPIC_PREFIX", prefix.to_string()),
        ("PULSE_REGISTRY_URL", registry_url.to_string()),
        ("PULSE_CLICKHOUSE_DATABASE", database.to_string()),
        ("PULSE_PROCESSOR_GROUP", format!("{prefix}processor")),
    ];
    env.extend(settings.iter().cloned());
    env
}
