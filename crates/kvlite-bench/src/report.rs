//! The Markdown report of `kvlite bench --out report.md`: the table and an
//! SVG chart of kvlite's time relative to the better plain-SQLite mode.

use std::path::Path;

use plotters::prelude::*;

use crate::BenchError;
use crate::sqlite::{Measurement, SystemId, Workload};
use crate::stats::ms;

const COLORS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
];

/// Draw the ratio chart (log scale: 1 = as fast as plain SQLite).
pub fn chart(rows: &[Measurement], path: &Path) -> Result<(), BenchError> {
    let workloads: Vec<Workload> = {
        let mut w: Vec<Workload> = rows.iter().map(|m| m.workload).collect();
        w.dedup();
        w
    };
    let systems: Vec<SystemId> = {
        let mut s: Vec<SystemId> = rows
            .iter()
            .map(|m| m.system)
            .filter(|s| !s.is_sqlite())
            .collect();
        s.sort();
        s.dedup();
        s
    };
    let ratio = |w: Workload, s: SystemId| {
        rows.iter()
            .find(|m| m.workload == w && m.system == s)
            .and_then(|m| m.ratio_to_best_sqlite)
    };
    let max = rows
        .iter()
        .filter(|m| !m.system.is_sqlite())
        .filter_map(|m| m.ratio_to_best_sqlite)
        .fold(2.0f64, f64::max)
        * 1.3;
    let min = rows
        .iter()
        .filter(|m| !m.system.is_sqlite())
        .filter_map(|m| m.ratio_to_best_sqlite)
        .fold(0.5f64, f64::min)
        * 0.8;
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let width = 140 + 90 * workloads.len() as u32;
        let root = SVGBackend::new(path, (width, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "kvlite time / best plain SQLite (log scale; 1 = equal)",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(70)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..workloads.len() as f64, (min..max).log_scale())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(workloads.len())
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                workloads
                    .get(i)
                    .map(|w| w.id().to_string())
                    .unwrap_or_default()
            })
            .y_desc("ratio")
            .draw()?;
        let bar = 0.8 / systems.len().max(1) as f64;
        for (si, &system) in systems.iter().enumerate() {
            let color = COLORS.iter().cycle().nth(si).copied().unwrap_or(BLACK);
            let bars = workloads.iter().enumerate().filter_map(|(wi, &w)| {
                let r = ratio(w, system)?;
                let x0 = wi as f64 + 0.1 + bar * si as f64;
                Some(Rectangle::new(
                    [(x0, min), (x0 + bar * 0.9, r)],
                    color.filled(),
                ))
            });
            chart
                .draw_series(bars)?
                .label(system.id())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 1.0), (workloads.len() as f64, 1.0)],
            BLACK.stroke_width(1),
        )))?;
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| BenchError::Other(format!("chart: {e}")))
}

/// Write `report.md` (and `report.svg` beside it).
pub fn write(rows: &[Measurement], path: &Path, notes: &str) -> Result<(), BenchError> {
    let svg = path.with_extension("svg");
    chart(rows, &svg)?;
    let mut md = String::from("# kvlite benchmark\n\n");
    md.push_str(notes);
    md.push_str("\n\n| workload | system | runs | median ms | min ms | max ms | ratio to best SQLite | round trips | store round trips | bytes written |\n");
    md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for m in rows {
        md.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} |\n",
            m.workload.id(),
            m.system.id(),
            m.summary.runs,
            ms(m.summary.median),
            ms(m.summary.min),
            ms(m.summary.max),
            m.ratio_to_best_sqlite
                .map_or("-".into(), |r| format!("{r:.2}x")),
            m.round_trips.map_or("-".into(), |t| t.to_string()),
            m.store_round_trips.map_or("-".into(), |t| t.to_string()),
            m.bytes_written.map_or("-".into(), |b| b.to_string()),
        ));
    }
    let name = svg
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("report.svg");
    md.push_str(&format!("\n![ratios]({name})\n"));
    std::fs::write(path, md)?;
    Ok(())
}
