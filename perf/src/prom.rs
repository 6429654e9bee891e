//! Histograms from the services' own `/metrics` (Prometheus text format): what a load run added
//! to one, and its quantiles, for the load report's view of the ack from inside the stack.
//!
//! Only what the report needs: a histogram's cumulative `_bucket` series, summed over every
//! series whose labels include the ones asked for (both gateways, both order-svcs), the
//! difference of two scrapes, and a quantile interpolated linearly within its bucket — what
//! Prometheus' `histogram_quantile` does, so the figures match a dashboard's.

use std::fmt;

/// A histogram's cumulative buckets: `(upper bound, observations at or below it)`, by bound,
/// the last one `+Inf`.
#[derive(Clone, Debug, PartialEq)]
pub struct Buckets(pub Vec<(f64, f64)>);

/// Why a scrape's text could not be read as the histogram asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum PromError {
    /// A `_bucket` line of the histogram without a readable `le` label or value.
    Malformed(String),
    /// No `_bucket` series of that name with those labels.
    Missing(String),
}

impl fmt::Display for PromError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PromError::Malformed(line) => write!(f, "not a histogram bucket line: {line:?}"),
            PromError::Missing(what) => write!(f, "no histogram {what} in the scrape"),
        }
    }
}

impl std::error::Error for PromError {}

/// The value of label `key` in a series' `{…}` (values hold no `"` here: label values are names,
/// routes and bounds).
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

/// How a series is named in messages: `name{k="v",…}`.
pub fn series(name: &str, with: &[(&str, &str)]) -> String {
    let labels: Vec<String> = with.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// Adds `n` observations at or below `le` to cumulative buckets (kept unsorted until
/// [`sorted`]).
fn put(sums: &mut Vec<(f64, f64)>, le: f64, n: f64) {
    match sums.iter_mut().find(|(bound, _)| *bound == le) {
        Some((_, sum)) => *sum += n,
        None => sums.push((le, n)),
    }
}

/// The buckets, by bound.
fn sorted(mut sums: Vec<(f64, f64)>) -> Buckets {
    sums.sort_by(|a, b| a.0.total_cmp(&b.0));
    Buckets(sums)
}

/// `name`'s buckets in `text`, summed over every series whose labels include all of `with`
/// (`key`, `value`). Other metrics, comments and series are skipped.
pub fn histogram(text: &str, name: &str, with: &[(&str, &str)]) -> Result<Buckets, PromError> {
    let prefix = format!("{name}_bucket{{");
    let mut sums: Vec<(f64, f64)> = Vec::new();
    for line in text.lines().filter(|l| l.starts_with(&prefix)) {
        let malformed = || PromError::Malformed(line.to_owned());
        // The last `}`: a label value may hold braces (`route="/api/v1/orders/{order_id}"`).
        let (labels, value) = line[prefix.len()..].rsplit_once('}').ok_or_else(malformed)?;
        if !with.iter().all(|(k, v)| label(labels, k) == Some(*v)) {
            continue;
        }
        let le = match label(labels, "le").ok_or_else(malformed)? {
            "+Inf" => f64::INFINITY,
            le => le.parse::<f64>().map_err(|_| malformed())?,
        };
        let count =
            value.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()).ok_or_else(malformed)?;
        put(&mut sums, le, count);
    }
    if sums.is_empty() {
        return Err(PromError::Missing(series(name, with)));
    }
    Ok(sorted(sums))
}

impl Buckets {
    /// How many observations.
    pub fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |&(_, n)| n)
    }

    /// What one instance observed after `before` was scraped (a bucket missing from `before`
    /// counts from 0). If its total went down the instance restarted in between, and everything
    /// it has now is new. Compare instance by instance, then [`Buckets::add`]: in a sum over
    /// instances one restart could hide behind another's growth.
    pub fn since(&self, before: &Buckets) -> Buckets {
        if self.count() < before.count() {
            return self.clone();
        }
        let then = |le: f64| before.0.iter().find(|(b, _)| *b == le).map_or(0.0, |&(_, n)| n);
        Buckets(self.0.iter().map(|&(le, n)| (le, (n - then(le)).max(0.0))).collect())
    }

    /// The two added bucket by bucket (a bound only one has counts as 0 in the other's
    /// cumulative series up to its next bound: the services here share their bounds).
    pub fn add(&self, other: &Buckets) -> Buckets {
        let mut sums = self.0.clone();
        for &(le, n) in &other.0 {
            put(&mut sums, le, n);
        }
        sorted(sums)
    }

    /// The `q` quantile (0–1), interpolated linearly within its bucket as Prometheus'
    /// `histogram_quantile` does; `None` with no observations. A quantile in the `+Inf` bucket is
    /// the largest finite bound (the true value is above it: [`Quantile::above`]).
    pub fn quantile(&self, q: f64) -> Option<Quantile> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut lower = (0.0, 0.0);
        for &(le, n) in &self.0 {
            if n >= rank && n > 0.0 {
                if le.is_infinite() {
                    return Some(Quantile { value: lower.0, above: true });
                }
                let share = if n > lower.1 { (rank - lower.1) / (n - lower.1) } else { 1.0 };
                return Some(Quantile {
                    value: lower.0 + (le - lower.0) * share.clamp(0.0, 1.0),
                    above: false,
                });
            }
            if le.is_finite() {
                lower = (le, n);
            }
        }
        Some(Quantile { value: lower.0, above: true })
    }
}

/// A quantile read from buckets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quantile {
    /// The value, in the histogram's unit.
    pub value: f64,
    /// True when it lies past the largest finite bound (and `value` is that bound).
    pub above: bool,
}

impl Quantile {
    /// As milliseconds from seconds, `>` marking a value past the largest bound.
    pub fn ms(self) -> String {
        format!("{}{:.2}", if self.above { ">" } else { "" }, self.value * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = "\
# HELP order_ack_seconds How long the broker took to acknowledge a publish.
# TYPE order_ack_seconds histogram
order_ack_seconds_bucket{service=\"order-svc\",le=\"0.001\"} 50
order_ack_seconds_bucket{service=\"order-svc\",le=\"0.002\"} 90
order_ack_seconds_bucket{service=\"order-svc\",le=\"0.004\"} 100
order_ack_seconds_bucket{service=\"order-svc\",le=\"+Inf\"} 100
order_ack_seconds_sum{service=\"order-svc\"} 0.12
order_ack_seconds_count{service=\"order-svc\"} 100
gateway_upstream_seconds_bucket{pool=\"matcher\",service=\"gateway\",le=\"0.001\"} 7
gateway_upstream_seconds_bucket{pool=\"matcher\",service=\"gateway\",le=\"+Inf\"} 9
gateway_upstream_seconds_bucket{pool=\"order_svc\",service=\"gateway\",le=\"0.001\"} 3
gateway_upstream_seconds_bucket{pool=\"order_svc\",service=\"gateway\",le=\"+Inf\"} 4
";

    #[test]
    fn reads_the_buckets_of_one_histogram_and_interpolates_within_them() {
        let h = histogram(SCRAPE, "order_ack_seconds", &[]).unwrap();
        assert_eq!(h.0, vec![(0.001, 50.0), (0.002, 90.0), (0.004, 100.0), (f64::INFINITY, 100.0)]);
        // The 50th of 100 is the first bucket's last: its bound.
        assert_eq!(h.quantile(0.5).unwrap().value, 0.001);
        // 70 of 100: halfway through the second bucket's 40.
        assert!((h.quantile(0.7).unwrap().value - 0.0015).abs() < 1e-12);
        // 99 of 100: nine tenths into the third bucket (0.002–0.004).
        assert!((h.quantile(0.99).unwrap().value - 0.0038).abs() < 1e-12);
        assert_eq!(h.quantile(0.99).unwrap().ms(), "3.80");
    }

    #[test]
    fn keeps_only_the_series_with_the_labels_asked_for() {
        let h = histogram(SCRAPE, "gateway_upstream_seconds", &[("pool", "order_svc")]).unwrap();
        assert_eq!(h.count(), 4.0);
        // One observation past the largest bound: the 99th percentile is "more than 1 ms".
        let q = h.quantile(0.99).unwrap();
        assert!(q.above && q.value == 0.001, "{q:?}");
        assert_eq!(q.ms(), ">1.00");
    }

    #[test]
    fn sums_the_series_of_every_instance() {
        let two = format!("{SCRAPE}{}", SCRAPE.replace("order-svc", "order-svc-2"));
        let h = histogram(&two, "order_ack_seconds", &[]).unwrap();
        assert_eq!(h.count(), 200.0);
        assert_eq!(h.0[0], (0.001, 100.0));
    }

    #[test]
    fn what_a_run_added_is_the_difference_of_two_scrapes() {
        let before = histogram(SCRAPE, "order_ack_seconds", &[]).unwrap();
        let after = histogram(&SCRAPE.replace("} 100\n", "} 110\n"), "order_ack_seconds", &[]).unwrap();
        let run = after.since(&before);
        // The 10 new observations all landed in the 2–4 ms bucket.
        assert_eq!(run.0, vec![(0.001, 0.0), (0.002, 0.0), (0.004, 10.0), (f64::INFINITY, 10.0)]);
        assert!((run.quantile(0.5).unwrap().value - 0.003).abs() < 1e-12);
        // An instance that restarted between the scrapes counts from zero.
        assert_eq!(before.since(&after).count(), 100.0);
        assert_eq!(run.add(&run).count(), 20.0);
        assert_eq!(run.add(&Buckets(Vec::new())), run);
        // Nothing observed: no quantile.
        assert_eq!(before.since(&before).quantile(0.5), None);
    }

    #[test]
    fn a_missing_histogram_or_a_broken_line_is_an_error() {
        assert!(matches!(histogram(SCRAPE, "nope_seconds", &[]), Err(PromError::Missing(_))));
        assert!(matches!(
            histogram(SCRAPE, "gateway_upstream_seconds", &[("pool", "redis")]),
            Err(PromError::Missing(m)) if m.contains("pool=\"redis\"")
        ));
        let broken = "order_ack_seconds_bucket{service=\"x\",le=\"fast\"} 3\n";
        assert!(matches!(histogram(broken, "order_ack_seconds", &[]), Err(PromError::Malformed(_))));
        let no_value = "order_ack_seconds_bucket{le=\"0.1\"}\n";
        // Braces inside a label value are not the end of the labels.
        let braces = "h_bucket{route=\"/o/{id}\",le=\"0.1\"} 4\nh_bucket{route=\"/o/{id}\",le=\"+Inf\"} 5\n";
        assert_eq!(histogram(braces, "h", &[("route", "/o/{id}")]).unwrap().count(), 5.0);
        assert!(matches!(histogram(no_value, "order_ack_seconds", &[]), Err(PromError::Malformed(_))));
    }
}
