//! The README's chart: one panel per payload size, one bar per mechanism (median p50 over the
//! runs) with its median p99 as a whisker, on a logarithmic time axis.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::Sample;

const PANEL_W: u32 = 420;
const HEIGHT: u32 = 360;

fn colour(mechanism: &str) -> RGBColor {
    match mechanism {
        "mmf-frames" => RGBColor(0xd9, 0x5f, 0x02),
        "mmf-lock" => RGBColor(0xe6, 0xab, 0x02),
        "shm-raw-sync" => RGBColor(0x1b, 0x9e, 0x77),
        "iceoryx2" => RGBColor(0x75, 0x70, 0xb3),
        "uds" => RGBColor(0x66, 0x66, 0x66),
        _ => RGBColor(0xbb, 0xbb, 0xbb), // the floors
    }
}

fn median_of(runs: &[Vec<Sample>], m: &str, size: usize, pick: fn(&Sample) -> f64) -> f64 {
    let v: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.iter().find(|s| s.mechanism == m && s.size == size))
        .map(pick)
        .collect();
    crate::median(v)
}

pub fn draw(
    path: &Path,
    sizes: &[usize],
    mechanisms: &[String],
    runs: &[Vec<Sample>],
) -> Result<(), Box<dyn std::error::Error>> {
    let width = PANEL_W * sizes.len() as u32;
    let root = SVGBackend::new(path, (width, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(34);
    title.draw(&Text::new(
        "One-way latency between two pinned processes (bar: p50, whisker: p99; log scale; lower is better)",
        (10, 10),
        ("sans-serif", 15).into_font(),
    ))?;
    let panels = body.split_evenly((1, sizes.len()));
    for (panel, &size) in panels.iter().zip(sizes) {
        let p50: Vec<f64> = mechanisms
            .iter()
            .map(|m| median_of(runs, m, size, |s| s.p50_ns))
            .collect();
        let p99: Vec<f64> = mechanisms
            .iter()
            .map(|m| median_of(runs, m, size, |s| s.p99_ns))
            .collect();
        let lo = p50.iter().cloned().fold(f64::INFINITY, f64::min) / 2.0;
        let hi = p99.iter().cloned().fold(0.0, f64::max) * 4.0;
        let n = mechanisms.len();
        let mut chart = ChartBuilder::on(panel)
            .caption(crate::human_size(size), ("sans-serif", 14))
            .margin(8)
            .margin_right(24)
            .x_label_area_size(30)
            .y_label_area_size(90)
            .build_cartesian_2d((lo..hi).log_scale(), (0..n - 1).into_segmented())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc("ns")
            .x_labels(6)
            .x_label_formatter(&|v| crate::human_ns(*v))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => mechanisms.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_labels(n)
            .draw()?;
        chart.draw_series(
            Histogram::horizontal(&chart)
                .baseline(lo)
                .margin(8)
                .style_func(|y, _| match y {
                    SegmentValue::Exact(i) | SegmentValue::CenterOf(i) => {
                        colour(&mechanisms[*i]).filled()
                    }
                    SegmentValue::Last => BLACK.filled(),
                })
                .data(p50.iter().enumerate().map(|(i, &v)| (i, v))),
        )?;
        for i in 0..n {
            // The whisker from p50 to p99, in the middle of the bar.
            chart.draw_series(std::iter::once(PathElement::new(
                vec![
                    (p50[i], SegmentValue::CenterOf(i)),
                    (p99[i], SegmentValue::CenterOf(i)),
                ],
                BLACK.stroke_width(2),
            )))?;
            // The p50 figure just past the whisker's end, centred on the bar.
            let label = ("sans-serif", 11)
                .into_font()
                .into_text_style(panel)
                .pos(Pos::new(HPos::Left, VPos::Center));
            chart.draw_series(std::iter::once(Text::new(
                crate::human_ns(p50[i]),
                (p99[i] * 1.08, SegmentValue::CenterOf(i)),
                label,
            )))?;
        }
    }
    root.present()?;
    Ok(())
}
