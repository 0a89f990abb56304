//! "Did you mean": the known name nearest to a mistyped one (strsim's Levenshtein
//! distance, the measure clap uses for its own suggestions).

/// The known name nearest to `word`, if it is near enough to be a typo: at most two edits,
/// and fewer than the word's length.
pub fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .copied()
        .map(|k| (strsim::levenshtein(word, k), k))
        .filter(|(d, _)| *d <= 2 && *d < word.chars().count())
        .min()
        .map(|(_, k)| k)
}

/// ` (did you mean `x`?)` when a known name is near `word`, else nothing.
pub fn did_you_mean(word: &str, known: &[&str]) -> String {
    closest(word, known).map(|k| format!(" (did you mean `{k}`?)")).unwrap_or_default()
}

/// serde's `unknown field `X`, expected one of `a`, `b`` made helpful: the nearest field
/// first, then every field allowed there (`also` adds the ones read elsewhere, such as a
/// node's `kind`, `input`, `concurrency` and `description`). `None` for other messages.
pub fn unknown_field(message: &str, also: &[&str]) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (word, expected) = rest.split_once('`')?;
    let mut allowed: Vec<&str> = also.to_vec();
    allowed.extend(expected.split('`').skip(1).step_by(2));
    allowed.dedup();
    let list = if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") };
    Some(format!("unknown field `{word}`{}; the fields here are: {list}", did_you_mean(word, &allowed)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn typos_find_their_word() {
        let known = ["internal", "archive", "quarantine"];
        assert_eq!(super::closest("interal", &known), Some("internal"));
        assert_eq!(super::closest("archve", &known), Some("archive"));
        assert_eq!(super::closest("x", &known), None);
        assert_eq!(super::did_you_mean("quarantne", &known), " (did you mean `quarantine`?)");
    }

    #[test]
    fn unknown_fields_name_the_nearest_and_all_allowed() {
        let m = super::unknown_field("unknown field `concurency`, expected `retry`", &["kind", "input", "concurrency"]);
        assert_eq!(
            m.as_deref(),
            Some("unknown field `concurency` (did you mean `concurrency`?); the fields here are: kind, input, concurrency, retry")
        );
        assert_eq!(super::unknown_field("missing field `url`", &[]), None);
    }
}
