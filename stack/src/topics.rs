//! Creates the stack's topics ([`crate::plan::TOPICS`]) through the Kafka admin API, so it works
//! against Tansu and any other Kafka-protocol broker alike (`KAFKA_BROKERS`). A topic that exists
//! already is fine (a restarted stack on the same run directory).

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

/// Creates every topic of `topics` on `brokers`, retrying for up to `timeout` while the broker is
/// still starting.
pub fn create(brokers: &str, topics: &[(&str, i32)], timeout: Duration) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let deadline = Instant::now() + timeout;
    let new: Vec<NewTopic> =
        topics.iter().map(|(name, parts)| NewTopic::new(name, *parts, TopicReplication::Fixed(1))).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
    loop {
        let outcome = rt.block_on(admin.create_topics(new.iter(), &options));
        let failed: Vec<String> = match outcome {
            Ok(results) => results
                .into_iter()
                .filter_map(|r| match r {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => None,
                    Err((topic, code)) => Some(format!("{topic}: {code}")),
                })
                .collect(),
            Err(e) => vec![e.to_string()],
        };
        if failed.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("creating topics on {brokers}: {}", failed.join("; "));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
