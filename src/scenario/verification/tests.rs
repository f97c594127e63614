use super::*;

#[test]
fn slack() {
    assert_eq!(Slack::parse("5").unwrap(), Slack::Count(5));
    assert_eq!(Slack::parse("1%").unwrap(), Slack::Ratio(0.01));
    assert_eq!(Slack::Ratio(0.01).of(1234), 12);
    assert!(Slack::parse("abc").is_err());
    assert!(Slack::parse("120%").is_err());
}

#[test]
fn units() {
    assert_eq!(parse_unit("ms").unwrap(), 1e-3);
    assert_eq!(parse_unit("seconds").unwrap(), 1.0);
    assert_eq!(parse_unit("µs").unwrap(), 1e-6);
    assert!(parse_unit("minutes").unwrap_err().contains("`ms`"));
}

#[test]
fn expect() {
    assert_eq!(parse_expect("< 0.05").unwrap(), (Op::Lt, 0.05));
    assert_eq!(parse_expect(">=1").unwrap(), (Op::Ge, 1.0));
    assert!(parse_expect("= 1").is_err());
    assert!(parse_expect("< x").is_err());
}
