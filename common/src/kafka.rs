//! Kafka client settings shared by producers and consumers.

use rdkafka::ClientConfig;

use crate::config::KafkaClient;

/// Base settings for any client of the cluster.
pub fn client_config(kafka: &KafkaClient) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.bootstrap)
        .set("client.dns.lookup", "use_all_dns_ips")
        .set("security.protocol", &kafka.security_protocol);
    let optional = [
        ("sasl.mechanism", &kafka.sasl_mechanism),
        ("sasl.username", &kafka.sasl_username),
        ("sasl.password", &kafka.sasl_password),
        ("ssl.ca.location", &kafka.ssl_ca_location),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            c.set(key, v);
        }
    }
    c
}

/// A producer whose acknowledged records survive a broker failure and are
/// never duplicated by its own retries.
pub fn durable_producer_config(kafka: &KafkaClient) -> ClientConfig {
    let mut c = client_config(kafka);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", &kafka.compression)
        .set("linger.ms", "5");
    c
}

/// A topic Pulse creates when it is missing.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// Topic-level settings, e.g. `cleanup.policy=compact`.
    pub settings: Vec<(&'static str, String)>,
}

impl TopicSpec {
    /// A topic with the broker's default settings.
    pub fn new(name: impl Into<String>, partitions: i32, replication_factor: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication_factor,
            settings: vec![],
        }
    }
}

/// Closes a Kafka client on a thread of its own. Closing one waits on the
/// client's threads, up to a tenth of a second: an admin client's polling
/// thread wakes that often, and a consumer with a group id is polled closed
/// in steps that long. Callers on the start-up or a batch's path need not wait.
pub fn close_in_background<T: Send + 'static>(client: T) {
    std::thread::spawn(move || drop(client));
}

/// Each topic's `max.message.bytes`: the largest record batch its brokers
/// accept. A producer batches records of one partition together and the
/// broker refuses the whole batch when it is over, so a gateway that knows
/// the limit refuses an oversized record before it is sent, and the
/// records batched beside it are never refused with it.
pub async fn max_message_bytes(
    kafka: &KafkaClient,
    topics: &[String],
    timeout: std::time::Duration,
) -> anyhow::Result<std::collections::HashMap<String, usize>> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;

    let admin: AdminClient<DefaultClientContext> = client_config(kafka).create()?;
    let specifiers: Vec<ResourceSpecifier> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let described = admin
        .describe_configs(
            specifiers.iter(),
            &AdminOptions::new().request_timeout(Some(timeout)),
        )
        .await;
    close_in_background(admin);
    let mut limits = std::collections::HashMap::new();
    for (topic, result) in topics.iter().zip(described?) {
        let resource =
            result.map_err(|code| anyhow::anyhow!("cannot describe topic {topic}: {code}"))?;
        let limit = resource
            .get("max.message.bytes")
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("topic {topic} has no max.message.bytes"))?;
        limits.insert(topic.clone(), limit);
    }
    Ok(limits)
}

/// Creates the topics that do not exist yet; existing ones are left as they are.
pub async fn ensure_topics(
    kafka: &KafkaClient,
    topics: &[TopicSpec],
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;

    let admin: AdminClient<DefaultClientContext> = client_config(kafka).create()?;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            t.settings.iter().fold(
                NewTopic::new(
                    &t.name,
                    t.partitions,
                    TopicReplication::Fixed(t.replication_factor),
                ),
                |nt, (k, v)| nt.set(k, v),
            )
        })
        .collect();
    let results = admin
        .create_topics(
            new_topics.iter(),
            &AdminOptions::new().operation_timeout(Some(timeout)),
        )
        .await?;
    close_in_background(admin);
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("cannot create topic {name}: {code}"),
        }
    }
    Ok(())
}
