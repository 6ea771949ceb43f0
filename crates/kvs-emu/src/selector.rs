//! GetMedia's StartSelector: checked like the service checks it, then turned into the first
//! fragment to send.

use std::cmp::Ordering;

use serde_json::Value;

use crate::error::null_member;
use crate::fragment::{StoredFragment, cmp_fragment_numbers};

/// Where a GetMedia call asked to start.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// The next fragment to arrive after the request; nothing from the past.
    Now,
    /// The oldest fragment still stored.
    Earliest,
    /// The fragment with this number (inclusive), else the first with a larger one.
    FragmentNumber(String),
    /// The fragment whose server time range holds this epoch millisecond, else the next one.
    ServerTimestamp(i64),
    /// The same on producer timestamps.
    ProducerTimestamp(i64),
    /// The fragment right after the one this token (its fragment number) was given with.
    ContinuationToken(String),
}

const TYPES: &str = "[NOW, EARLIEST, FRAGMENT_NUMBER, SERVER_TIMESTAMP, PRODUCER_TIMESTAMP, \
                     CONTINUATION_TOKEN]";

impl Selector {
    /// Reads `StartSelector` from a GetMedia body. The error is the InvalidArgumentException
    /// message.
    pub fn parse(body: &Value) -> Result<Selector, String> {
        let Some(selector) = body.get("StartSelector").filter(|s| !s.is_null()) else {
            return Err(null_member("startSelector"));
        };
        let Some(kind) = selector.get("StartSelectorType").filter(|k| !k.is_null()) else {
            return Err(null_member("startSelector.startSelectorType"));
        };
        let field = |name: &str| selector.get(name).filter(|v| !v.is_null());
        let missing = |name: &str, kind: &str| {
            format!("{name} must be specified when StartSelectorType is {kind}.")
        };
        match kind.as_str() {
            Some("NOW") => Ok(Selector::Now),
            Some("EARLIEST") => Ok(Selector::Earliest),
            Some("FRAGMENT_NUMBER") => {
                let number = field("AfterFragmentNumber")
                    .ok_or_else(|| missing("AfterFragmentNumber", "FRAGMENT_NUMBER"))?;
                let number = number
                    .as_str()
                    .filter(|n| is_fragment_number(n))
                    .ok_or_else(|| {
                        pattern("startSelector.afterFragmentNumber", number, "^[0-9]+$")
                    })?;
                Ok(Selector::FragmentNumber(number.to_owned()))
            }
            Some(kind @ ("SERVER_TIMESTAMP" | "PRODUCER_TIMESTAMP")) => {
                let value =
                    field("StartTimestamp").ok_or_else(|| missing("StartTimestamp", kind))?;
                let ms = epoch_ms(value).ok_or_else(|| {
                    format!("StartTimestamp {value} is not a timestamp in epoch seconds.")
                })?;
                Ok(if kind == "SERVER_TIMESTAMP" {
                    Selector::ServerTimestamp(ms)
                } else {
                    Selector::ProducerTimestamp(ms)
                })
            }
            Some("CONTINUATION_TOKEN") => {
                let token = field("ContinuationToken")
                    .ok_or_else(|| missing("ContinuationToken", "CONTINUATION_TOKEN"))?;
                let token = token.as_str().filter(|t| is_token(t)).ok_or_else(|| {
                    pattern(
                        "startSelector.continuationToken",
                        token,
                        "^[a-zA-Z0-9_\\.\\-]+$",
                    )
                })?;
                // Tokens are fragment numbers; one that is not cannot name a fragment here.
                if !is_fragment_number(token) {
                    return Err(format!("ContinuationToken {token} is not valid."));
                }
                Ok(Selector::ContinuationToken(token.to_owned()))
            }
            _ => Err(format!(
                "1 validation error detected: Value '{}' at 'startSelector.startSelectorType' \
                 failed to satisfy constraint: Member must satisfy enum value set: {TYPES}",
                kind.as_str()
                    .map_or_else(|| kind.to_string(), str::to_owned)
            )),
        }
    }
}

/// What the stream looks like when a call starts.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub fragments: &'a [StoredFragment],
    /// Fragments before this index have expired (retention).
    pub oldest: usize,
    /// Fragments from this index on have not arrived yet (live streams).
    pub arrived: usize,
}

/// Where a call starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// Index of the first fragment to send (may be `fragments.len()`: wait for new ones).
    pub index: usize,
    /// The selector named this expired fragment: report FRAGMENT_NOT_FOUND before sending.
    pub expired: Option<String>,
}

impl Selector {
    pub fn resolve(&self, view: View<'_>) -> Start {
        let kept = view.oldest..view.fragments.len();
        let first_kept_where = |pred: &dyn Fn(&StoredFragment) -> bool| {
            kept.clone()
                .find(|&i| pred(&view.fragments[i]))
                .unwrap_or(view.fragments.len())
        };
        let at = |index| Start {
            index,
            expired: None,
        };
        match self {
            Selector::Now => at(view.arrived.max(view.oldest)),
            Selector::Earliest => at(view.oldest),
            Selector::FragmentNumber(number) | Selector::ContinuationToken(number) => {
                let after = matches!(self, Selector::ContinuationToken(_));
                let exact = view
                    .fragments
                    .iter()
                    .position(|f| cmp_fragment_numbers(f.number(), number) == Ordering::Equal);
                match exact {
                    Some(i) if i < view.oldest => Start {
                        index: view.oldest,
                        expired: Some(number.clone()),
                    },
                    Some(i) => at(i + usize::from(after)),
                    None => at(first_kept_where(&|f| {
                        cmp_fragment_numbers(f.number(), number) == Ordering::Greater
                    })),
                }
            }
            Selector::ServerTimestamp(t) => at(by_time(view, *t, StoredFragment::server_ms)),
            Selector::ProducerTimestamp(t) => at(by_time(view, *t, StoredFragment::producer_ms)),
        }
    }
}

impl Selector {
    /// Whether this is a CONTINUATION_TOKEN naming a fragment the stream does not hold now: one
    /// it never had, has not received yet, or lost to retention. The service gave out no such
    /// token, or no longer honours it.
    pub fn is_stale_token(&self, view: View<'_>) -> bool {
        let Selector::ContinuationToken(number) = self else {
            return false;
        };
        let end = view.arrived.min(view.fragments.len());
        let held = &view.fragments[view.oldest.min(end)..end];
        !held
            .iter()
            .any(|f| cmp_fragment_numbers(f.number(), number) == Ordering::Equal)
    }
}

/// The first kept fragment whose `[start, start + duration)` holds `t`, else the first kept one
/// starting after `t`.
fn by_time(view: View<'_>, t: i64, start: fn(&StoredFragment) -> i64) -> usize {
    let kept = &view.fragments[view.oldest.min(view.fragments.len())..];
    let holds = |f: &StoredFragment| {
        let s = start(f);
        s <= t && t < s.saturating_add_unsigned(f.duration_ms())
    };
    kept.iter()
        .position(holds)
        .or_else(|| kept.iter().position(|f| start(f) > t))
        .map_or(view.fragments.len(), |i| view.oldest + i)
}

/// A JSON timestamp (epoch seconds, fraction allowed, as the SDKs write it) in epoch
/// milliseconds, rounded to the nearest one.
pub fn epoch_ms(value: &Value) -> Option<i64> {
    value
        .as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e13)
        .map(|s| (s * 1000.0).round() as i64)
}

/// The model's FragmentNumberString: 1 to 128 decimal digits.
pub fn is_fragment_number(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_token(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// AWS's validation message for a member that does not match its pattern.
pub fn pattern(path: &str, value: &Value, regex: &str) -> String {
    format!(
        "1 validation error detected: Value {value} at '{path}' failed to satisfy constraint: \
         Member must satisfy regular expression pattern: {regex}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SyntheticSpec, synthetic};
    use serde_json::json;

    fn parse(selector: Value) -> Result<Selector, String> {
        Selector::parse(&json!({ "StreamName": "s", "StartSelector": selector }))
    }

    #[test]
    fn selectors_parse() {
        assert_eq!(
            parse(json!({"StartSelectorType": "NOW"})),
            Ok(Selector::Now)
        );
        assert_eq!(
            parse(json!({"StartSelectorType": "EARLIEST"})),
            Ok(Selector::Earliest)
        );
        assert_eq!(
            parse(json!({"StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": "123"})),
            Ok(Selector::FragmentNumber("123".into()))
        );
        assert_eq!(
            parse(
                json!({"StartSelectorType": "PRODUCER_TIMESTAMP", "StartTimestamp": 1511852109.126})
            ),
            Ok(Selector::ProducerTimestamp(1_511_852_109_126))
        );
        assert_eq!(
            parse(json!({"StartSelectorType": "SERVER_TIMESTAMP", "StartTimestamp": 1511852100})),
            Ok(Selector::ServerTimestamp(1_511_852_100_000))
        );
        assert_eq!(
            parse(json!({"StartSelectorType": "CONTINUATION_TOKEN", "ContinuationToken": "77"})),
            Ok(Selector::ContinuationToken("77".into()))
        );
    }

    #[test]
    fn invalid_selectors_say_why() {
        let err = |v| parse(v).unwrap_err();
        assert!(
            Selector::parse(&json!({"StreamName": "s"}))
                .unwrap_err()
                .contains("startSelector")
        );
        assert!(err(json!({})).contains("startSelectorType"));
        assert!(err(json!({"StartSelectorType": "LATEST"})).contains("enum value set"));
        assert!(err(json!({"StartSelectorType": 3})).contains("enum value set"));
        assert!(
            err(json!({"StartSelectorType": "FRAGMENT_NUMBER"})).contains("AfterFragmentNumber")
        );
        assert!(
            err(json!({"StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": "12a"}))
                .contains("pattern")
        );
        assert!(err(json!({"StartSelectorType": "SERVER_TIMESTAMP"})).contains("StartTimestamp"));
        assert!(
            err(json!({"StartSelectorType": "PRODUCER_TIMESTAMP", "StartTimestamp": "yesterday"}))
                .contains("epoch seconds")
        );
        assert!(
            err(json!({"StartSelectorType": "CONTINUATION_TOKEN"})).contains("ContinuationToken")
        );
        assert!(
            err(json!({"StartSelectorType": "CONTINUATION_TOKEN", "ContinuationToken": "a b"}))
                .contains("pattern")
        );
    }

    /// 10 fragments of 2 s: producer times 0, 2000, … (+ base), server = producer + 150.
    fn stream() -> Vec<StoredFragment> {
        synthetic(&SyntheticSpec {
            fragments: 10,
            frames_per_fragment: 1,
            ..SyntheticSpec::default()
        })
    }

    fn view(fragments: &[StoredFragment], oldest: usize, arrived: usize) -> View<'_> {
        View {
            fragments,
            oldest,
            arrived,
        }
    }

    fn index(selector: Selector, view: View<'_>) -> usize {
        let start = selector.resolve(view);
        assert_eq!(start.expired, None);
        start.index
    }

    #[test]
    fn now_and_earliest() {
        let f = stream();
        assert_eq!(index(Selector::Now, view(&f, 0, 4)), 4);
        assert_eq!(index(Selector::Now, view(&f, 0, 10)), 10);
        assert_eq!(index(Selector::Earliest, view(&f, 0, 4)), 0);
        assert_eq!(index(Selector::Earliest, view(&f, 3, 10)), 3);
    }

    #[test]
    fn fragment_numbers_are_inclusive_and_tokens_exclusive() {
        let f = stream();
        let number = |i: usize| f[i].number().to_owned();
        let all = view(&f, 0, 10);
        assert_eq!(index(Selector::FragmentNumber(number(3)), all), 3);
        assert_eq!(index(Selector::ContinuationToken(number(3)), all), 4);
        assert_eq!(index(Selector::ContinuationToken(number(9)), all), 10);
        // Between two numbers: the next larger one.
        let between = format!("{}5", &number(3)[..46]);
        assert_eq!(index(Selector::FragmentNumber(between.clone()), all), 4);
        assert_eq!(index(Selector::ContinuationToken(between), all), 4);
        // Shorter numbers are smaller, longer ones larger.
        assert_eq!(index(Selector::FragmentNumber("99".into()), all), 0);
        assert_eq!(index(Selector::FragmentNumber("1".repeat(48)), all), 10);
    }

    #[test]
    fn timestamps_pick_the_fragment_that_holds_them() {
        let f = stream();
        let base = 1_700_000_000_000;
        let all = view(&f, 0, 10);
        assert_eq!(index(Selector::ProducerTimestamp(base), all), 0);
        assert_eq!(index(Selector::ProducerTimestamp(base + 5999), all), 2);
        assert_eq!(index(Selector::ProducerTimestamp(base + 6000), all), 3);
        assert_eq!(index(Selector::ServerTimestamp(base + 6000), all), 2);
        assert_eq!(index(Selector::ServerTimestamp(base + 6150), all), 3);
        assert_eq!(index(Selector::ProducerTimestamp(base - 1), all), 0);
        assert_eq!(index(Selector::ProducerTimestamp(base + 20_000), all), 10);
        // Before the oldest kept fragment: the oldest kept one.
        assert_eq!(index(Selector::ProducerTimestamp(base), view(&f, 5, 10)), 5);
    }

    #[test]
    fn expired_fragments_are_reported() {
        let f = stream();
        let kept_from_5 = view(&f, 5, 10);
        for selector in [
            Selector::FragmentNumber(f[2].number().into()),
            Selector::ContinuationToken(f[2].number().into()),
        ] {
            assert_eq!(
                selector.resolve(kept_from_5),
                Start {
                    index: 5,
                    expired: Some(f[2].number().into())
                }
            );
        }
        // A number older than every fragment names nothing: start at the oldest kept one.
        assert_eq!(index(Selector::FragmentNumber("5".into()), kept_from_5), 5);
    }

    #[test]
    fn stale_tokens_name_no_fragment_held() {
        let f = stream();
        let token = |i: usize| Selector::ContinuationToken(f[i].number().into());
        // Fragments 3 to 6 held: 0 to 2 expired, 7 to 9 not arrived.
        let held = view(&f, 3, 7);
        assert!(token(0).is_stale_token(held));
        assert!(!token(3).is_stale_token(held));
        assert!(!token(6).is_stale_token(held));
        assert!(token(7).is_stale_token(held));
        assert!(Selector::ContinuationToken("5".into()).is_stale_token(held));
        // Other selectors are never tokens.
        assert!(!Selector::FragmentNumber(f[0].number().into()).is_stale_token(held));
        // All expired.
        assert!(token(9).is_stale_token(view(&f, 10, 10)));
    }
}
