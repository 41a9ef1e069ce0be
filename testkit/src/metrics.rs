//! Prometheus text read strictly. A test that checks a counter stayed at 0 must
//! fail when the endpoint is unreachable or the series is absent (a renamed
//! metric, a label that changed), so both are errors here, never a default.

use crate::http::{HttpError, http_get};

#[derive(Debug, thiserror::Error)]
pub enum MetricError {
    #[error("scraping metrics: {0}")]
    Http(#[from] HttpError),
    #[error("scraping {url}: status {status}")]
    Status { url: String, status: u16 },
    #[error("series {series} is absent from the metrics")]
    Absent { series: String },
    #[error("series {series} has a value that is not a number: {value}")]
    NotANumber { series: String, value: String },
}

/// The value of one series in Prometheus text. `series` is the name with its
/// labels exactly as exported (`bandsync_x_total` or `bandsync_x{kind="tick"}`).
pub fn metric(text: &str, series: &str) -> Result<f64, MetricError> {
    let line = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.rsplit_once(' ').is_some_and(|(key, _)| key == series))
        .ok_or_else(|| MetricError::Absent {
            series: series.to_owned(),
        })?;
    let value = line.rsplit_once(' ').map(|(_, v)| v).unwrap_or_default();
    value.parse().map_err(|_| MetricError::NotANumber {
        series: series.to_owned(),
        value: value.to_owned(),
    })
}

/// Scrapes `url` (a `/metrics` endpoint) and reads one series from it.
pub async fn scrape_metric(url: &str, series: &str) -> Result<f64, MetricError> {
    let response = http_get(url).await?;
    if response.status != 200 {
        return Err(MetricError::Status {
            url: url.to_owned(),
            status: response.status,
        });
    }
    metric(&response.body, series)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str =
        "# TYPE a_total counter\na_total 3\nb{kind=\"tick\"} 0.25\nc_total_extra 9\n";

    #[test]
    fn reads_present_series_and_refuses_absent_ones() {
        assert_eq!(metric(TEXT, "a_total").expect("present"), 3.0);
        assert_eq!(metric(TEXT, "b{kind=\"tick\"}").expect("present"), 0.25);
        assert!(matches!(
            metric(TEXT, "c_total"),
            Err(MetricError::Absent { .. })
        ));
        assert!(matches!(
            metric("", "a_total"),
            Err(MetricError::Absent { .. })
        ));
    }
}
