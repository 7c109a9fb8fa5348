//! Command-line and environment settings shared by the services. Every flag
//! also reads an environment variable; defaults point at the local stack that
//! `./dev up` starts.

use clap::Args;

use crate::schemas::EventKind;

/// How to reach and authenticate to the Kafka cluster.
#[derive(Args, Debug, Clone)]
pub struct KafkaClient {
    /// Kafka bootstrap servers.
    #[arg(
        long = "kafka-bootstrap",
        env = "PULSE_KAFKA_BOOTSTRAP",
        default_value = "127.0.0.1:19092"
    )]
    pub bootstrap: String,
    /// plaintext, ssl, sasl_plaintext or sasl_ssl.
    #[arg(
        long = "kafka-security-protocol",
        env = "PULSE_KAFKA_SECURITY_PROTOCOL",
        default_value = "plaintext"
    )]
    pub security_protocol: String,
    /// SASL mechanism, e.g. SCRAM-SHA-512, when the protocol uses SASL.
    #[arg(long = "kafka-sasl-mechanism", env = "PULSE_KAFKA_SASL_MECHANISM")]
    pub sasl_mechanism: Option<String>,
    #[arg(long = "kafka-sasl-username", env = "PULSE_KAFKA_SASL_USERNAME")]
    pub sasl_username: Option<String>,
    #[arg(
        long = "kafka-sasl-password",
        env = "PULSE_KAFKA_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub sasl_password: Option<String>,
    /// CA certificate (PEM file) that signed the brokers' certificates.
    #[arg(long = "kafka-ssl-ca-location", env = "PULSE_KAFKA_SSL_CA_LOCATION")]
    pub ssl_ca_location: Option<String>,
    /// Compression of the records Pulse produces: none, gzip, snappy, lz4 or
    /// zstd. lz4 saves network and disk for little CPU; none spends the
    /// least CPU, in the client and in the broker, which decompresses every
    /// batch to validate it.
    #[arg(
        long = "kafka-compression",
        env = "PULSE_KAFKA_COMPRESSION",
        default_value = "lz4"
    )]
    pub compression: String,
}

impl KafkaClient {
    /// A client of an unauthenticated cluster, as the local stack runs.
    pub fn plaintext(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            security_protocol: "plaintext".into(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            compression: "lz4".into(),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct KafkaArgs {
    #[command(flatten)]
    pub client: KafkaClient,
    /// Prefix of every topic Pulse reads or writes, so that several pipelines can share a cluster.
    #[arg(
        long = "topic-prefix",
        env = "PULSE_TOPIC_PREFIX",
        default_value = "pulse."
    )]
    pub topic_prefix: String,
}

impl KafkaArgs {
    pub fn topics(&self) -> Topics {
        Topics {
            prefix: self.topic_prefix.clone(),
        }
    }
}

/// Topic names derived from one prefix.
#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// Raw events of one kind, Avro in the Confluent wire format.
    pub fn events(&self, kind: EventKind) -> String {
        format!("{}{}", self.prefix, kind.topic_suffix())
    }

    /// Scored events as JSON, for live streams.
    pub fn results(&self) -> String {
        format!("{}results", self.prefix)
    }

    /// Anomaly alerts as JSON: one per event the model flags.
    pub fn alerts(&self) -> String {
        format!("{}alerts", self.prefix)
    }

    /// Records that could not be processed, with the reason in headers.
    pub fn dead_letter(&self) -> String {
        format!("{}dead-letter", self.prefix)
    }

    /// Report requests as JSON, keyed by job id (`crate::jobs`).
    pub fn jobs(&self) -> String {
        format!("{}jobs", self.prefix)
    }

    /// OCR job requests, a topic of their own, so that the workers with
    /// the GPUs take only these and scale on their lag alone.
    pub fn ocr_jobs(&self) -> String {
        format!("{}ocr-jobs", self.prefix)
    }

    /// Cancel orders for jobs, read by every worker.
    pub fn job_control(&self) -> String {
        format!("{}job-control", self.prefix)
    }

    /// Every job transition as JSON, for live streams.
    pub fn job_events(&self) -> String {
        format!("{}job-events", self.prefix)
    }
}

#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// Base URL of a Confluent-compatible schema registry.
    #[arg(
        long = "registry-url",
        env = "PULSE_REGISTRY_URL",
        default_value = "http://127.0.0.1:18081"
    )]
    pub registry_url: String,
    /// User to present to the registry (HTTP basic authentication); the URL's
    /// own userinfo serves as well.
    #[arg(long = "registry-username", env = "PULSE_REGISTRY_USERNAME")]
    pub registry_username: Option<String>,
    #[arg(
        long = "registry-password",
        env = "PULSE_REGISTRY_PASSWORD",
        hide_env_values = true
    )]
    pub registry_password: Option<String>,
}

impl RegistryArgs {
    /// The registry's URL with the credentials in its userinfo, which is how
    /// the registry clients take basic authentication.
    pub fn url(&self) -> anyhow::Result<String> {
        let Some(user) = &self.registry_username else {
            return Ok(self.registry_url.clone());
        };
        let mut url = url::Url::parse(&self.registry_url)
            .map_err(|e| anyhow::anyhow!("PULSE_REGISTRY_URL {:?}: {e}", self.registry_url))?;
        let refused = |()| anyhow::anyhow!("PULSE_REGISTRY_URL cannot carry credentials");
        url.set_username(user).map_err(refused)?;
        url.set_password(self.registry_password.as_deref())
            .map_err(refused)?;
        // The clients append "/subjects/...": no trailing slash.
        Ok(url.as_str().trim_end_matches('/').to_string())
    }
}

#[derive(Args, Debug, Clone)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP interface.
    #[arg(
        long = "clickhouse-url",
        env = "PULSE_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:18123"
    )]
    pub url: String,
    /// Database holding Pulse's tables.
    #[arg(
        long = "clickhouse-database",
        env = "PULSE_CLICKHOUSE_DATABASE",
        default_value = "pulse"
    )]
    pub database: String,
    #[arg(
        long = "clickhouse-user",
        env = "PULSE_CLICKHOUSE_USER",
        default_value = "default"
    )]
    pub user: String,
    #[arg(
        long = "clickhouse-password",
        env = "PULSE_CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub password: String,
    /// ClickHouse cluster name: each service creates its tables ON CLUSTER
    /// with Replicated engines. Unset: a single server.
    #[arg(long = "clickhouse-cluster", env = "PULSE_CLICKHOUSE_CLUSTER")]
    pub cluster: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log format: `text` for people, `json` for log collectors. Levels come from RUST_LOG.
    #[arg(long = "log-format", env = "PULSE_LOG_FORMAT", default_value = "text")]
    pub format: crate::logging::LogFormat,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(url: &str, user: Option<&str>, password: Option<&str>) -> RegistryArgs {
        RegistryArgs {
            registry_url: url.into(),
            registry_username: user.map(Into::into),
            registry_password: password.map(Into::into),
        }
    }

    #[test]
    fn registry_credentials_go_into_the_url_escaped() {
        let plain = registry("http://127.0.0.1:18081", None, None);
        assert_eq!(plain.url().unwrap(), "http://127.0.0.1:18081");
        let with = registry("http://registry:8081/", Some("ingest"), Some("p@ss:w/rd"));
        assert_eq!(
            with.url().unwrap(),
            "http://ingest:p%40ss%3Aw%2Frd@registry:8081"
        );
        assert!(registry("not a url", Some("u"), None).url().is_err());
    }
}
