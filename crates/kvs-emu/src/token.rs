//! Pagination tokens: the state of a listing, handed to the client as an opaque NextToken and
//! read back on the next page. Hex digits fit both models' patterns (`[a-zA-Z0-9+/]+={0,2}` for
//! ListFragments, `[a-zA-Z0-9+/=]*` for ListStreams) and carry any text.

/// Separates the fields inside a token; no field contains it.
const SEPARATOR: char = '\n';

/// A token holding `fields`.
pub fn encode(fields: &[String]) -> String {
    let text = fields.join(&SEPARATOR.to_string());
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The fields of a token made by [`encode`]; `None` for anything else.
pub fn decode(token: &str) -> Option<Vec<String>> {
    if !token.len().is_multiple_of(2) || !token.is_ascii() {
        return None;
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let text = String::from_utf8(bytes).ok()?;
    Some(text.split(SEPARATOR).map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let fields = vec!["LF1".to_owned(), "cam-1".to_owned(), "100".to_owned()];
        let token = encode(&fields);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(decode(&token), Some(fields));
        assert_eq!(decode("abc"), None);
        assert_eq!(decode("zz"), None);
        assert_eq!(decode("é1"), None);
    }
}
