//! Kafka client settings shared by producers and consumers.

use rdkafka::ClientConfig;

/// Base settings for any client of the cluster.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("client.dns.lookup", "use_all_dns_ips");
    c
}

/// A producer whose acknowledged records survive a broker failure and are
/// never duplicated by its own retries.
pub fn durable_producer_config(bootstrap: &str) -> ClientConfig {
    let mut c = client_config(bootstrap);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5");
    c
}
