//! The outcome vocabulary: what happened to one request (an HTTP status,
//! a gRPC code, a failed check or a transport error). Scenarios name
//! outcomes in `expect:`, executors produce them, recorders count them and
//! verification compares them with the server's labels, so this module
//! depends on nothing else in redproof.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a request produced no HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportError {
    /// Connection refused: nothing listening.
    Refused,
    /// Other connect failures (unreachable, connect timeout).
    Connect,
    /// Name resolution failed.
    Dns,
    /// The target's timeout elapsed.
    Timeout,
    /// The connection was reset or closed mid-request.
    Reset,
    /// The server closed the connection after the request went out and
    /// before sending a byte of the response: it may or may not have
    /// handled the request.
    NoResponse,
    /// TLS handshake or certificate failure.
    Tls,
    /// The response body could not be read to the end.
    Body,
    /// An answer that breaks the protocol, such as an HTTP response to a
    /// gRPC call that is not gRPC (a proxy's error page) or a gRPC call
    /// that ends without a status: the client made up no code for it.
    Protocol,
    /// A reply larger than the client accepts (a gRPC target's
    /// `max_message`).
    TooLarge,
    /// Anything else, with the message kept as an example.
    Other,
}

impl TransportError {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "connection refused",
            Self::Connect => "connect error",
            Self::Dns => "dns error",
            Self::Timeout => "timeout",
            Self::Reset => "connection reset",
            Self::NoResponse => "closed before any response",
            Self::Tls => "tls error",
            Self::Body => "body read error",
            Self::Protocol => "protocol error",
            Self::TooLarge => "reply too large",
            Self::Other => "other error",
        }
    }

    /// Errors that happen before a request reaches the server.
    pub fn is_connect_failure(self) -> bool {
        matches!(self, Self::Refused | Self::Connect | Self::Dns | Self::Tls)
    }
}

/// A gRPC status code, written by its canonical name (`OK`,
/// `DEADLINE_EXCEEDED`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrpcCode(u8);

impl GrpcCode {
    pub const OK: GrpcCode = GrpcCode(0);
    pub const CANCELLED: GrpcCode = GrpcCode(1);
    pub const UNKNOWN: GrpcCode = GrpcCode(2);
    pub const DEADLINE_EXCEEDED: GrpcCode = GrpcCode(4);

    /// The 17 codes, indexed by number.
    pub const NAMES: [&'static str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];

    /// A code by number; numbers outside 0–16 read as `UNKNOWN`, as gRPC
    /// clients do.
    pub fn from_number(n: i32) -> Self {
        if (0..17).contains(&n) {
            GrpcCode(n as u8)
        } else {
            Self::UNKNOWN
        }
    }

    pub fn number(self) -> u8 {
        self.0
    }

    /// Reads `DEADLINE_EXCEEDED`, `deadline_exceeded`, `DeadlineExceeded`
    /// (Go's spelling, also `Canceled`) or a number.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Ok(n) = s.parse::<u8>() {
            return (n < 17).then_some(GrpcCode(n));
        }
        let squash = |x: &str| x.replace('_', "").to_ascii_lowercase();
        let wanted = squash(s);
        if wanted == "canceled" {
            return Some(Self::CANCELLED);
        }
        Self::NAMES
            .iter()
            .position(|n| squash(n) == wanted)
            .map(|i| GrpcCode(i as u8))
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[self.0 as usize]
    }

    /// The name Go's `codes.Code.String()` gives, which go-grpc-prometheus
    /// writes in `grpc_code`.
    pub fn go_name(self) -> &'static str {
        const GO: [&str; 17] = [
            "OK",
            "Canceled",
            "Unknown",
            "InvalidArgument",
            "DeadlineExceeded",
            "NotFound",
            "AlreadyExists",
            "PermissionDenied",
            "ResourceExhausted",
            "FailedPrecondition",
            "Aborted",
            "OutOfRange",
            "Unimplemented",
            "Internal",
            "Unavailable",
            "DataLoss",
            "Unauthenticated",
        ];
        GO[self.0 as usize]
    }
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for GrpcCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for GrpcCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        GrpcCode::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not a gRPC status code")))
    }
}

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// An HTTP response with this status.
    Status(u16),
    /// A gRPC call that ended with this status code.
    Grpc(GrpcCode),
    /// A response with an expected status or code whose checks (`expect`
    /// beyond the status) or captures failed.
    CheckFailed(Answer),
    /// No response.
    Transport(TransportError),
}

/// The status or code of a response whose checks failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Status(u16),
    Grpc(GrpcCode),
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Status(s) => write!(f, "{s}"),
            Answer::Grpc(c) => f.write_str(c.name()),
        }
    }
}

impl Outcome {
    /// Whether the server answered (an HTTP status or a gRPC code), as
    /// opposed to a transport error.
    pub fn is_response(self) -> bool {
        !matches!(self, Outcome::Transport(_))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Status(s) => write!(f, "{s}"),
            Outcome::Grpc(c) => f.write_str(c.name()),
            Outcome::CheckFailed(a) => write!(f, "check_failed ({a})"),
            Outcome::Transport(t) => f.write_str(t.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_read_every_spelling() {
        assert_eq!(GrpcCode::parse("OK"), Some(GrpcCode::OK));
        assert_eq!(
            GrpcCode::parse("deadline_exceeded"),
            Some(GrpcCode::DEADLINE_EXCEEDED)
        );
        assert_eq!(
            GrpcCode::parse("DeadlineExceeded"),
            Some(GrpcCode::DEADLINE_EXCEEDED)
        );
        assert_eq!(GrpcCode::parse("Canceled"), Some(GrpcCode::CANCELLED));
        assert_eq!(
            GrpcCode::parse("16").map(GrpcCode::name),
            Some("UNAUTHENTICATED")
        );
        assert_eq!(GrpcCode::parse("17"), None);
        assert_eq!(GrpcCode::parse("NOPE"), None);
        assert_eq!(GrpcCode::from_number(99), GrpcCode::UNKNOWN);
        let json = serde_json::to_string(&Outcome::Grpc(GrpcCode::DEADLINE_EXCEEDED)).unwrap();
        assert_eq!(json, r#"{"grpc":"DEADLINE_EXCEEDED"}"#);
        let back: Outcome = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Outcome::Grpc(GrpcCode::DEADLINE_EXCEEDED));
    }
}
