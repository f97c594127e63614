//! End-to-end tests of form and multipart bodies, against a loopback
//! server that records every request whole.

mod support;

use support::recorder::RecordingServer;

#[test]
fn form_bodies_are_url_encoded() {
    let server = RecordingServer::ok();
    let addr = server.addr;
    let scenario = format!(
        r#"
name: form
targets:
  web: {{ url: "http://{addr}" }}
load: {{ users: 1, iterations: 2 }}
requests:
  - name: search
    http:
      target: web
      method: POST
      path: /search
      form: {{ q: "a b&c=ü", "page no": "{{{{ seq() }}}}" }}
"#
    );
    let r = support::run_scenario(&scenario, &[], &["--quiet"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(
            s.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            String::from_utf8_lossy(&s.body),
            format!("q=a%20b%26c%3D%C3%BC&page%20no={}", i + 1)
        );
    }
}

/// The parts of a multipart body: (head, content) each.
fn parts(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let delim = format!("--{boundary}");
    let text = body;
    let mut out = Vec::new();
    let mut rest = text;
    assert!(
        rest.starts_with(delim.as_bytes()),
        "body starts with the boundary"
    );
    loop {
        rest = &rest[delim.len()..];
        if rest.starts_with(b"--\r\n") {
            assert_eq!(rest.len(), 4, "nothing after the closing boundary");
            return out;
        }
        assert!(rest.starts_with(b"\r\n"));
        rest = &rest[2..];
        let end = rest
            .windows(delim.len() + 2)
            .position(|w| w == format!("\r\n{delim}").as_bytes())
            .expect("a part ends with CRLF and the boundary");
        let part = &rest[..end];
        let split = part.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        out.push((
            String::from_utf8(part[..split].to_vec()).unwrap(),
            part[split + 4..].to_vec(),
        ));
        rest = &rest[end + 2..];
    }
}

#[test]
fn multipart_bodies_carry_fields_and_files_byte_for_byte() {
    let server = RecordingServer::ok();
    let addr = server.addr;
    let files = tempfile::tempdir().unwrap();
    let binary: Vec<u8> = (0..=255u8).chain([b'\r', b'\n', b'-', b'-']).collect();
    let bin_path = files.path().join("blob.bin");
    std::fs::write(&bin_path, &binary).unwrap();
    let scenario = format!(
        r#"
name: upload
targets:
  web: {{ url: "http://{addr}", http2: false }}
load: {{ users: 1, iterations: 2 }}
requests:
  - name: upload
    http:
      target: web
      method: POST
      path: /upload
      multipart:
        fields: {{ title: "report {{{{ seq() }}}}", kind: plain }}
        files:
          blob: {{ file: "{bin}", content_type: application/octet-stream }}
          notes: {{ file: notes.txt, content_type: "text/plain; charset=utf-8", filename: 'a"b.txt' }}
"#,
        bin = bin_path.display()
    );
    let r = support::run_scenario(
        &scenario,
        &[("notes.txt", "line one\nline two\n")],
        &["--quiet"],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    for (i, s) in seen.iter().enumerate() {
        let ct = s.header("content-type").unwrap();
        let boundary = ct
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap_or_else(|| panic!("content-type `{ct}`"));
        let p = parts(&s.body, boundary);
        assert_eq!(p.len(), 4, "{p:?}");
        assert_eq!(p[0].0, r#"content-disposition: form-data; name="title""#);
        assert_eq!(p[0].1, format!("report {}", i + 1).as_bytes());
        assert_eq!(p[1].0, r#"content-disposition: form-data; name="kind""#);
        assert_eq!(p[1].1, b"plain");
        assert_eq!(
            p[2].0,
            "content-disposition: form-data; name=\"blob\"; filename=\"blob.bin\"\r\ncontent-type: application/octet-stream"
        );
        assert_eq!(p[2].1, binary);
        assert_eq!(
            p[3].0,
            "content-disposition: form-data; name=\"notes\"; filename=\"a%22b.txt\"\r\ncontent-type: text/plain; charset=utf-8"
        );
        assert_eq!(p[3].1, b"line one\nline two\n");
    }
}
