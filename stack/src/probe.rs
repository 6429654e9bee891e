//! Readiness probes: a TCP connect, or an HTTP `GET` that must answer 2xx. Plain `std` sockets
//! with short timeouts (one HTTP/1.0 request, read to the end): the supervisor probes every 100 ms
//! from a synchronous loop and needs no HTTP client or runtime for that.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::plan::Probe;

const TIMEOUT: Duration = Duration::from_millis(1000);

/// True if something accepts connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(200)).is_ok()
}

/// `GET path` on 127.0.0.1:`port`: the status code and the body, or `None` if nothing answered.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), TIMEOUT).ok()?;
    s.set_read_timeout(Some(TIMEOUT)).ok()?;
    s.set_write_timeout(Some(TIMEOUT)).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Some((status, body))
}

/// Whether `probe` passes for a process on `port`.
pub fn passes(probe: &Probe, port: u16) -> bool {
    match probe {
        Probe::Tcp => port_open(port),
        Probe::Http(path) => http_get(port, path).is_some_and(|(status, _)| (200..300).contains(&status)),
    }
}

/// What a process says it is waiting for: the `message` of its JSON error answer on `probe`'s
/// path (the matcher's "rebuilding the book from the orders log: N commands to go").
pub fn waiting_for(probe: &Probe, port: u16) -> Option<String> {
    let Probe::Http(path) = probe else { return None };
    let (_, body) = http_get(port, path)?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["error"]["message"].as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn an_http_answer_is_read_and_a_closed_port_is_not_ready() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for (i, conn) in listener.incoming().take(2).enumerate() {
                let mut conn = conn.unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 512];
                while !request.ends_with(b"\r\n\r\n") {
                    let n = conn.read(&mut buf).unwrap();
                    assert!(n > 0, "the request ends with an empty line");
                    request.extend_from_slice(&buf[..n]);
                }
                let answer = if i == 0 {
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\r\n{\"error\":{\"code\":\"catching_up\",\"message\":\"3 to go\"}}"
                } else {
                    "HTTP/1.1 200 OK\r\n\r\n{}"
                };
                conn.write_all(answer.as_bytes()).unwrap();
            }
        });
        assert_eq!(waiting_for(&Probe::Http("/readyz".into()), port).as_deref(), Some("3 to go"));
        assert!(passes(&Probe::Http("/readyz".into()), port));
        server.join().unwrap();
        assert!(!passes(&Probe::Tcp, port), "nothing listens any more");
    }
}
