//! `perf-plot DIR`: the plots of a `perf/run` report, from the `.hgrm` files `load-gen` wrote
//! into `DIR` (`ack-<rate>.hgrm`, `trade-<rate>.hgrm`):
//! - `spectrum-ack.svg`, `spectrum-trade.svg`: latency by percentile (HdrHistogram's percentile
//!   spectrum: the x axis stretches the tail, 90 %, 99 %, 99.9 %, …), one line per offered rate;
//! - `latency-vs-rate.svg`: p50, p99 and p99.9 of the ack against the offered rate;
//! - `hops.svg`, from `hops-<rate>.tsv`: each rate's median order path as stacked bars, one
//!   segment per hop (gateway → published → consumed → matched → persisted).
//!
//! SVG, drawn with `plotters`; the report embeds them.

use std::path::{Path, PathBuf};

use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;

/// One histogram's percentile spectrum: (1 / (1 − percentile), latency in ms).
struct Spectrum {
    rate: u64,
    points: Vec<(f64, f64)>,
}

/// Reads an `.hgrm` percentile file (`Value Percentile TotalCount 1/(1-Percentile)` rows).
fn read_hgrm(path: &Path) -> Result<Vec<(f64, f64)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let points: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (value, inverse) = (cols.first()?.parse::<f64>().ok()?, cols.get(3)?.parse::<f64>().ok()?);
            inverse.is_finite().then_some((inverse.max(1.0), value))
        })
        .collect();
    if points.is_empty() {
        return Err(format!("{}: no percentile rows", path.display()));
    }
    Ok(points)
}

/// The spectra of `DIR/<prefix>-<rate>.hgrm`, by rate.
fn spectra(dir: &Path, prefix: &str) -> Result<Vec<Spectrum>, String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let Some(rate) = name.strip_prefix(&format!("{prefix}-")).and_then(|r| r.strip_suffix(".hgrm"))
        else {
            continue;
        };
        let Ok(rate) = rate.parse() else { continue };
        out.push(Spectrum { rate, points: read_hgrm(&path)? });
    }
    out.sort_by_key(|s| s.rate);
    Ok(out)
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn draw_error<E: std::fmt::Debug>(e: E) -> String {
    format!("drawing: {e:?}")
}

/// A white 900 × 520 SVG page at `out`.
fn canvas(out: &Path) -> Result<DrawingArea<SVGBackend<'_>, Shift>, String> {
    let root = SVGBackend::new(out, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    Ok(root)
}

/// Every plot's frame: its title, margins and axis label areas.
fn frame<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder.caption(title, ("sans-serif", 20)).margin(14).x_label_area_size(44).y_label_area_size(64);
    builder
}

/// Every plot's legend, boxed at `at`.
fn legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    at: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(draw_error)
}

/// Latency by percentile, one line per rate.
fn plot_spectrum(all: &[Spectrum], title: &str, out: &Path) -> Result<(), String> {
    let max_x = all.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(10.0, f64::max);
    let max_y = all.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(1.0, f64::max);
    let min_y = all.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(max_y, f64::min).max(0.01);
    let root = canvas(out)?;
    let mut chart = frame(&root, title)
        .build_cartesian_2d((1f64..max_x * 1.2).log_scale(), (min_y * 0.8..max_y * 1.3).log_scale())
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency, ms")
        .x_label_formatter(&|x| {
            let p = format!("{:.4}", 100.0 * (1.0 - 1.0 / x));
            format!("{}%", p.trim_end_matches('0').trim_end_matches('.'))
        })
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(draw_error)?;
    for (i, s) in all.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
            .map_err(draw_error)?
            .label(format!("{} orders/s", s.rate))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(draw_error)
}

/// The value at percentile `p` (0–100) of a spectrum.
fn at(s: &Spectrum, p: f64) -> f64 {
    let want = 1.0 / (1.0 - p / 100.0);
    s.points.iter().find(|(x, _)| *x >= want).or(s.points.last()).map_or(0.0, |(_, y)| *y)
}

/// p50, p99, p99.9 against the offered rate.
fn plot_vs_rate(all: &[Spectrum], out: &Path) -> Result<(), String> {
    let rates: Vec<f64> = all.iter().map(|s| s.rate as f64).collect();
    let (lo, hi) =
        (rates.iter().copied().fold(f64::MAX, f64::min), rates.iter().copied().fold(1.0, f64::max));
    let max_y = all.iter().map(|s| at(s, 99.9)).fold(1.0, f64::max);
    let min_y = all.iter().map(|s| at(s, 50.0)).fold(max_y, f64::min).max(0.01);
    let root = canvas(out)?;
    let mut chart = frame(&root, "Ack latency against offered rate")
        .build_cartesian_2d((lo * 0.8..hi * 1.25).log_scale(), (min_y * 0.6..max_y * 1.5).log_scale())
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("offered orders/s")
        .y_desc("ack latency, ms")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(draw_error)?;
    for (i, p) in [50.0, 99.0, 99.9].into_iter().enumerate() {
        let color = COLORS[i];
        let points: Vec<(f64, f64)> = all.iter().map(|s| (s.rate as f64, at(s, p))).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(draw_error)?
            .label(format!("p{p}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart
            .draw_series(points.into_iter().map(|xy| Circle::new(xy, 3, color.filled())))
            .map_err(draw_error)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(draw_error)
}

/// One rate's path: the rate, and each hop's (name, p50 ms) in path order.
type Path50 = (u64, Vec<(String, f64)>);

/// Every rate's path, from `hops-<rate>.tsv`.
fn read_hops(dir: &Path) -> Result<Vec<Path50>, String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let Some(Ok(rate)) = name.strip_prefix("hops-").and_then(|r| r.strip_suffix(".tsv")).map(str::parse)
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let hops = text
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut cols = l.split('\t');
                Some((cols.next()?.to_owned(), cols.next()?.parse().ok()?))
            })
            .collect();
        out.push((rate, hops));
    }
    out.sort_by_key(|(rate, _)| *rate);
    Ok(out)
}

/// Each rate's median path, one stacked bar per rate.
fn plot_hops(all: &[Path50], out: &Path) -> Result<(), String> {
    let top = all.iter().map(|(_, h)| h.iter().map(|x| x.1).sum::<f64>()).fold(1.0, f64::max);
    let root = canvas(out)?;
    let mut chart = frame(&root, "Where an order's time goes: median per hop, per offered rate")
        .build_cartesian_2d(0f64..all.len() as f64, 0f64..top * 1.35)
        .map_err(draw_error)?;
    let rates: Vec<u64> = all.iter().map(|(r, _)| *r).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(all.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 && i < rates.len() {
                format!("{}/s", rates[i])
            } else {
                String::new()
            }
        })
        .x_desc("offered orders/s")
        .y_desc("ms (median of each hop)")
        .draw()
        .map_err(draw_error)?;
    let names: Vec<String> =
        all.first().map(|(_, h)| h.iter().map(|x| x.0.clone()).collect()).unwrap_or_default();
    for (k, name) in names.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let bars = all.iter().enumerate().map(move |(i, (_, hops))| {
            let below: f64 = hops.iter().take(k).map(|x| x.1).sum();
            let height = hops.get(k).map_or(0.0, |x| x.1);
            Rectangle::new([(i as f64 + 0.2, below), (i as f64 + 0.8, below + height)], color.filled())
        });
        chart
            .draw_series(bars)
            .map_err(draw_error)?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(draw_error)
}

fn run(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut wrote = Vec::new();
    let ack = spectra(dir, "ack")?;
    if ack.is_empty() {
        return Err(format!("no ack-<rate>.hgrm in {}", dir.display()));
    }
    let path = dir.join("spectrum-ack.svg");
    plot_spectrum(&ack, "Ack latency by percentile (through nginx), per offered rate", &path)?;
    wrote.push(path);
    let trade = spectra(dir, "trade")?;
    if !trade.is_empty() {
        let path = dir.join("spectrum-trade.svg");
        plot_spectrum(&trade, "Order → trade latency by percentile, per offered rate", &path)?;
        wrote.push(path);
    }
    let path = dir.join("latency-vs-rate.svg");
    plot_vs_rate(&ack, &path)?;
    wrote.push(path);
    let hops = read_hops(dir)?;
    if !hops.is_empty() {
        let path = dir.join("hops.svg");
        plot_hops(&hops, &path)?;
        wrote.push(path);
    }
    Ok(wrote)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: perf-plot DIR   (a perf/run results directory with ack-<rate>.hgrm files)");
        std::process::exit(2);
    };
    match run(Path::new(&dir)) {
        Ok(wrote) => wrote.iter().for_each(|p| println!("wrote {}", p.display())),
        Err(e) => {
            eprintln!("perf-plot: {e}");
            std::process::exit(1);
        }
    }
}
