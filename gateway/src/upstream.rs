//! The order-svc pool: keep-alive HTTP connections, active health checks, and failover.
//!
//! A background task asks every instance's `/healthz` twice a second. A write goes to the next
//! healthy instance in turn; if the connection cannot be made (the request was never sent), the
//! next instance is tried, so one instance down costs no client error. A request that was sent
//! but got no answer is not retried: the order may have been logged (`503`, outcome unknown).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An upstream's answer: status, body, content type.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// Why no upstream answered.
#[derive(Debug)]
pub enum Failure {
    /// No instance could be connected to: nothing was sent.
    NoneReachable,
    /// Sent, but no answer in time: the outcome is unknown.
    NoAnswer(String),
}

/// A set of equivalent upstream instances.
pub struct Pool {
    /// Base URLs (`http://127.0.0.1:9101`).
    urls: Vec<String>,
    /// Health as last checked.
    healthy: Vec<AtomicBool>,
    /// Round-robin cursor.
    next: AtomicUsize,
    /// Keep-alive client.
    client: reqwest::Client,
}

impl Pool {
    /// A pool of `urls`; all are assumed healthy until checked.
    pub fn new(urls: Vec<String>, timeout: Duration) -> anyhow::Result<Arc<Pool>> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        let healthy = urls.iter().map(|_| AtomicBool::new(true)).collect();
        Ok(Arc::new(Pool { urls, healthy, next: AtomicUsize::new(0), client }))
    }

    /// Checks every instance's `/healthz` every `every`, forever.
    pub async fn check_health(self: Arc<Pool>, every: Duration) {
        loop {
            for (i, url) in self.urls.iter().enumerate() {
                let ok = self
                    .client
                    .get(format!("{url}/healthz"))
                    .timeout(Duration::from_millis(400))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                let was = self.healthy[i].swap(ok, Ordering::Relaxed);
                if was != ok {
                    tracing::warn!(upstream = %url, healthy = ok, "upstream health changed");
                }
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Healthy instances, starting at the round-robin cursor; unhealthy ones after, as a last resort.
    fn order(&self) -> Vec<usize> {
        let n = self.urls.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let all = (0..n).map(|k| (start + k) % n);
        let (up, down): (Vec<usize>, Vec<usize>) =
            all.partition(|&i| self.healthy[i].load(Ordering::Relaxed));
        up.into_iter().chain(down).collect()
    }

    /// Whether any instance looks healthy.
    pub fn any_healthy(&self) -> bool {
        self.healthy.iter().any(|h| h.load(Ordering::Relaxed))
    }

    /// Sends a request to one instance, failing over while nothing was sent.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        request_id: &str,
        gateway_in: Option<common::Timestamp>,
    ) -> Result<Answer, Failure> {
        for i in self.order() {
            let url = format!("{}{path_and_query}", self.urls[i]);
            let mut req = self.client.request(method.clone(), &url).header("x-request-id", request_id);
            if let Some(at) = gateway_in {
                req = req.header(common::http::GATEWAY_TS_HEADER, at.0.to_string());
            }
            if let Some(body) = &body {
                req = req.header("content-type", "application/json").body(body.clone());
            }
            match req.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body = r.bytes().await.map_err(|e| Failure::NoAnswer(e.to_string()))?.to_vec();
                    return Ok(Answer { status, body });
                }
                Err(e) if e.is_connect() => {
                    self.healthy[i].store(false, Ordering::Relaxed);
                    tracing::warn!(upstream = %self.urls[i], error = %e, "cannot connect; trying the next instance");
                }
                Err(e) => return Err(Failure::NoAnswer(e.to_string())),
            }
        }
        Err(Failure::NoneReachable)
    }
}
