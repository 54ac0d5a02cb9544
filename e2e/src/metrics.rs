//! Scraping a process's Prometheus `/metrics` endpoint (plain HTTP on loopback).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// `GET http://<addr>/metrics` and returns the body.
pub fn scrape(addr: &str) -> Result<String> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response).with_context(|| format!("reading {addr}/metrics"))?;
    let (head, body) = response.split_once("\r\n\r\n").context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("{addr}/metrics: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

/// Sum of every sample of `name` (all label sets) in a text exposition.
pub fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_label_set() {
        let text =
            "# TYPE w counter\nw_total{kind=\"a\"} 2\nw_total{kind=\"b\"} 3\nw_total_other 9\nw_total 1\n";
        assert_eq!(sum(text, "w_total"), 6.0);
    }
}
