//! A keep-alive HTTP/1.1 server on plain threads that keeps every request
//! as it read it (head and body) and answers with what the test's
//! function makes of it: for tests that look at the bytes redproof sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

/// A request as the server read it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The request line and header lines, each with its CRLF.
    pub head: String,
    pub body: Vec<u8>,
}

impl Seen {
    /// The first value of header `name`, trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The request target, as the request line has it.
    pub fn path(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("/")
    }
}

pub struct RecordingServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl RecordingServer {
    /// Answers each request with the whole response `answer` gives for
    /// it (status line, headers and body); `answer` also gets the
    /// server's own address.
    pub fn start(answer: impl Fn(&Seen, SocketAddr) -> String + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, answer) = (seen.clone(), Arc::new(answer));
        std::thread::spawn(move || {
            for sock in listener.incoming() {
                let Ok(sock) = sock else { return };
                let (s, answer) = (s.clone(), answer.clone());
                std::thread::spawn(move || {
                    let _ = serve(sock, addr, &s, &*answer);
                });
            }
        });
        Self { addr, seen }
    }

    /// Answers every request `200 OK` with `ok`.
    pub fn ok() -> Self {
        Self::start(|_, _| respond(200, "", "ok"))
    }

    /// Everything read so far, in order of arrival.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The heads read so far.
    pub fn heads(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.head).collect()
    }
}

/// A response with `status`, the header lines `headers` (each ending in
/// CRLF) and `body`.
pub fn respond(status: u16, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} X\r\n{headers}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads requests from one connection until it closes.
fn serve(
    sock: std::net::TcpStream,
    addr: SocketAddr,
    seen: &Mutex<Vec<Seen>>,
    answer: &(dyn Fn(&Seen, SocketAddr) -> String + Send + Sync),
) -> std::io::Result<()> {
    let mut r = BufReader::new(sock.try_clone()?);
    let mut w = sock;
    loop {
        let mut head = String::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            head.push_str(&line);
        }
        let mut body = vec![0; length];
        r.read_exact(&mut body)?;
        let req = Seen { head, body };
        let response = answer(&req, addr);
        seen.lock().unwrap().push(req);
        w.write_all(response.as_bytes())?;
    }
}
