//! The results of a run: a table per scenario and the headline ratios with
//! their targets; printed to the terminal and written to BENCHMARKS.md.

use std::fmt::Write as _;

/// One scenario's table.
pub struct Section {
    pub title: String,
    /// What was measured and how, one paragraph.
    pub note: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Section {
    pub fn new(title: &str, note: &str, header: &[&str]) -> Self {
        Section {
            title: title.into(),
            note: note.into(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

/// A headline figure with its target, if the project set one.
pub struct Headline {
    pub figure: String,
    pub value: String,
    pub target: String,
    /// `None` when there is no target or it was not measured.
    pub met: Option<bool>,
}

#[derive(Default)]
pub struct Report {
    pub sections: Vec<Section>,
    pub headlines: Vec<Headline>,
    /// Scenarios that could not run, with the reason.
    pub failures: Vec<(String, String)>,
}

impl Report {
    pub fn headline(&mut self, figure: &str, value: String, target: &str, met: Option<bool>) {
        self.headlines.push(Headline {
            figure: figure.into(),
            value,
            target: target.into(),
            met,
        });
    }
}

fn table(out: &mut String, header: &[String], rows: &[Vec<String>]) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
    for r in rows {
        let _ = writeln!(out, "| {} |", r.join(" | "));
    }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "–",
    }
}

/// The whole report as Markdown; `context` lists command, machine, date, commit.
pub fn markdown(report: &Report, context: &[(String, String)], preamble: &str) -> String {
    let mut out = String::new();
    out.push_str("# Benchmarks\n\n");
    out.push_str("<!-- Written by `scripts/bench`; edit benches/switchyard/ instead. -->\n\n");
    for (k, v) in context {
        let _ = writeln!(out, "* {k}: {v}");
    }
    out.push('\n');
    out.push_str(preamble);
    out.push_str("\n## Headline figures\n\n");
    let rows: Vec<Vec<String>> = report
        .headlines
        .iter()
        .map(|h| {
            vec![
                h.figure.clone(),
                h.value.clone(),
                h.target.clone(),
                verdict(h.met).into(),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "figure".into(),
            "measured".into(),
            "target".into(),
            "".into(),
        ],
        &rows,
    );
    for s in &report.sections {
        let _ = write!(out, "\n## {}\n\n{}\n\n", s.title, s.note);
        table(&mut out, &s.header, &s.rows);
    }
    if !report.failures.is_empty() {
        out.push_str("\n## Scenarios that did not run\n\n");
        for (name, why) in &report.failures {
            let _ = writeln!(out, "* {name}: {why}");
        }
    }
    out
}

/// The report as plain text tables for the terminal.
pub fn print(report: &Report) {
    let width = |rows: &[Vec<String>], header: &[String], i: usize| {
        rows.iter()
            .filter_map(|r| r.get(i))
            .chain(header.get(i))
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(0)
    };
    let show = |title: &str, header: &[String], rows: &[Vec<String>]| {
        println!("\n== {title}");
        let widths: Vec<usize> = (0..header.len()).map(|i| width(rows, header, i)).collect();
        for r in std::iter::once(header).chain(rows.iter().map(|r| r.as_slice())) {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            println!("  {}", cells.join("  "));
        }
    };
    for s in &report.sections {
        show(&s.title, &s.header, &s.rows);
    }
    let rows: Vec<Vec<String>> = report
        .headlines
        .iter()
        .map(|h| {
            vec![
                h.figure.clone(),
                h.value.clone(),
                h.target.clone(),
                verdict(h.met).replace("**", ""),
            ]
        })
        .collect();
    show(
        "Headline figures",
        &[
            "figure".into(),
            "measured".into(),
            "target".into(),
            "".into(),
        ],
        &rows,
    );
    for (name, why) in &report.failures {
        println!("\n!! {name} did not run: {why}");
    }
}
