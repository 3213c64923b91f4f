//! Making hostile text harmless to show.
//!
//! SQL, parameters, rows, error messages and application names come from
//! agents or the database. In a terminal, control characters in them could
//! move the cursor, rewrite earlier lines or change the terminal's state;
//! bidirectional overrides could make text read differently from what it
//! is. In HTML, markup in them could run script. [`visible`] turns every
//! such character into a visible escape (`\x1b`, `\u{202e}`); [`html`]
//! additionally escapes markup.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether line breaks and tabs are kept (multi-line SQL) or escaped too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// Keep `\n` and `\t`; escape `\r` and everything else.
    Keep,
    /// Escape `\n` and `\t` as well: the text must stay on one line.
    Escape,
}

/// Characters that reorder, hide or fake text when displayed: Unicode's
/// format characters (Cf: direction marks and overrides, zero-width
/// characters, the soft hyphen, U+061C, U+180E, tag characters
/// U+E0000-E007F, which can carry a hidden copy of a text), separators
/// other than the plain space (Zs, Zl, Zp: a no-break space reads as a
/// space but is not one), private-use and unassigned code points, and the
/// marks and letters that render as nothing: variation selectors, the
/// combining grapheme joiner, Hangul and Khmer fillers, the blank braille
/// pattern.
fn is_format_trick(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    if c == ' ' {
        return false;
    }
    matches!(
        c.general_category(),
        GeneralCategory::Format
            | GeneralCategory::SpaceSeparator
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::PrivateUse
            | GeneralCategory::Unassigned
            | GeneralCategory::Surrogate
    ) || matches!(c,
        '\u{034f}' // combining grapheme joiner
        | '\u{115f}' | '\u{1160}' | '\u{3164}' | '\u{ffa0}' // Hangul fillers
        | '\u{17b4}' | '\u{17b5}' // Khmer inherent vowels
        | '\u{180b}'..='\u{180f}' // Mongolian variation selectors
        | '\u{2800}' // braille blank
        | '\u{fe00}'..='\u{fe0f}' | '\u{e0100}'..='\u{e01ef}' // variation selectors
    )
}

/// `text` with control and direction-changing characters replaced by
/// visible escapes; borrowed when nothing needed replacing.
pub fn visible(text: &str, lines: Lines) -> Cow<'_, str> {
    let needs = |c: char| {
        (c.is_control() && !(lines == Lines::Keep && (c == '\n' || c == '\t')))
            || is_format_trick(c)
    };
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !needs(c) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

/// `text` made visible (see [`visible`]) and escaped for HTML element
/// content and quoted attribute values.
pub fn html(text: &str, lines: Lines) -> String {
    let text = visible(text, lines);
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Issue 20: characters that show as nothing, or as a plain space, in a
    /// terminal or a browser, each seen in a smuggling attempt.
    #[test]
    fn invisible_characters_become_visible() {
        for c in [
            '\u{061c}',
            '\u{00ad}',
            '\u{115f}',
            '\u{3164}',
            '\u{e0041}',
            '\u{e007f}',
            '\u{180e}',
            '\u{fe0f}',
            '\u{034f}',
            '\u{2800}',
            '\u{00a0}',
            '\u{2003}',
            '\u{200b}',
            '\u{202e}',
            '\u{2066}',
            '\u{feff}',
            '\u{e000}',
        ] {
            let text = format!("SELECT name{c} FROM t");
            let shown = visible(&text, Lines::Keep);
            assert!(shown.is_ascii(), "{:04x}: {shown}", c as u32);
            assert!(
                shown.contains(&format!("\\u{{{:04x}}}", c as u32)),
                "{:04x}: {shown}",
                c as u32
            );
        }
        // Ordinary text in other scripts is left alone.
        for text in ["Zürich", "東京", "Ελλάδα", "emoji 😀", "a b"] {
            assert_eq!(visible(text, Lines::Keep), text);
        }
    }

    #[test]
    fn control_characters_become_visible() {
        assert_eq!(visible("plain text", Lines::Escape), "plain text");
        assert!(matches!(visible("plain", Lines::Keep), Cow::Borrowed(_)));
        assert_eq!(
            visible("a\x1b[2Jb\rc\u{7f}", Lines::Keep),
            "a\\x1b[2Jb\\rc\\x7f"
        );
        assert_eq!(visible("a\nb\tc", Lines::Keep), "a\nb\tc");
        assert_eq!(visible("a\nb\tc", Lines::Escape), "a\\nb\\tc");
        assert_eq!(visible("x\u{9b}y", Lines::Keep), "x\\u{009b}y");
        assert_eq!(visible("abc\u{202e}fed", Lines::Keep), "abc\\u{202e}fed");
    }

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            html("<script>alert('x')</script> & \"q\"", Lines::Escape),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(html("a\x00<", Lines::Keep), "a\\x00&lt;");
    }

    proptest! {
        #[test]
        fn nothing_dangerous_survives(s in any::<String>()) {
            let shown = visible(&s, Lines::Escape);
            prop_assert!(!shown.chars().any(|c| c.is_control() || is_format_trick(c)));
            let kept = visible(&s, Lines::Keep);
            prop_assert!(!kept.chars().any(|c| (c.is_control() && c != '\n' && c != '\t') || is_format_trick(c)));
            let h = html(&s, Lines::Keep);
            prop_assert!(!h.contains('<') && !h.contains('>') && !h.contains('"') && !h.contains('\''));
            prop_assert!(!h.chars().any(|c| (c.is_control() && c != '\n' && c != '\t') || is_format_trick(c)));
        }

        #[test]
        fn safe_text_is_unchanged(s in "[a-zA-Z0-9 ,.;()*=_-]*") {
            prop_assert_eq!(visible(&s, Lines::Escape), s.clone());
            prop_assert_eq!(html(&s, Lines::Escape), s);
        }
    }
}
