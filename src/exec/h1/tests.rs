use super::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// A server that reads one request per entry of `replies` and answers
/// each with its raw bytes, written in pieces of `piece` bytes so that
/// parsing meets every boundary; then it closes the connection.
async fn serve(replies: Vec<Vec<u8>>, piece: usize) -> H1Conn {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        for reply in replies {
            let mut req = Vec::new();
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut b = [0u8; 1024];
                let n = s.read(&mut b).await.unwrap();
                if n == 0 {
                    return;
                }
                req.extend_from_slice(&b[..n]);
            }
            for part in reply.chunks(piece) {
                s.write_all(part).await.unwrap();
                s.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
        }
    });
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    H1Conn::new(Box::new(s))
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";

#[tokio::test]
async fn kept_bodies_over_the_cap_are_errors_in_every_framing() {
    let body = vec![b'x'; 5000];
    let mut chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for part in body.chunks(1000) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut sized = b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n".to_vec();
    sized.extend_from_slice(&body);
    let mut closed = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_vec();
    closed.extend_from_slice(&body);
    for reply in [chunked, sized, closed] {
        let mut c = serve(vec![reply.clone()], 512).await;
        c.set_max_body(4096);
        let e = exchange(&mut c, false).await.unwrap_err();
        assert_eq!(e.kind, TransportError::Body, "{}", e.message);
        assert!(e.message.contains("4096 byte limit"), "{}", e.message);
        assert!(!c.is_usable());
        // Under the cap, the same reply reads whole.
        let mut c = serve(vec![reply], 512).await;
        c.set_max_body(5000);
        assert_eq!(exchange(&mut c, false).await.unwrap().1.len(), 5000);
    }
}

async fn exchange(c: &mut H1Conn, head: bool) -> Result<(u16, Vec<u8>), H1Error> {
    let h = c.send(GET, head, false, false).await?;
    let mut body = Vec::new();
    c.read_body(h.framing, Some(&mut body)).await?;
    Ok((h.status, body))
}

#[tokio::test]
async fn frames_every_kind_of_body_and_keeps_the_connection() {
    let replies = vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".to_vec(),
        b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nx-trailer: t\r\n\r\n".to_vec(),
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n".to_vec(),
        b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n".to_vec(),
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
    ];
    for piece in [1, 7, 4096] {
        let mut c = serve(replies.clone(), piece).await;
        assert_eq!(
            exchange(&mut c, false).await.unwrap(),
            (200, b"hello".to_vec())
        );
        assert!(c.is_usable());
        assert_eq!(
            exchange(&mut c, false).await.unwrap(),
            (201, b"abc0123456789".to_vec())
        );
        assert_eq!(exchange(&mut c, false).await.unwrap(), (204, vec![]));
        assert_eq!(exchange(&mut c, false).await.unwrap(), (304, vec![]));
        // A HEAD response announces a length but has no body.
        assert_eq!(exchange(&mut c, true).await.unwrap(), (200, vec![]));
        assert_eq!(exchange(&mut c, false).await.unwrap(), (404, vec![]));
        assert!(c.reusable, "piece {piece}");
    }
}

#[tokio::test]
async fn a_body_without_length_runs_to_the_close() {
    let mut c = serve(
        vec![b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end".to_vec()],
        3,
    )
    .await;
    assert_eq!(
        exchange(&mut c, false).await.unwrap(),
        (200, b"until the end".to_vec())
    );
    assert!(!c.is_usable());
}

#[tokio::test]
async fn http10_closes_unless_kept_alive() {
    let mut c = serve(
        vec![b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()],
        64,
    )
    .await;
    assert_eq!(
        exchange(&mut c, false).await.unwrap(),
        (200, b"ok".to_vec())
    );
    assert!(!c.is_usable());
    let mut c = serve(
        vec![b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok".to_vec()],
        64,
    )
    .await;
    exchange(&mut c, false).await.unwrap();
    assert!(c.reusable);
}

#[tokio::test]
async fn headers_are_kept_when_asked_for() {
    let mut c = serve(
        vec![b"HTTP/1.1 200 OK\r\nX-One: 1\r\nx-one: 2\r\ncontent-length: 0\r\n\r\n".to_vec()],
        64,
    )
    .await;
    let h = c.send(GET, false, true, false).await.unwrap();
    let all: Vec<_> = h.headers.get_all("x-one").iter().collect();
    assert_eq!(all, ["1", "2"]);
}

#[tokio::test]
async fn truncated_and_invalid_responses_are_errors() {
    let cases: [(&[u8], TransportError); 6] = [
        (b"", TransportError::NoResponse),
        (b"HTTP/1.1 100 Continue\r\n\r\n", TransportError::Reset),
        (b"HTTP/1.1 200 OK\r\ncontent-le", TransportError::Reset),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
            TransportError::Reset,
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            TransportError::Body,
        ),
        (b"SMTP ready\r\n\r\n", TransportError::Other),
    ];
    for (reply, kind) in cases {
        let mut c = serve(vec![reply.to_vec()], 4).await;
        let err = exchange(&mut c, false).await.unwrap_err();
        assert_eq!(
            err.kind,
            kind,
            "{}: {}",
            String::from_utf8_lossy(reply),
            err.message
        );
        assert!(!err.unsent);
        // A first request on a new connection: not a stale one.
        assert!(!err.stale);
        assert!(!c.is_usable());
    }
}

#[tokio::test]
async fn a_kept_connection_closed_without_an_answer_is_stale() {
    // The server answers once, reads the second request and closes
    // without a byte, as one does that closes idle connections
    // without saying so.
    let mut c = serve(
        vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
            Vec::new(),
        ],
        64,
    )
    .await;
    exchange(&mut c, false).await.unwrap();
    let err = exchange(&mut c, false).await.unwrap_err();
    assert_eq!(err.kind, TransportError::NoResponse, "{}", err.message);
    assert!(err.stale && !err.unsent);
    assert!(!c.is_usable());
}

#[tokio::test]
async fn an_exchange_cut_off_leaves_the_connection_unusable() {
    let mut c = serve(
        vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()],
        64,
    )
    .await;
    // The head is read; the body never is.
    c.send(GET, false, false, false).await.unwrap();
    assert!(!c.is_usable());
}

#[tokio::test]
async fn a_connection_closed_while_idle_is_not_usable() {
    let mut c = serve(
        vec![b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec()],
        64,
    )
    .await;
    exchange(&mut c, false).await.unwrap();
    // The server closes after its one reply; the close reaches the
    // connection's readiness when the runtime next polls its driver,
    // which a yield lets it do.
    let mut turns = 0;
    while c.is_usable() {
        turns += 1;
        assert!(turns < 10_000, "the close was never seen");
        tokio::task::yield_now().await;
    }
}

#[test]
fn framing_follows_the_rules() {
    let frame = |raw: &[u8], head: bool| {
        let mut h = [httparse::EMPTY_HEADER; 16];
        let mut r = httparse::Response::new(&mut h);
        r.parse(raw).unwrap();
        read_head(&r, head, false, false).map(|p| (p.framing, p.keep_alive))
    };
    assert_eq!(
        frame(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 4\r\n\r\n",
            false
        ),
        Ok((Framing::Chunked, false))
    );
    assert_eq!(
        frame(b"HTTP/1.1 200 OK\r\ncontent-length: 4, 4\r\n\r\n", false),
        Ok((Framing::Length(4), true))
    );
    assert!(frame(b"HTTP/1.1 200 OK\r\ncontent-length: +4\r\n\r\n", false).is_err());
    assert_eq!(
        frame(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", false),
        Ok((Framing::Close, false))
    );
    assert_eq!(
        frame(
            b"HTTP/1.1 200 OK\r\nconnection: Keep-Alive, Close\r\ncontent-length: 1\r\n\r\n",
            false
        ),
        Ok((Framing::Length(1), false))
    );
    assert!(
        frame(
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            false
        )
        .is_err()
    );
    assert!(frame(b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", false).is_err());
}
