//! `bench --plot FILE.svg`: the round-trip latency distributions of the run as an SVG picture.
//!
//! One panel per payload size, stacked; in each, one percentile curve per transport and mode:
//! x is the round trip in µs on a log scale, y the percentile on a "nines" scale (p0, p90, p99,
//! p99.9, p99.99 evenly spaced, so the tail gets as much room as the body), from p0 to p99.99.
//! One legend for all panels on the right; a transport keeps its colour in every panel. Rows
//! without a round-trip histogram (large-message rows, failed measurements) are left out.
//!
//! Text is drawn as SVG `<text>` elements; without plotters' `ttf` feature its layout uses a
//! built-in estimate of text widths, which the margins below leave room for.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::{self, CaseResult};

/// Width of the picture, pixels.
const WIDTH: u32 = 1200;
/// Height of one payload's panel, pixels.
const PANEL_HEIGHT: u32 = 400;
/// Height of the title above the panels, pixels.
const TITLE_HEIGHT: u32 = 70;
/// Width of the legend column on the right, pixels.
const LEGEND_WIDTH: u32 = 340;
/// The highest percentile drawn, in nines: 4 = p99.99.
const MAX_NINES: f64 = 4.0;
/// Points per curve.
const POINTS: usize = 400;

/// Line colours, in the order the series first appear (the bench's table order); distinct
/// enough on white, and repeated past the tenth series.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One curve: a transport and mode at one payload.
struct Series<'a> {
    /// `transport mode`, as in the table.
    name: String,
    /// Round trips in nanoseconds.
    hist: &'a Histogram<u64>,
}

/// A panel: one payload size and its curves.
struct Panel<'a> {
    /// Payload size in bytes.
    payload: usize,
    /// Its curves, in table order.
    series: Vec<Series<'a>>,
}

/// The panels of `cases`: standard rows with a non-empty histogram, grouped by payload in the
/// order they were measured.
fn panels(cases: &[CaseResult]) -> Vec<Panel<'_>> {
    let mut panels: Vec<Panel<'_>> = Vec::new();
    for c in cases.iter().filter(|c| !c.large) {
        let Some(Ok(hist)) = &c.rtt else { continue };
        if hist.is_empty() {
            continue;
        }
        let series = Series { name: format!("{} {}", c.transport.name(), c.mode.name()), hist };
        match panels.iter_mut().find(|p| p.payload == c.payload) {
            Some(p) => p.series.push(series),
            None => panels.push(Panel { payload: c.payload, series: vec![series] }),
        }
    }
    panels
}

/// The quantile at `nines` on the nines scale: 0 → 0, 1 → 0.9, 2 → 0.99, ...
fn quantile(nines: f64) -> f64 {
    1.0 - 10f64.powf(-nines)
}

/// The percentile curve of `hist`: (latency µs, nines) from p0 to p99.99.
fn curve(hist: &Histogram<u64>) -> Vec<(f64, f64)> {
    (0..=POINTS)
        .map(|i| {
            let nines = MAX_NINES * i as f64 / POINTS as f64;
            // The lowest recorded value is at least 1 ns: the log scale never sees 0.
            let ns = hist.value_at_quantile(quantile(nines)).max(1);
            (ns as f64 / 1000.0, nines)
        })
        .collect()
}

/// The label of a y value (a whole number of nines): `p0`, `p90`, `p99`, `p99.9`, `p99.99`.
fn percentile_label(nines: f64) -> String {
    let n = nines.round() as i32;
    if (nines - f64::from(n)).abs() > 1e-6 || !(0..=6).contains(&n) {
        return String::new();
    }
    match n {
        0 => "p0".into(),
        1 => "p90".into(),
        n => format!("p99{}", if n > 2 { format!(".{}", "9".repeat(n as usize - 2)) } else { String::new() }),
    }
}

/// The label of an x value (µs): no trailing zeros, at most two decimals.
fn latency_label(us: f64) -> String {
    if us >= 10.0 {
        format!("{us:.0}")
    } else {
        let s = format!("{us:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// `n` with commas between groups of three digits: `20,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Renders the plot of `cases` as SVG text, headed by `title`. Errors when no row has a
/// round-trip histogram.
pub fn render(cases: &[CaseResult], title: &str) -> Result<String, String> {
    let panels = panels(cases);
    if panels.is_empty() {
        return Err("no round-trip latencies were measured in this run".into());
    }
    // Every series name in table order, for the colours and the legend.
    let mut names: Vec<&str> = Vec::new();
    for s in panels.iter().flat_map(|p| &p.series) {
        if !names.contains(&s.name.as_str()) {
            names.push(&s.name);
        }
    }
    let colour = |name: &str| PALETTE[names.iter().position(|n| *n == name).unwrap_or(0) % PALETTE.len()];

    let height = TITLE_HEIGHT + PANEL_HEIGHT * panels.len() as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let (head, body) = root.split_vertically(TITLE_HEIGHT);
        head.draw(&Text::new(
            title.to_string(),
            (20, 14),
            ("sans-serif", 30).into_font().style(FontStyle::Bold).color(&BLACK),
        ))
        .map_err(e)?;
        head.draw(&Text::new(
            "percentile curves: x = round trip (log scale), y = share of round trips at or below it \
             (lower and further left is better)",
            (20, 46),
            ("sans-serif", 18).into_font().color(&RGBColor(80, 80, 80)),
        ))
        .map_err(e)?;
        let (plots, legend) = body.split_horizontally(WIDTH - LEGEND_WIDTH);
        for (panel, area) in panels.iter().zip(plots.split_evenly((panels.len(), 1))) {
            draw_panel(&area, panel, &colour).map_err(e)?;
        }
        draw_legend(&legend, &names, &colour).map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(svg)
}

/// Draws one payload's panel.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel<'_>,
    colour: &dyn Fn(&str) -> RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let curves: Vec<(&Series<'_>, Vec<(f64, f64)>)> =
        panel.series.iter().map(|s| (s, curve(s.hist))).collect();
    let points = || curves.iter().flat_map(|(_, c)| c.iter().map(|p| p.0));
    let lo = points().fold(f64::INFINITY, f64::min);
    let hi = points().fold(0.0, f64::max);
    // A little room either side; at least a factor of 10 wide so the log axis has labels.
    let (mut lo, mut hi) = (lo / 1.15, hi * 1.15);
    if hi / lo < 10.0 {
        let mid = (lo * hi).sqrt();
        (lo, hi) = (mid / 10f64.sqrt(), mid * 10f64.sqrt());
    }
    let rounds: Vec<u64> = panel.series.iter().map(|s| s.hist.len()).collect();
    let (min_r, max_r) =
        (rounds.iter().min().copied().unwrap_or(0), rounds.iter().max().copied().unwrap_or(0));
    let rounds = if min_r == max_r {
        thousands(min_r)
    } else {
        format!("{} to {}", thousands(min_r), thousands(max_r))
    };
    let caption =
        format!("{} payload ({rounds} round trips per curve)", report::payload_label(panel.payload));

    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 23).into_font().style(FontStyle::Bold))
        .margin_top(10)
        .margin_left(10)
        .margin_right(20)
        .margin_bottom(10)
        .x_label_area_size(50)
        .y_label_area_size(75)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..MAX_NINES)?;
    chart
        .configure_mesh()
        .x_desc("round-trip latency, µs (log scale)")
        .y_desc("percentile")
        .x_label_formatter(&|v| latency_label(*v))
        .y_labels(5)
        .y_label_formatter(&|v| percentile_label(*v))
        .label_style(("sans-serif", 18))
        .axis_desc_style(("sans-serif", 19))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(205, 205, 205))
        .draw()?;
    // The median, between p0 and p90 on this scale.
    let median = -(0.5f64).log10();
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(lo, median), (hi, median)],
        RGBColor(170, 170, 170).stroke_width(1),
    )))?;
    // Its label among the y labels, left of the axis (the mesh only labels whole nines).
    let (x, y) = chart.backend_coord(&(lo, median));
    let (bx, by) = area.get_base_pixel();
    area.draw(&Text::new(
        "p50",
        (x - bx - 10, y - by),
        ("sans-serif", 18)
            .into_font()
            .color(&RGBColor(110, 110, 110))
            .pos(Pos::new(HPos::Right, VPos::Center)),
    ))?;
    for (s, points) in curves {
        chart.draw_series(LineSeries::new(points, colour(&s.name).stroke_width(2)))?;
    }
    Ok(())
}

/// Draws the legend: a line of each series' colour and its name.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    names: &[&str],
    colour: &dyn Fn(&str) -> RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    area.draw(&Text::new(
        "transport, mode",
        (10, 40),
        ("sans-serif", 20).into_font().style(FontStyle::Bold),
    ))?;
    for (i, name) in names.iter().enumerate() {
        let y = 80 + 30 * i as i32;
        area.draw(&PathElement::new(vec![(10, y), (45, y)], colour(name).stroke_width(3)))?;
        area.draw(&Text::new(name.to_string(), (55, y - 9), ("sans-serif", 18)))?;
    }
    Ok(())
}

/// Writes the plot of `cases` to `path` as SVG. The error names the path.
pub fn write(path: &Path, cases: &[CaseResult], title: &str) -> Result<(), String> {
    let svg = render(cases, title).map_err(|e| format!("cannot draw the plot {}: {e}", path.display()))?;
    std::fs::write(path, svg).map_err(|e| format!("cannot write the plot {}: {e}", path.display()))
}

/// Checks before a run that `path`'s directory exists, so that a typo fails at once rather
/// than after the measurements.
pub fn check_path(path: &Path) -> Result<(), String> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if dir.is_dir() {
        Ok(())
    } else {
        Err(format!("cannot write the plot {}: no directory {}", path.display(), dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::measure::{new_histogram, Throughput};
    use crate::bench::{Mode, Transport};

    /// A standard case whose round trips are `base_ns` times 1..=100 (a spread-out curve).
    fn case(transport: Transport, mode: Mode, payload: usize, base_ns: u64) -> CaseResult {
        let mut h = new_histogram().unwrap();
        for k in 1..=100 {
            h.record(base_ns * k).unwrap();
        }
        CaseResult {
            transport,
            mode,
            payload,
            large: false,
            rounds: 100,
            messages: 1,
            budget: None,
            rtt: Some(Ok(h)),
            tput: Ok(Throughput { messages: 1, payload, elapsed: Duration::from_secs(1) }),
        }
    }

    /// The contents of the SVG's `<text>` elements, trimmed.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..t.find("</text>")?];
                Some(body.trim().to_string())
            })
            .collect()
    }

    #[test]
    fn labels() {
        assert_eq!(
            [0.0, 1.0, 2.0, 3.0, 4.0].map(percentile_label),
            ["p0", "p90", "p99", "p99.9", "p99.99"].map(String::from)
        );
        assert_eq!(percentile_label(0.5), "");
        assert_eq!(latency_label(0.5), "0.5");
        assert_eq!(latency_label(2.0), "2");
        assert_eq!(latency_label(200.0), "200");
        assert_eq!(
            [0, 999, 1000, 20_000, 1_234_567].map(thousands),
            ["0", "999", "1,000", "20,000", "1,234,567"]
        );
        assert!((quantile(2.0) - 0.99).abs() < 1e-12);
    }

    #[test]
    fn curve_rises_from_min_to_the_tail() {
        let c = case(Transport::Lapce, Mode::Spin, 64, 1000);
        let Some(Ok(h)) = &c.rtt else { unreachable!() };
        let points = curve(h);
        assert_eq!(points.len(), POINTS + 1);
        assert!((points[0].0 - 1.0).abs() < 0.01, "p0 is the minimum, 1 µs: {:?}", points[0]);
        assert!((points[POINTS].0 - 100.0).abs() < 0.2, "p99.99 is the maximum: {:?}", points[POINTS]);
        assert!(points.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1), "monotonic");
    }

    /// A plot of synthetic histograms: valid SVG with a panel per payload, every series named
    /// in the legend and drawn as a path, large and failed rows left out.
    #[test]
    fn renders_every_series_into_an_svg_file() {
        let mut cases = vec![
            case(Transport::Lapce, Mode::Spin, 64, 300),
            case(Transport::Lapce, Mode::Adaptive, 64, 500),
            case(Transport::Baseline, Mode::Blocking, 64, 9_000),
            case(Transport::NodeJson, Mode::EventLoop, 64, 30_000),
            case(Transport::Lapce, Mode::Spin, 1024, 400),
            case(Transport::Baseline, Mode::Blocking, 1024, 10_000),
        ];
        // Left out: a large-message row and a failed one.
        let mut large = case(Transport::LapceFramed, Mode::Spin, 1 << 20, 1000);
        large.large = true;
        large.rtt = None;
        let mut failed = case(Transport::Rpc, Mode::Adaptive, 64, 1000);
        failed.rtt = Some(Err("timed out".into()));
        cases.extend([large, failed]);

        let dir = std::env::temp_dir().join(format!("lapce-ipc-plot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plot.svg");
        write(&path, &cases, "test plot").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        assert!(svg.trim_start().starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("<text"), "text is drawn as SVG text");
        let texts = texts(&svg);
        for name in ["lapce-ipc spin", "lapce-ipc adaptive", "uds blocking", "node-ipc-json event-loop"] {
            let name = if cfg!(windows) { name.replace("uds", "pipe") } else { name.to_string() };
            assert_eq!(
                texts.iter().filter(|t| **t == name).count(),
                1,
                "{name} once in the legend: {texts:?}"
            );
        }
        assert!(!svg.contains("lapce-ipc-rpc") && !svg.contains("lapce-ipc-framed"), "left-out rows");
        for label in ["test plot", "p99.99", "p50", "percentile", "round-trip latency, µs (log scale)"] {
            assert!(texts.iter().any(|t| t == label), "{label}: {texts:?}");
        }
        for caption in ["64 B payload", "1 KiB payload"] {
            assert_eq!(texts.iter().filter(|t| t.starts_with(caption)).count(), 1, "{caption}: {texts:?}");
        }
        assert!(!svg.contains("1 MiB"), "no panel for the large row");
        // A curve is a polyline of POINTS + 1 points in its colour; 6 curves over 2 panels.
        let curves = svg
            .split("<polyline")
            .skip(1)
            .filter(|p| {
                p.split("points=\"")
                    .nth(1)
                    .is_some_and(|s| s.split('"').next().unwrap().split(' ').count() > POINTS / 2)
            })
            .count();
        assert_eq!(curves, 6, "one path per series and panel");
        // The spin curve is drawn in the first colour, in both panels.
        let first = format!("stroke=\"#{:02X}{:02X}{:02X}\"", PALETTE[0].0, PALETTE[0].1, PALETTE[0].2);
        assert!(svg.matches(&first).count() >= 3, "{first}: two curves and the legend line");
    }

    #[test]
    fn nothing_to_plot_and_unwritable_paths_are_errors() {
        let mut failed = case(Transport::Lapce, Mode::Spin, 64, 1000);
        failed.rtt = Some(Err("x".into()));
        assert!(render(&[failed], "t").unwrap_err().contains("no round-trip"));

        let cases = [case(Transport::Lapce, Mode::Spin, 64, 1000)];
        let missing = std::env::temp_dir().join("lapce-ipc-no-such-dir-for-plot").join("p.svg");
        let err = write(&missing, &cases, "t").unwrap_err();
        assert!(err.contains(&missing.display().to_string()), "{err}");
        let err = check_path(&missing).unwrap_err();
        assert!(err.contains(&missing.display().to_string()), "{err}");
        assert!(check_path(Path::new("plot.svg")).is_ok(), "the current directory");
    }
}
