//! order-svc's metrics: the shared per-route request metrics ([`common::http`]) plus the broker
//! acknowledgement latency that order entry's `202` waits for (the produce latency: enqueue to
//! acknowledgement), the acknowledged commands, and the publishes that got no acknowledgement.

use std::sync::Arc;

use common::http::{buckets, HttpMetrics};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts};

use crate::publisher::BrokerError;

/// The service's metrics, in one registry.
pub struct Metrics {
    /// The registry and the request metrics (served by the middleware).
    pub http: Arc<HttpMetrics>,
    /// `order_ack_seconds`: enqueue → broker acknowledgement (in the gateway: order-svc's 202).
    pub ack: Histogram,
    /// `orders_published_total{kind}`: acknowledged commands by kind.
    pub published: IntCounterVec,
    /// `order_svc_broker_errors_total{kind}`: publishes left unacknowledged, by [`BrokerError`]
    /// (`kind as usize`; each series exists from the start).
    pub broker_errors: [IntCounter; BrokerError::ALL.len()],
}

impl Metrics {
    /// Fresh metrics labelled with the service's name.
    pub fn new(service: &str) -> prometheus::Result<Metrics> {
        let http = HttpMetrics::new(service)?;
        let ack = Histogram::with_opts(
            HistogramOpts::new("order_ack_seconds", "Publish to acknowledgement").buckets(buckets()),
        )?;
        let published = IntCounterVec::new(
            Opts::new("orders_published_total", "Commands the broker acknowledged, by kind"),
            &["kind"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new("order_svc_broker_errors_total", "Publishes the broker did not acknowledge, by kind"),
            &["kind"],
        )?;
        http.registry.register(Box::new(ack.clone()))?;
        http.registry.register(Box::new(published.clone()))?;
        http.registry.register(Box::new(errors.clone()))?;
        let broker_errors = BrokerError::ALL.map(|k| errors.with_label_values(&[k.as_str()]));
        Ok(Metrics { http: Arc::new(http), ack, published, broker_errors })
    }

    /// Counts a publish left unacknowledged.
    pub fn broker_error(&self, kind: BrokerError) {
        self.broker_errors[kind as usize].inc();
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    use super::*;
    use crate::publisher::PublishError;

    #[test]
    fn broker_errors_count_by_kind_and_every_kind_is_exported() {
        for (i, k) in BrokerError::ALL.into_iter().enumerate() {
            assert_eq!(k as usize, i, "{k:?}");
        }
        let full = KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull);
        let late = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        let refused = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert_eq!(BrokerError::of(&full), BrokerError::QueueFull);
        assert_eq!(BrokerError::of(&late), BrokerError::Timeout);
        assert_eq!(BrokerError::of(&refused), BrokerError::Refused);
        assert_eq!(PublishError::Position { partition: -1, offset: 0 }.kind(), BrokerError::Position);

        let m = Metrics::new("order-svc").unwrap();
        m.broker_error(BrokerError::of(&late));
        m.broker_error(BrokerError::Timeout);
        let text = m.http.render();
        let line = |kind: &str| {
            let label = format!(r#"kind="{kind}""#);
            text.lines()
                .find(|l| l.starts_with("order_svc_broker_errors_total{") && l.contains(&label))
                .map(str::to_owned)
        };
        assert!(line("timeout").is_some_and(|l| l.ends_with(" 2")), "{text}");
        for kind in BrokerError::ALL {
            assert!(line(kind.as_str()).is_some(), "{kind:?}: {text}");
        }
        assert!(line("queue_full").is_some_and(|l| l.ends_with(" 0")), "{text}");
    }
}
