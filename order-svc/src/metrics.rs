//! order-svc's metrics: the shared per-route request metrics ([`common::http`]) plus the broker
//! acknowledgement latency that order entry's `202` waits for.

use std::sync::Arc;

use common::http::{buckets, HttpMetrics};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts};

/// The service's metrics, in one registry.
pub struct Metrics {
    /// The registry and the request metrics (served by the middleware).
    pub http: Arc<HttpMetrics>,
    /// `order_ack_seconds`: enqueue → broker acknowledgement (in the gateway: order-svc's 202).
    pub ack: Histogram,
    /// `orders_published_total{kind}`: acknowledged commands by kind.
    pub published: IntCounterVec,
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
        http.registry.register(Box::new(ack.clone()))?;
        http.registry.register(Box::new(published.clone()))?;
        Ok(Metrics { http: Arc::new(http), ack, published })
    }
}
