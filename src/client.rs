//! CLI commands that talk to a running server's API (`tracelight query`).

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// Sends SQL to `POST /api/v1/query` and prints a table (or the JSON with `json`).
pub async fn query(
    server: &str,
    sql: &str,
    start: Option<String>,
    end: Option<String>,
    token: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let url = format!("{}/api/v1/query", server.trim_end_matches('/'));
    let mut body = serde_json::json!({ "sql": sql });
    if let Some(s) = start {
        body["start"] = Value::String(s);
    }
    if let Some(e) = end {
        body["end"] = Value::String(e);
    }
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
    let mut req = client.post(&url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req
        .send()
        .await
        .with_context(|| format!("cannot reach tracelight at {server} (is `tracelight serve` running?)"))?;
    let status = res.status();
    let text = res.text().await?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("unexpected answer from {url}: {status} {text}"))?;
    if !status.is_success() {
        bail!("{}", v["error"].as_str().unwrap_or(&text));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let columns: Vec<String> =
        v["columns"].as_array().into_iter().flatten().map(|c| c.as_str().unwrap_or("").to_string()).collect();
    let rows: Vec<Vec<String>> = v["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r.as_array().into_iter().flatten().map(cell).collect())
        .collect();
    print!("{}", render_table(&columns, &rows));
    let stats = &v["stats"];
    eprintln!(
        "{} row{}{} in {:.1} ms ({} partitions, {} segments, {} head rows)",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        if v["truncated"].as_bool() == Some(true) { " (truncated: add a LIMIT or narrow the query)" } else { "" },
        stats["elapsed_ms"].as_f64().unwrap_or(0.0),
        stats["partitions"],
        stats["segments"],
        stats["head_rows"],
    );
    Ok(())
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A plain-text table with a header rule; wide cells are cut at 80 characters.
pub fn render_table(columns: &[String], rows: &[Vec<String>]) -> String {
    let clip = |s: &str| -> String {
        let one_line = s.replace(['\n', '\r', '\t'], " ");
        if one_line.chars().count() > 80 {
            format!("{}…", one_line.chars().take(79).collect::<String>())
        } else {
            one_line
        }
    };
    let columns: Vec<String> = columns.iter().map(|c| clip(c)).collect();
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| clip(c)).collect()).collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join(" | ")
            .trim_end()
            .to_string()
            + "\n"
    };
    let mut out = line(&columns);
    out += &(widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-+-") + "\n");
    for r in &rows {
        out += &line(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_clip() {
        let t = render_table(
            &["service_name".into(), "count(*)".into()],
            &[vec!["checkout".into(), "12".into()], vec!["a\nb".into(), "3".into()]],
        );
        assert_eq!(t, "service_name | count(*)\n-------------+---------\ncheckout     | 12\na b          | 3\n");
    }
}
