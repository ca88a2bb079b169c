//! What the `kiln serve` tests share: the server as a child process, and a small HTTP/1.1 client
//! (so that the raw protocol — status lines, chunked bodies, server-sent events — is what the
//! tests see).
#![allow(dead_code)] // each test binary uses a part

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

pub fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

/// A `kiln serve` child process on loopback (free ports); killed when dropped.
pub struct Server {
    pub child: Child,
    lines: Receiver<String>,
    /// `http://host:port` of the gRPC server.
    pub addr: String,
    /// `host:port` of `/metrics` (empty when off).
    pub metrics: String,
    /// `host:port` of the HTTP API (empty without `--http-listen`).
    pub http: String,
}

impl Server {
    /// Starts `kiln serve -m model` with gRPC and metrics on free ports, then `extra`, and waits
    /// until it serves.
    pub fn start(model: &Path, extra: &[&str]) -> Server {
        let mut s = Server::spawn(model, extra);
        s.wait_ready();
        s
    }

    /// Starts it and returns as soon as the HTTP API is bound (before the model is loaded) if
    /// `extra` has `--http-listen`, else at once.
    pub fn spawn(model: &Path, extra: &[&str]) -> Server {
        let mut args = vec!["--listen", "127.0.0.1:0", "-t", "2"];
        if !extra.contains(&"--metrics-listen") {
            args.extend(["--metrics-listen", "127.0.0.1:0"]);
        }
        let mut child = kiln()
            .args(["serve", "-m"])
            .arg(model)
            .args(args)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kiln serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Server { child, lines, addr: String::new(), metrics: String::new(), http: String::new() };
        if extra.contains(&"--http-listen") {
            s.read_until("kiln serve: http listening on ");
        }
        s
    }

    /// Reads stdout until the line that says the server is ready (its limits).
    pub fn wait_ready(&mut self) {
        self.read_until("kiln serve: context ");
    }

    fn read_until(&mut self, prefix: &str) {
        let until = Instant::now() + Duration::from_secs(300);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let status = self.child.try_wait();
                    let _ = self.child.kill();
                    panic!("kiln serve did not print {prefix:?} (exit: {status:?})");
                }
            };
            if let Some(a) = line.strip_prefix("kiln serve: grpc listening on ") {
                self.addr = format!("http://{a}");
            }
            if let Some(m) = line.strip_prefix("kiln serve: metrics on http://") {
                self.metrics = m.trim_end_matches("/metrics").to_string();
            }
            if let Some(h) = line.strip_prefix("kiln serve: http listening on ") {
                self.http = h.to_string();
            }
            if line.starts_with(prefix) {
                return;
            }
        }
    }

    /// `GET /metrics`, as text.
    pub fn metrics(&self) -> String {
        let r = http(&self.metrics, "GET", "/metrics", None);
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
    }

    /// The value of a metric line `name value` (labels included in `name`).
    pub fn metric(&self, name: &str) -> f64 {
        metric(&self.metrics(), name).unwrap_or_else(|| panic!("no metric {name} in:\n{}", self.metrics()))
    }

    pub fn sigterm(&self) {
        let ok = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the line `name value` in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' '))).map(|v| v.trim().parse().unwrap())
}

/// An HTTP response: status, headers (names lower-cased) and the body (de-chunked).
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 (panics if it is not).
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("the body is UTF-8")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The `data:` payloads of a server-sent-events body, in order (comment-only events, the
    /// keep-alives, are skipped).
    pub fn events(&self) -> Vec<String> {
        assert!(self.header("content-type").is_some_and(|c| c.starts_with("text/event-stream")), "{self:?}");
        self.text()
            .split("\n\n")
            .filter(|e| e.lines().any(|l| !l.is_empty() && !l.starts_with(':')))
            .map(|e| {
                let data: Vec<&str> = e.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                assert_eq!(data.len(), 1, "one data line per event: {e:?}");
                data[0].to_string()
            })
            .collect()
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn http(addr: &str, method: &str, path: &str, body: Option<&[u8]>) -> HttpResponse {
    http_with(addr, method, path, &[], body)
}

/// [`http`] with extra headers.
pub fn http_with(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> HttpResponse {
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(600))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    if let Some(b) = body {
        // The server may answer (413) and close before reading it all.
        let _ = s.write_all(b);
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

/// `POST path` with a JSON body.
pub fn post(addr: &str, path: &str, body: &serde_json::Value) -> HttpResponse {
    http(addr, "POST", path, Some(body.to_string().as_bytes()))
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| {
        panic!("no end of headers in {:?}", String::from_utf8_lossy(raw));
    });
    let head = std::str::from_utf8(&raw[..end]).expect("ASCII headers");
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let mut rest = &raw[end + 4..];
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16).unwrap();
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            body.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body
    } else {
        rest.to_vec()
    };
    HttpResponse { status, headers, body }
}
