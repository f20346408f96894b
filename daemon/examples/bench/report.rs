//! Printing: one aligned table per scenario, and goals collected for the final summary.

/// A table printed with aligned columns (the first left-aligned, the others right-aligned).
pub struct Table {
    title: String,
    head: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    pub fn new(title: impl Into<String>, head: &[&str]) -> Table {
        Table {
            title: title.into(),
            head: head.iter().map(|s| (*s).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// A row whose run failed: its name and the reason, spread over the remaining columns.
    pub fn failed_row(&mut self, name: &str, why: &str) {
        let first = why.lines().next().unwrap_or_default();
        self.rows.push(vec![name.to_owned(), format!("-- {first}")]);
        if why.lines().count() > 1 {
            self.notes.push(format!("{name}: {why}"));
        }
    }

    /// A line printed under the table.
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    pub fn print(&self) {
        let cols = self.head.len();
        let mut width: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            // A failed row's message spans the columns; it does not widen them.
            if row.len() == cols {
                for (w, c) in width.iter_mut().zip(row) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        println!("\n{}", self.title);
        let line = |cells: &[String]| {
            let mut out = String::from(" ");
            for (i, c) in cells.iter().enumerate() {
                let w = width.get(i).copied().unwrap_or(0);
                if i == 0 {
                    out.push_str(&format!(" {c:<w$}"));
                } else if cells.len() == cols {
                    out.push_str(&format!("  {c:>w$}"));
                } else {
                    out.push_str(&format!("  {c}"));
                }
            }
            println!("{}", out.trim_end());
        };
        line(&self.head);
        let total: usize = width.iter().sum::<usize>() + 2 * cols;
        println!("  {}", "-".repeat(total.saturating_sub(2)));
        for row in &self.rows {
            line(row);
        }
        for n in &self.notes {
            println!("  {n}");
        }
    }
}

/// One line of the final summary: a measured figure beside its goal from issue 7 or 8.
pub struct Goal {
    pub scenario: String,
    pub text: String,
    /// `None` when the figure could not be measured.
    pub met: Option<bool>,
}

impl Goal {
    /// `label a / b = r x (goal <= g x)`.
    pub fn ratio(scenario: &str, label: &str, a: f64, b: f64, max: f64, unit: &str) -> Goal {
        let r = a / b;
        Goal {
            scenario: scenario.to_owned(),
            text: format!(
                "{label} {} / {} = {r:.2}x (goal <= {max}x)",
                fmt_num(a, unit),
                fmt_num(b, unit)
            ),
            met: Some(r.is_finite() && r <= max),
        }
    }

    /// A figure that could not be measured.
    pub fn missing(scenario: &str, label: &str, why: &str) -> Goal {
        Goal {
            scenario: scenario.to_owned(),
            text: format!(
                "{label}: not measured ({})",
                why.lines().next().unwrap_or_default()
            ),
            met: None,
        }
    }

    pub fn plain(scenario: &str, text: String, met: bool) -> Goal {
        Goal {
            scenario: scenario.to_owned(),
            text,
            met: Some(met),
        }
    }
}

fn fmt_num(v: f64, unit: &str) -> String {
    if v.fract() == 0.0 && v.abs() < 1e12 {
        format!("{v:.0}{unit}")
    } else {
        format!("{v:.2}{unit}")
    }
}

/// Prints the goals, one per line, marked `ok`, `MISS` or `n/a`.
pub fn print_summary(goals: &[Goal]) {
    println!("\nSummary against the goals of issues 7 and 8");
    for g in goals {
        let mark = match g.met {
            Some(true) => "ok  ",
            Some(false) => "MISS",
            None => "n/a ",
        };
        println!("  [{mark}] {:<11} {}", g.scenario, g.text);
    }
    let met = goals.iter().filter(|g| g.met == Some(true)).count();
    println!("  {met} of {} goals met", goals.len());
}

/// The `p`-th percentile (0–100, nearest rank) of `values`; NaN when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Seconds with two decimals.
pub fn secs(d: std::time::Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}
