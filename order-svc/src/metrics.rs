//! Prometheus metrics: request counts and latency per route, and the broker acknowledgement
//! latency that order entry's `202` waits for.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// The service's metrics, in their own registry.
pub struct Metrics {
    /// Everything below, for `/metrics`.
    registry: Registry,
    /// `http_requests_total{route, method, status}`.
    pub requests: IntCounterVec,
    /// `http_request_duration_seconds{route}`.
    pub latency: HistogramVec,
    /// `order_ack_seconds`: enqueue → broker acknowledgement.
    pub ack: Histogram,
    /// `orders_published_total{kind}`: acknowledged commands by kind.
    pub published: IntCounterVec,
}

fn buckets() -> Vec<f64> {
    // 50 µs … ~13 s, doubling.
    prometheus::exponential_buckets(0.000_05, 2.0, 19).unwrap_or_default()
}

impl Metrics {
    /// Fresh metrics labelled with the service's name.
    pub fn new(service: &str) -> prometheus::Result<Metrics> {
        let registry = Registry::new_custom(None, Some([("service".to_owned(), service.to_owned())].into()))?;
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route, method and status"),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by route")
                .buckets(buckets()),
            &["route"],
        )?;
        let ack = Histogram::with_opts(
            HistogramOpts::new("order_ack_seconds", "Publish to broker acknowledgement (acks=all)")
                .buckets(buckets()),
        )?;
        let published = IntCounterVec::new(
            Opts::new("orders_published_total", "Commands the broker acknowledged, by kind"),
            &["kind"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(ack.clone()))?;
        registry.register(Box::new(published.clone()))?;
        Ok(Metrics { registry, requests, latency, ack, published })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding to a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
