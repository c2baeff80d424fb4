//! Message content rules: plain text, control characters stripped, length after trimming.

use crate::error::AppError;

/// Strips control characters except newline and tab, then trims. The server never interprets
/// content as markup, so nothing else is touched.
pub fn sanitize(raw: &str) -> String {
    raw.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Sanitizes `raw` and checks it is 1 to `max_chars` characters; errors name the `message` field.
pub fn clean_content(raw: &str, max_chars: usize) -> Result<String, AppError> {
    let content = sanitize(raw);
    let len = content.chars().count();
    if len == 0 {
        return Err(AppError::field("message", "must not be empty"));
    }
    if len > max_chars {
        return Err(AppError::field(
            "message",
            format!("must be at most {max_chars} characters"),
        ));
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_controls_keeps_newline_tab_and_markup() {
        assert_eq!(sanitize("a\u{7}b\nc\td"), "ab\nc\td");
        assert_eq!(sanitize("  <b>x</b> \r\n"), "<b>x</b>");
        assert_eq!(sanitize("\u{1b}[31mred"), "[31mred");
    }

    #[test]
    fn length_counts_characters_after_trimming() {
        assert!(clean_content("   ", 10).is_err());
        assert!(clean_content(&"é".repeat(10), 10).is_ok());
        assert!(clean_content(&"é".repeat(11), 10).is_err());
        assert_eq!(clean_content("  hi  ", 10).unwrap(), "hi");
    }
}
