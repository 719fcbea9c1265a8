//! A minimal HTTP client for admin endpoints and the auth service, and `/metrics` reading.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Minimal HTTP/1.1 GET on loopback: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_with(port, path, &[]).map(|(status, _, body)| (status, body))
}

/// GET with extra request headers: (status, response head, body).
pub fn http_get_with(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String, String)> {
    http_get_at(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        path,
        headers,
    )
}

/// GET from any address (a pod's, a Service's): (status, response head, body).
pub fn http_get_at(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((status, head.to_string(), body.to_string()))
}

/// A Prometheus sample value from `/metrics` text (`name{labels}` exactly as rendered).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    if series.contains('{') {
        return text
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok());
    }
    // A bare name: the sum over its label sets (a total, as PromQL's sum() gives).
    let values: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.strip_prefix(series)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
