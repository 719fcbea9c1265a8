//! `turnpike status`: prints every Gateway's and route's conditions from a running
//! `turnpike run` (its control-plane admin `/status`).

use std::fmt::Write as _;
use std::net::SocketAddr;

use serde_json::Value;

/// Why `/status` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed HTTP response")]
    Malformed,
    #[error("{0}")]
    Status(String),
}

/// GETs `path` from a local admin endpoint (HTTP/1.1, no TLS: admin ports are local) and
/// returns the body of a 200 answer.
pub async fn fetch(addr: SocketAddr, path: &str) -> Result<String, FetchError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await?;
    let mut text = String::new();
    s.read_to_string(&mut text).await?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or(FetchError::Malformed)?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(FetchError::Status(head.lines().next().unwrap_or("").into()));
    }
    Ok(body.to_string())
}

/// Renders the `/status` JSON of the control plane for a person.
pub fn format_report(report: &Value) -> String {
    let mut o = String::new();
    let source = report["source"].as_str().unwrap_or("");
    let _ = writeln!(o, "source: {source}");
    if let Some(errors) = report["errors"].as_array().filter(|e| !e.is_empty()) {
        let _ = writeln!(
            o,
            "\nthe last edit was refused (the previous state keeps serving):"
        );
        for e in errors {
            let _ = writeln!(o, "  ! {}", e.as_str().unwrap_or(""));
        }
    }
    let conds = |v: &Value| -> String {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let ok = c["status"] == "True";
                let mark = if (c["type"] == "Conflicted") != ok {
                    "✓"
                } else {
                    "✗"
                };
                let reason = c["reason"].as_str().unwrap_or("");
                let msg = c["message"].as_str().unwrap_or("");
                format!(
                    "{mark} {}={} ({reason}: {msg})",
                    c["type"].as_str().unwrap_or(""),
                    c["status"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n      ")
    };
    for (kind, field) in [
        ("GatewayClass", "gatewayClasses"),
        ("GatewayConfig", "gatewayConfigs"),
    ] {
        for (name, st) in report[field].as_object().into_iter().flatten() {
            let _ = writeln!(o, "\n{kind} {name}\n      {}", conds(&st["conditions"]));
        }
    }
    for (name, st) in report["gateways"].as_object().into_iter().flatten() {
        let addr = st["addresses"][0]["value"]
            .as_str()
            .unwrap_or("(no address)");
        let _ = writeln!(
            o,
            "\nGateway {name} at {addr}\n      {}",
            conds(&st["conditions"])
        );
        if let Some(dp) = report["dataplanes"].get(name) {
            let _ = writeln!(
                o,
                "    dataplane: config generation {} published, admin {}",
                dp["publishedGeneration"],
                dp["admin"].as_str().unwrap_or("")
            );
        }
        for l in st["listeners"].as_array().into_iter().flatten() {
            let _ = writeln!(
                o,
                "    listener {} (attached routes: {})\n      {}",
                l["name"].as_str().unwrap_or(""),
                l["attachedRoutes"],
                conds(&l["conditions"])
            );
        }
    }
    for (name, st) in report["udpRoutes"].as_object().into_iter().flatten() {
        for p in st["parents"].as_array().into_iter().flatten() {
            let parent = p["parentRef"]["name"].as_str().unwrap_or("");
            let section = p["parentRef"]["sectionName"]
                .as_str()
                .map(|s| format!("/{s}"))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "\nUDPRoute {name} → Gateway {parent}{section}\n      {}",
                conds(&p["conditions"])
            );
        }
    }
    o
}
