//! `table`: one Markdown table from the RESULT lines of several runs
//! (medians per server, ratio of the first server to the second).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::resume::median;

/// Prints the table for the results in `files`; `servers` fixes the column order.
pub(crate) fn run(files: &[String], servers: Option<&str>) -> Result<(), String> {
    let mut results: Vec<Value> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?;
        for line in text.lines() {
            let json = line.strip_prefix("RESULT ").unwrap_or(line).trim();
            if !json.starts_with('{') {
                continue;
            }
            match serde_json::from_str::<Value>(json) {
                Ok(v) => results.push(v),
                Err(e) => eprintln!("{f}: skipping a line that is not JSON: {e}"),
            }
        }
    }
    if results.is_empty() {
        return Err("no results".into());
    }
    let mut server_order: Vec<String> = servers
        .map(|s| s.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut labels: Vec<String> = Vec::new();
    // (label, figure) → server → values; figure order per label as first seen.
    let mut figure_order: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut values: BTreeMap<(String, String, String), Vec<Option<f64>>> = BTreeMap::new();
    let mut runs: BTreeMap<(String, String), (usize, usize, usize)> = BTreeMap::new();
    for r in &results {
        let label = r["label"].as_str().unwrap_or("?").to_owned();
        let server = r["server"].as_str().unwrap_or("?").to_owned();
        if !labels.contains(&label) {
            labels.push(label.clone());
        }
        if !server_order.contains(&server) {
            server_order.push(server.clone());
        }
        let e = runs.entry((label.clone(), server.clone())).or_default();
        e.0 += 1;
        if r["ok"].as_bool() == Some(true) {
            e.1 += 1;
        }
        if r["noisy"].as_bool() == Some(true) {
            e.2 += 1;
        }
        for f in r["figures"].as_array().into_iter().flatten() {
            let name = current_name(f["name"].as_str().unwrap_or("?"));
            let agg = f["agg"].as_str().unwrap_or("median").to_owned();
            let order = figure_order.entry(label.clone()).or_default();
            if !order.iter().any(|(n, _)| *n == name) {
                order.push((name.clone(), agg));
            }
            values
                .entry((label.clone(), name, server.clone()))
                .or_default()
                .push(f["value"].as_f64());
        }
    }
    let ratio_of = server_order.len() >= 2;
    let mut header = String::from("| scenario | figure |");
    let mut rule = String::from("|---|---|");
    for s in &server_order {
        header.push_str(&format!(" {s} |"));
        rule.push_str("---:|");
    }
    if ratio_of {
        header.push_str(&format!(" {}/{} |", server_order[0], server_order[1]));
        rule.push_str("---:|");
    }
    println!("{header}");
    println!("{rule}");
    for label in &labels {
        // Runs and correct runs.
        let mut row = format!("| **{label}** | runs (correct, noisy) |");
        for s in &server_order {
            match runs.get(&(label.clone(), s.clone())) {
                Some((n, ok, noisy)) => row.push_str(&format!(" {n} ({ok}, {noisy}) |")),
                None => row.push_str(" - |"),
            }
        }
        if ratio_of {
            row.push_str(" |");
        }
        println!("{row}");
        for (name, agg) in figure_order.get(label).into_iter().flatten() {
            let mut row = format!("| | {name} |");
            let mut cells = Vec::new();
            for s in &server_order {
                let v = values
                    .get(&(label.clone(), name.clone(), s.clone()))
                    .map(|vs| aggregate(vs, agg))
                    .unwrap_or(None);
                cells.push(v);
                row.push_str(&format!(" {} |", fmt(v)));
            }
            if ratio_of {
                let ratio = match (cells[0], cells[1]) {
                    (Some(a), Some(b)) if b != 0.0 && agg == "median" => Some(a / b),
                    _ => None,
                };
                row.push_str(&format!(" {} |", ratio.map_or("-".to_owned(), |r| format!("{r:.2}"))));
            }
            println!("{row}");
        }
    }
    Ok(())
}

/// A figure's name as runs write it now: the publish → read latency rows were
/// called "latency p50 ms" etc. before arrival latency was added next to them,
/// and results of older runs still say so.
fn current_name(name: &str) -> String {
    match name.strip_prefix("latency ") {
        Some(rest) => format!("read latency {rest}"),
        None => name.to_owned(),
    }
}

fn aggregate(vs: &[Option<f64>], agg: &str) -> Option<f64> {
    let mut present: Vec<f64> = vs.iter().flatten().copied().collect();
    if present.is_empty() {
        return None;
    }
    match agg {
        "sum" => Some(present.iter().sum()),
        "max" => present.iter().copied().reduce(f64::max),
        _ => median(&mut present),
    }
}

fn fmt(v: Option<f64>) -> String {
    let Some(v) = v.filter(|v| v.is_finite()) else {
        return "-".into();
    };
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else if a == 0.0 {
        "0".into()
    } else {
        format!("{v:.3}")
    }
}
