//! Splits a stream of concatenated JSON values (Envoy's admin `/tap` output, or a
//! `file_per_tap` file holding one or several traces) into individually parsed values, so one
//! malformed trace is reported with its position and skipped while the rest still parse.

use serde_json::Value;

/// A line index for turning byte offsets into 1-based line and column numbers.
pub(crate) struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    pub(crate) fn new(text: &[u8]) -> Self {
        let mut starts = vec![0];
        starts.extend(
            text.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        );
        Lines { starts }
    }

    /// 1-based (line, column) of a byte offset.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let line = match self.starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        (line + 1, offset - self.starts[line] + 1)
    }

    pub(crate) fn describe(&self, offset: usize) -> String {
        let (l, c) = self.position(offset);
        format!("line {l}, column {c}")
    }
}

/// One value of the stream, or why the bytes at a position are not a JSON value.
pub(crate) enum Item {
    /// A parsed value and the byte offset where it starts.
    Value(usize, Value),
    /// A malformed region: byte offset of the error and a message without input content.
    Error(usize, String),
}

/// A JSON syntax error message without serde_json's relative position suffix.
///
/// serde_json parsing into `Value` reports only syntax (never input content), so its message
/// is safe to show; the position is recomputed for the whole file by the caller.
pub(crate) fn syntax_message(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Byte offset (in `span`) of a serde_json error position.
pub(crate) fn error_offset(span: &[u8], err: &serde_json::Error) -> usize {
    let (line, column) = (err.line(), err.column());
    if line == 0 {
        return span.len();
    }
    let mut current = 1;
    let mut offset = 0;
    for (i, b) in span.iter().enumerate() {
        if current == line {
            offset = i;
            break;
        }
        if *b == b'\n' {
            current += 1;
            offset = i + 1;
        }
    }
    (offset + column.saturating_sub(1)).min(span.len())
}

/// Splits `text` into top-level JSON values.
pub(crate) fn split(text: &[u8]) -> Vec<Item> {
    let mut items = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        // Skip whitespace and stray separators some tools put between objects.
        while pos < text.len() && (text[pos].is_ascii_whitespace() || text[pos] == b',') {
            pos += 1;
        }
        if pos >= text.len() {
            break;
        }
        if text[pos] != b'{' && text[pos] != b'[' {
            items.push(Item::Error(
                pos,
                "expected the start of a JSON object".to_string(),
            ));
            pos = next_object_start(text, pos + 1);
            continue;
        }
        match value_end(text, pos) {
            Some(end) => {
                let span = &text[pos..end];
                match serde_json::from_slice::<Value>(span) {
                    Ok(v) => {
                        items.push(Item::Value(pos, v));
                        pos = end;
                    }
                    Err(e) => {
                        items.push(Item::Error(
                            pos + error_offset(span, &e),
                            syntax_message(&e),
                        ));
                        // An unbalanced value may have swallowed the next trace: resume at the
                        // next object that starts a line inside the failed span, if any.
                        pos = next_object_start(text, pos + 1).min(end);
                    }
                }
            }
            None => {
                items.push(Item::Error(
                    pos,
                    "unterminated JSON value (input ends inside it)".to_string(),
                ));
                pos = next_object_start(text, pos + 1);
            }
        }
    }
    items
}

/// Offset of the next `{` at the start of a line, or the end of the text.
fn next_object_start(text: &[u8], from: usize) -> usize {
    let mut i = from;
    while i < text.len() {
        if text[i] == b'{' && (i == 0 || text[i - 1] == b'\n') {
            return i;
        }
        i += 1;
    }
    text.len()
}

/// End (exclusive) of the JSON value starting at `start`, by bracket matching outside strings.
fn value_end(text: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in text.iter().enumerate().skip(start) {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_concatenated_pretty_objects_and_reports_bad_ones() {
        let text = b"{\n  \"a\": 1\n}\n{\n  \"b\": [1, \"}\"]\n}\n{\n  \"c\": tru\n}\n{\"d\": {}}\n{\"e\": 1";
        let items = split(text);
        let lines = Lines::new(text);
        let mut values = 0;
        let mut errors = Vec::new();
        for item in items {
            match item {
                Item::Value(_, _) => values += 1,
                Item::Error(off, msg) => errors.push((lines.describe(off), msg)),
            }
        }
        assert_eq!(values, 3);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].0, "line 9, column 1", "just after the bad token");
        assert!(errors[1].1.contains("unterminated"));
        assert_eq!(errors[1].0, "line 11, column 1");
    }

    #[test]
    fn lines_positions() {
        let l = Lines::new(b"ab\ncd\n");
        assert_eq!(l.position(0), (1, 1));
        assert_eq!(l.position(4), (2, 2));
        assert_eq!(l.position(6), (3, 1));
    }
}
