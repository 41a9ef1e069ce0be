//! The rule for the free text people give each other to read: display names and
//! song titles. A name is shown in every bandmate's member list and setlist, so
//! it must look like what it is: no control characters, no characters that
//! reorder the text around them (bidi embeddings, overrides and isolates, which
//! make `evil<U+202E>gpj.exe` read as `evilexe.jpg`), no byte-order mark, no line
//! breaks, and at least one visible character once whitespace and invisible
//! characters (zero-width spaces and joiners, fillers, variation selectors, tag
//! characters) are set aside. Invisible characters are allowed inside a name
//! with something visible (a zero-width joiner binds an emoji sequence; a
//! right-to-left mark belongs in Arabic or Hebrew text).

use crate::ids::InvalidValue;

/// Characters that take no room on screen: they do not make a name visible.
pub fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}' // soft hyphen
                | '\u{034F}' // combining grapheme joiner
                | '\u{061C}' // Arabic letter mark
                | '\u{115F}'..='\u{1160}' // Hangul fillers
                | '\u{17B4}'..='\u{17B5}' // Khmer inherent vowels
                | '\u{180B}'..='\u{180F}' // Mongolian selectors and vowel separator
                | '\u{200B}'..='\u{200F}' // zero-width space, non-joiner, joiner, LRM, RLM
                | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
                | '\u{206A}'..='\u{206F}' // deprecated format characters
                | '\u{2800}' // braille pattern blank
                | '\u{3164}' // Hangul filler
                | '\u{FE00}'..='\u{FE0F}' // variation selectors
                | '\u{FFA0}' // halfwidth Hangul filler
                | '\u{1D173}'..='\u{1D17A}' // musical symbol format characters
                | '\u{E0000}'..='\u{E007F}' // tag characters
                | '\u{E0100}'..='\u{E01EF}' // variation selectors supplement
        )
}

/// Characters refused anywhere in a name, with the reason a person is told.
fn refused(c: char) -> Option<&'static str> {
    match c {
        c if c.is_control() => Some("must not contain control characters"),
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => Some(
            "must not contain characters that change the text direction (U+202A-U+202E, U+2066-U+2069)",
        ),
        '\u{FEFF}' => Some("must not contain a byte-order mark (U+FEFF)"),
        '\u{2028}' | '\u{2029}' => Some("must not contain line breaks"),
        '\u{FFF9}'..='\u{FFFB}' => Some("must not contain annotation characters"),
        _ => None,
    }
}

/// Checks a name and returns it trimmed of surrounding whitespace: 1..=`max`
/// characters (Unicode scalar values, at most 4 bytes each), at least one of
/// them visible, none of them refused.
pub fn check_name<'a>(
    what: &'static str,
    s: &'a str,
    max_chars: usize,
) -> Result<&'a str, InvalidValue> {
    let s = s.trim();
    let n = s.chars().count();
    if n == 0 || n > max_chars {
        return Err(InvalidValue::new(
            what,
            format!("must be 1..={max_chars} characters"),
        ));
    }
    check_characters(what, s)?;
    Ok(s)
}

/// Checks a short text people send each other (a cue, a message): at most
/// `max_bytes` bytes of UTF-8 as sent (it travels in every event and is kept
/// in the state), none of the characters refused in names, and something
/// visible. An empty text is the caller's to allow or refuse.
pub fn check_text(what: &'static str, s: &str, max_bytes: usize) -> Result<(), InvalidValue> {
    if s.len() > max_bytes {
        return Err(InvalidValue::new(
            what,
            format!(
                "at most {max_bytes} bytes of UTF-8 (this one has {})",
                s.len()
            ),
        ));
    }
    check_characters(what, s)
}

/// No refused character, and (unless empty) a visible one: the rule names
/// and texts share.
fn check_characters(what: &'static str, s: &str) -> Result<(), InvalidValue> {
    if let Some(why) = s.chars().find_map(refused) {
        return Err(InvalidValue::new(what, why));
    }
    if !s.is_empty() && s.chars().all(is_invisible) {
        return Err(InvalidValue::new(
            what,
            "must contain a visible character (not only spaces or zero-width characters)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_people_use_are_accepted() {
        for ok in [
            "Ana",
            "Zoë",
            "José 🎸",
            "محمد",
            "שרה\u{200F}",
            "👩\u{200D}🎤 Kim",
            "李小龍",
            "a\u{00A0}b",
        ] {
            assert_eq!(check_name("name", ok, 40), Ok(ok), "{ok:?}");
        }
        assert_eq!(check_name("name", "  Ana\t", 40), Ok("Ana"));
    }

    #[test]
    fn direction_tricks_invisible_names_and_controls_are_refused() {
        let cases = [
            ("evil\u{202E}gpj.exe", "direction"),
            ("a\u{202A}b", "direction"),
            ("a\u{202D}b", "direction"),
            ("a\u{2066}b\u{2069}", "direction"),
            ("a\u{2068}b", "direction"),
            ("\u{FEFF}Ana", "byte-order mark"),
            ("An\u{FEFF}a", "byte-order mark"),
            ("\u{200B}", "visible"),
            ("\u{200B}\u{200C}\u{200D}\u{2060}", "visible"),
            (" \u{200B} \u{3164} ", "visible"),
            ("\u{2800}\u{2800}", "visible"),
            ("\u{E0041}\u{E0042}", "visible"),
            ("\u{200E}\u{200F}", "visible"),
            ("a\u{7}b", "control"),
            ("a\u{7F}b", "control"),
            ("a\u{85}b", "control"),
            ("a\u{2028}b", "line breaks"),
            ("", "1..=40"),
            ("   ", "1..=40"),
        ];
        for (bad, why) in cases {
            let err = check_name("name", bad, 40).expect_err(bad);
            assert!(err.why.contains(why), "{bad:?}: {err}");
        }
        assert!(check_name("name", &"é".repeat(41), 40).is_err());
        assert!(check_name("name", &"é".repeat(40), 40).is_ok());
    }

    #[test]
    fn texts_are_limited_in_bytes_and_follow_the_name_rule() {
        for ok in [
            "last chorus",
            "tag ×2 🎸",
            "",
            &"x".repeat(120),
            &"é".repeat(60),
        ] {
            assert_eq!(check_text("text", ok, 120), Ok(()), "{ok:?}");
        }
        let cases = [
            ("x".repeat(121), "at most 120 bytes"),
            ("é".repeat(61), "at most 120 bytes"),
            ("a\u{202E}b".into(), "direction"),
            ("a\nb".into(), "control"),
            ("\u{200B} \u{2060}".into(), "visible"),
            ("   ".into(), "visible"),
        ];
        for (bad, why) in cases {
            let err = check_text("text", &bad, 120).expect_err(&bad);
            assert!(err.why.contains(why), "{bad:?}: {err}");
        }
    }
}
