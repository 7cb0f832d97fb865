//! Text from the inputs as the review page shows it. Control characters (C0, DEL, C1) and the
//! characters that reorder or hide text (bidi embeddings, overrides, isolates and marks, zero
//! width characters, line and paragraph separators) become visible, styled markers such as
//! `⟨U+202E⟩`, so that `"\u{202E}gnp.exe"` cannot pass for "exe.png"; text longer than its
//! place allows is cut with an ellipsis, its whole text (markers included) in a `title` to read
//! on hover. The page's HTML then holds none of those characters raw.

use std::fmt::{self, Write as _};

/// Characters shown as a marker rather than as themselves.
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// The marker of a hidden character.
fn marker(c: char) -> String {
    format!("\u{27E8}U+{:04X}\u{27E9}", u32::from(c))
}

/// One character of a shown text.
enum Piece {
    Plain(char),
    Hidden(char),
}

/// The first `max` characters of `text` as pieces, then `…` if there were more.
fn pieces(text: &str, max: usize, mut f: impl FnMut(Piece)) {
    for (i, c) in text.chars().enumerate() {
        if i == max {
            f(Piece::Plain('\u{2026}'));
            return;
        }
        f(match is_hidden(c) {
            true => Piece::Hidden(c),
            false => Piece::Plain(c),
        });
    }
}

/// `text` as plain visible text: at most `max` characters (then `…`), hidden characters as
/// markers. For attributes and other places without markup.
pub(super) fn visible(text: &str, max: usize) -> String {
    let mut out = String::new();
    pieces(text, max, |p| match p {
        Piece::Plain(c) => out.push(c),
        Piece::Hidden(c) => out.push_str(&marker(c)),
    });
    out
}

/// Input-derived text ready for the page's HTML: escaped, markers styled (`span.cp`), and when
/// cut, inside a `span.cut` whose `title` holds the whole text.
#[derive(Debug, Clone)]
pub(super) struct Shown(String);

impl Shown {
    /// `text` shown in at most `max` characters.
    pub(super) fn new(text: &str, max: usize) -> Shown {
        let mut html = String::new();
        let cut = text.chars().count() > max;
        if cut {
            html.push_str("<span class=\"cut\" title=\"");
            escape(&visible(text, usize::MAX), &mut html);
            html.push_str("\">");
        }
        pieces(text, max, |p| match p {
            Piece::Plain(c) => escape_char(c, &mut html),
            Piece::Hidden(c) => {
                let _ = write!(html, "<span class=\"cp\">{}</span>", marker(c));
            }
        });
        if cut {
            html.push_str("</span>");
        }
        Shown(html)
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Already HTML: every character that came from the input went through [`escape`].
impl askama::filters::HtmlSafe for Shown {}

/// `text` escaped for HTML text and quoted attribute values.
fn escape(text: &str, out: &mut String) {
    text.chars().for_each(|c| escape_char(c, out));
}

fn escape_char(c: char, out: &mut String) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        '\'' => out.push_str("&#39;"),
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_right_to_left_override_shows_as_a_marker_not_as_reordered_text() {
        let html = Shown::new("\u{202E}gnp.exe", 40).to_string();
        assert_eq!(
            html,
            "<span class=\"cp\">\u{27E8}U+202E\u{27E9}</span>gnp.exe"
        );
        assert_eq!(visible("a\u{0007}b\u{0085}", 40), "a⟨U+0007⟩b⟨U+0085⟩");
    }

    #[test]
    fn long_text_is_cut_with_the_whole_text_escaped_in_its_title() {
        let long = format!("<b>\"{}\u{2066}", "x".repeat(100));
        let html = Shown::new(&long, 10).to_string();
        assert_eq!(
            html,
            format!(
                "<span class=\"cut\" title=\"&lt;b&gt;&quot;{}⟨U+2066⟩\">&lt;b&gt;&quot;xxxxxx\u{2026}</span>",
                "x".repeat(100)
            )
        );
        assert_eq!(visible(&long, 10), "<b>\"xxxxxx\u{2026}");
    }
}
