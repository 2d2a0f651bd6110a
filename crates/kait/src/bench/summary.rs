//! One table over every scenario of a run (`kait bench --all`), so that a regression in any
//! part of Kait shows in one place: each scenario's headline figure, its ratio to the ceiling
//! it is measured against (the `raw` loopback rate, or the scenario's own loopback transfer),
//! its tail latency and the server's peak RSS.

use super::BenchResult;
use super::efficiency::EfficiencyResult;
use super::media::MediaResult;
use super::overload::OverloadResult;
use super::pages::PagesResult;
use super::streams::StreamsResult;

/// One line of the summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SummaryRow {
    pub scenario: String,
    pub backend: &'static str,
    /// The scenario's figure, with its unit.
    pub headline: String,
    /// Against the ceiling it is compared with (`raw`, or the same transfer on loopback).
    pub vs_ceiling: Option<f64>,
    pub p99_ms: Option<f64>,
    pub peak_rss_mib: Option<f64>,
}

pub fn of_result(result: &BenchResult) -> SummaryRow {
    SummaryRow {
        scenario: result.scenario.to_owned(),
        backend: result.backend,
        headline: format!("{:.0} delivered/s", result.delivered_per_second),
        vs_ceiling: result.ratio_to_raw,
        p99_ms: (result.scenario != "raw").then_some(result.latency_p99_ms),
        peak_rss_mib: result.server_peak_rss_mib,
    }
}

pub fn of_media(result: &MediaResult) -> Vec<SummaryRow> {
    let ratio = |kait: f64, raw: f64| (raw > 0.0).then(|| kait / raw);
    vec![
        SummaryRow {
            scenario: "media upload".into(),
            backend: result.backend,
            headline: format!("{:.0} MB/s", result.upload_mb_per_second),
            vs_ceiling: ratio(result.upload_mb_per_second, result.upload_raw_mb_per_second),
            p99_ms: None,
            peak_rss_mib: result.server_peak_rss_mib,
        },
        SummaryRow {
            scenario: "media ranges".into(),
            backend: result.backend,
            headline: format!("{:.0} MB/s", result.ranged_download_mb_per_second),
            vs_ceiling: ratio(
                result.ranged_download_mb_per_second,
                result.ranged_download_raw_mb_per_second,
            ),
            p99_ms: Some(result.range_p99_ms),
            peak_rss_mib: result.server_peak_rss_mib,
        },
    ]
}

pub fn of_overload(result: &OverloadResult, raw: Option<f64>) -> SummaryRow {
    SummaryRow {
        scenario: "overload".into(),
        backend: result.backend,
        headline: match result.drain_ratio {
            Some(ratio) => format!("drain {ratio:.2}× backlog÷capacity"),
            None => "kept up".to_owned(),
        },
        vs_ceiling: raw.map(|raw| result.capacity_per_second / raw),
        p99_ms: Some(result.after_p99_ms),
        peak_rss_mib: result.server_peak_rss_mib,
    }
}

pub fn of_efficiency(result: &EfficiencyResult) -> SummaryRow {
    SummaryRow {
        scenario: "efficiency".into(),
        backend: result.backend,
        headline: format!(
            "CPU {}× flat-out; idle {:.2} % core",
            result
                .worst_vs_flat_out()
                .map_or("-".to_owned(), |ratio| format!("{ratio:.1}")),
            result.idle.kait_core_percent
        ),
        vs_ceiling: None,
        p99_ms: result
            .phases
            .iter()
            .filter(|phase| phase.rate.is_some())
            .map(|phase| phase.p99_ms)
            .reduce(f64::max),
        peak_rss_mib: result.server_peak_rss_mib,
    }
}

pub fn of_pages(result: &PagesResult) -> SummaryRow {
    // The slowest page a person waits for on load (on-demand counts are not a page load).
    let slowest = result
        .pages
        .iter()
        .filter(|page| !page.page.contains("counts"))
        .max_by(|a, b| a.p50_ms.total_cmp(&b.p50_ms));
    SummaryRow {
        scenario: "pages".into(),
        backend: result.backend,
        headline: slowest.map_or("-".to_owned(), |page| {
            format!("slowest page p50 {:.2} ms", page.p50_ms)
        }),
        vs_ceiling: None,
        p99_ms: None,
        peak_rss_mib: None,
    }
}

pub fn of_streams(result: &StreamsResult) -> SummaryRow {
    SummaryRow {
        scenario: "streams".into(),
        backend: result.backend,
        headline: format!("p50 {:.2}× idle with streams", result.p50_ratio),
        vs_ceiling: None,
        p99_ms: Some(result.with_streams_and_traffic.p99_ms),
        peak_rss_mib: None,
    }
}

/// One scenario's lines as soon as it ends, on stderr (stdout keeps the tables and JSON lines).
pub fn print_progress(rows: &[SummaryRow]) {
    for row in rows {
        let [ratio, p99, peak] = cells(row);
        eprintln!(
            "bench: {} ({}) done: {}, vs ceil {ratio}, p99 {p99} ms, peak {peak} MiB",
            row.scenario, row.backend, row.headline,
        );
    }
}

pub fn print(rows: &[SummaryRow]) {
    println!(
        "\nsummary\n{:<16} {:<8} {:>34} {:>9} {:>10} {:>9}",
        "scenario", "store", "figure", "vs ceil", "p99 ms", "peak MiB"
    );
    for row in rows {
        let [ratio, p99, peak] = cells(row);
        println!(
            "{:<16} {:<8} {:>34} {ratio:>9} {p99:>10} {peak:>9}",
            row.scenario, row.backend, row.headline,
        );
    }
}

/// The ratio, the p99 and the peak RSS as printed, `-` where a scenario has none.
fn cells(row: &SummaryRow) -> [String; 3] {
    let or_dash = |value: Option<f64>, digits: usize| {
        value.map_or("-".to_owned(), |value| format!("{value:.digits$}"))
    };
    [
        or_dash(row.vs_ceiling, 3),
        or_dash(row.p99_ms, 2),
        or_dash(row.peak_rss_mib, 1),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_page_on_load_heads_the_pages_row() {
        let page = |name: &'static str, p50_ms: f64| super::super::pages::PageTime {
            page: name,
            calls: 1,
            p50_ms,
            p95_ms: p50_ms,
            slowest_call: String::new(),
            slowest_call_p50_ms: p50_ms,
        };
        let result = PagesResult {
            scenario: "pages",
            backend: "sqlite",
            messages: 10,
            fill_seconds: 1.0,
            pages: vec![
                page("portal: endpoints", 0.3),
                page("portal: an endpoint", 0.9),
                page("dashboard: an endpoint's counts", 200.0),
            ],
        };
        assert_eq!(of_pages(&result).headline, "slowest page p50 0.90 ms");
    }
}
