//! A tiny HTTP/1.1 client over raw TCP for the mock's tests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const MODEL: &str = "gemini-embedding-001";

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

pub fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    req.into_bytes()
}

pub fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if let Some((_, len)) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        body.truncate(len.parse().unwrap());
    }
    Reply {
        status,
        headers,
        body,
    }
}

/// One request on a fresh connection; waits at most 20 s.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(&request_bytes(method, path, headers, body))
            .await
            .unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        parse_reply(&raw)
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("request timed out")
}

pub fn gemini_path() -> String {
    format!("/v1beta/models/{MODEL}:batchEmbedContents")
}

pub fn gemini_body(texts: &[&str], dim: Option<usize>) -> String {
    let requests: Vec<Value> = texts
        .iter()
        .map(|t| {
            let mut r = json!({
                "model": format!("models/{MODEL}"),
                "content": { "parts": [{ "text": t }] },
                "taskType": "SEMANTIC_SIMILARITY",
            });
            if let Some(d) = dim {
                r["outputDimensionality"] = json!(d);
            }
            r
        })
        .collect();
    json!({ "requests": requests }).to_string()
}

pub async fn gemini(addr: SocketAddr, texts: &[&str], dim: Option<usize>) -> Reply {
    http(addr, "POST", &gemini_path(), &[], &gemini_body(texts, dim)).await
}

pub async fn gemini_with_key(
    addr: SocketAddr,
    key: &str,
    texts: &[&str],
    dim: Option<usize>,
) -> Reply {
    http(
        addr,
        "POST",
        &gemini_path(),
        &[("x-goog-api-key", key)],
        &gemini_body(texts, dim),
    )
    .await
}

/// The vectors of a successful Gemini reply.
pub fn vectors(reply: &Reply) -> Vec<Vec<f32>> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["embeddings"]
        .as_array()
        .expect("embeddings array")
        .iter()
        .map(|e| {
            e["values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

pub fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// The `details` entry of a Google error with the given `@type` suffix.
pub fn detail<'a>(err: &'a Value, type_suffix: &str) -> &'a Value {
    err["error"]["details"]
        .as_array()
        .expect("details")
        .iter()
        .find(|d| d["@type"].as_str().unwrap_or("").ends_with(type_suffix))
        .unwrap_or_else(|| panic!("no {type_suffix} in {err}"))
}

/// Parses a Google duration such as "15.97s".
pub fn parse_delay(s: &str) -> f64 {
    s.strip_suffix('s')
        .unwrap_or_else(|| panic!("bad delay {s}"))
        .parse()
        .unwrap()
}
