//! One-pass JSON rewriting without building a tree.
//!
//! The walker tokenizes a document once, keeps track of whether a string is a member key or a
//! value (and, for values, the key they belong to), and asks a [`Rewrite`] what to do with each
//! key, string and large integer. Everything it does not change is copied as raw bytes; only
//! insignificant whitespace is dropped, so the output is compact JSON.
//!
//! Validity follows `serde_json::from_slice::<Value>` exactly (grammar, UTF-8, control
//! characters, escapes and surrogates, numbers out of range, 128 levels of nesting), so a body
//! takes the JSON path here exactly when the tree-based sanitizer would have parsed it; a
//! document that is not valid JSON is handed back untouched for the text rules.

use std::borrow::Cow;

use super::text::{CLASS, G_CONTROL, G_DIGIT, G_HIGH, G_NON_DIGIT, classify};
use super::{Kind, SanitizeStats, Sanitizer};

/// Member names decided before, and what [`Rewrite::key`] said about their values: bodies
/// repeat their names (one set per array element, and the same set document after
/// document), so each distinct name is decided once for every document one sanitizer
/// walks. Only answers that leave the name as it is are kept (they depend on the name's text
/// and the sanitizer's rules alone). Two-way set-associative by a hash of the name; an entry holds the
/// whole name (up to [`NAME_MAX`] bytes, compared in full on lookup).
#[derive(Clone)]
pub(crate) struct NameCache {
    slots: [NameSlot; NAME_SLOTS],
}

/// Slots of the member-name cache.
const NAME_SLOTS: usize = 128;

/// Longest name the cache holds (longer ones are decided every time).
const NAME_MAX: usize = 32;

#[derive(Clone, Copy, Default)]
struct NameSlot {
    /// The name's bytes, zero-padded; `len` 0 marks an empty slot (the name's length + 1).
    words: [u64; 4],
    len: u8,
    value: Option<Kind>,
}

/// A name as the cache keys it: its zero-padded bytes, length + 1 and slot.
#[derive(Clone, Copy)]
struct NameKey {
    words: [u64; 4],
    len: u8,
    slot: usize,
}

impl Default for NameCache {
    fn default() -> Self {
        NameCache {
            slots: [NameSlot::default(); NAME_SLOTS],
        }
    }
}

impl NameCache {
    /// The key of the name `input[s..e]`, if the cache can hold it.
    #[inline(always)]
    fn key(input: &[u8], s: usize, e: usize) -> Option<NameKey> {
        let n = e - s;
        if n > NAME_MAX {
            return None;
        }
        let mut words = [0u64; 4];
        match input.get(s..s + 16) {
            // Most names are short and lie sixteen bytes or more before the end of the
            // document: two loads, and the bytes past the name masked off.
            Some(b) if n <= 16 => {
                let keep = |k: usize| u64::MAX.checked_shr(64 - 8 * k as u32).unwrap_or(0);
                words[0] =
                    u64::from_le_bytes(b[..8].try_into().unwrap_or_default()) & keep(n.min(8));
                words[1] = u64::from_le_bytes(b[8..].try_into().unwrap_or_default())
                    & keep(n.saturating_sub(8));
            }
            _ => {
                for (i, &byte) in input[s..e].iter().enumerate() {
                    words[i / 8] |= u64::from(byte) << (8 * (i % 8));
                }
            }
        }
        Some(Self::key_of(words, n))
    }

    /// The key of a name of `n` bytes given as its zero-padded words.
    #[inline(always)]
    fn key_of(words: [u64; 4], n: usize) -> NameKey {
        let h = words[0]
            ^ words[1].rotate_left(17)
            ^ words[2].rotate_left(31)
            ^ words[3].rotate_left(47)
            ^ n as u64;
        // Two ways per set (an even slot and the next).
        let slot = (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 57) as usize % NAME_SLOTS;
        NameKey {
            words,
            len: n as u8 + 1,
            slot,
        }
    }

    /// The decision for a key.
    #[inline(always)]
    fn find(&self, k: &NameKey) -> Option<Option<Kind>> {
        let hit = |e: &NameSlot| e.len == k.len && e.words == k.words;
        let set = &self.slots[k.slot & !1..=k.slot | 1];
        if hit(&set[0]) {
            return Some(set[0].value);
        }
        hit(&set[1]).then_some(set[1].value)
    }

    /// The member name whose token starts at `input[start]` (its opening quote), if it was
    /// decided before: where its token ends, and the decision. One sixteen-byte load finds the
    /// closing quote and is the key, without scanning the token first: names of up to 15
    /// bytes without a backslash, with sixteen bytes of input after the quote. A name the
    /// cache holds was checked when it was put (no escape, control character or invalid
    /// UTF-8), so the same bytes need no check.
    #[inline(always)]
    fn get_token(&self, input: &[u8], start: usize) -> Option<(usize, Option<Kind>)> {
        let b: &[u8; 16] = input.get(start + 1..start + 17)?.try_into().ok()?;
        let mut special = [0u8; 16];
        for i in 0..16 {
            special[i] = if (b[i] == b'"') | (b[i] == b'\\') {
                0xff
            } else {
                0
            };
        }
        let special = u128::from_le_bytes(special);
        if special == 0 {
            return None;
        }
        let n = (special.trailing_zeros() / 8) as usize;
        if b[n] != b'"' {
            return None;
        }
        let keep = |k: usize| u64::MAX.checked_shr(64 - 8 * k as u32).unwrap_or(0);
        let lo = u64::from_le_bytes(b[..8].try_into().unwrap_or_default()) & keep(n.min(8));
        let hi =
            u64::from_le_bytes(b[8..].try_into().unwrap_or_default()) & keep(n.saturating_sub(8));
        let value = self.find(&Self::key_of([lo, hi, 0, 0], n))?;
        Some((start + n + 2, value))
    }

    /// The decision for the name `input[s..e]`, if it was seen before.
    #[inline(always)]
    fn get(&self, input: &[u8], s: usize, e: usize) -> Option<Option<Kind>> {
        self.find(&Self::key(input, s, e)?)
    }

    /// Keeps the decision for the name `input[s..e]` (if the cache can hold it). Out of
    /// line, and the key computed again: holding it across the decision cost more.
    #[inline(never)]
    fn put(&mut self, input: &[u8], s: usize, e: usize, value: Option<Kind>) {
        let Some(k) = Self::key(input, s, e) else {
            return;
        };
        // The newest name goes first in its set, the one it displaces second (and the
        // second one, if any, out).
        let first = k.slot & !1;
        self.slots[first + 1] = self.slots[first];
        self.slots[first] = NameSlot {
            words: k.words,
            len: k.len,
            value,
        };
    }
}

/// Strings up to this many bytes are scanned byte by byte (see `Walker::string_token_general`).
const SHORT: usize = 12;

/// Whether a plain JSON integer (digits, no leading zero unless it is `0`) fits in a u64:
/// what `parse::<u64>().is_ok()` says, without the arithmetic.
fn fits_u64(digits: &[u8]) -> bool {
    const MAX: &[u8] = b"18446744073709551615";
    digits.len() < MAX.len() || (digits.len() == MAX.len() && digits <= MAX)
}

/// Which of sixteen bytes are a quote or backslash (`0xff` lanes of the first value), and
/// which could matter to `text::classify` (second value): control characters, `0`–`@`
/// (digits, `:`, `=`, `@` and a few harmless neighbours), `%`, `J` and non-ASCII bytes (whose
/// string must be checked for UTF-8). Written lane by lane
/// so the compiler turns it into a handful of SSE2 compares (no `unsafe`, no intrinsics).
#[inline(always)]
fn scan16(c: &[u8; 16]) -> (u128, u128) {
    let mut special = [0u8; 16];
    let mut marks = [0u8; 16];
    for i in 0..16 {
        let b = c[i];
        special[i] = if (b == b'"') | (b == b'\\') { 0xff } else { 0 };
        // Control characters and non-ASCII bytes: everything outside 0x20..0x80.
        marks[i] = if (b.wrapping_sub(0x20) >= 0x60)
            | (b.wrapping_sub(b'0') <= b'@' - b'0')
            | (b == b'%')
            | (b == b'J')
        {
            0xff
        } else {
            0
        };
    }
    (u128::from_le_bytes(special), u128::from_le_bytes(marks))
}

/// The `classify` bits of a string token's raw content, refusing what serde_json refuses in
/// a string's bytes: raw control characters and invalid UTF-8 (checked only when a
/// non-ASCII byte is there; escapes are ASCII, so the raw bytes of an escaped string are
/// checked the same way).
#[inline(always)]
fn checked_class(content: &[u8]) -> Result<u8, ()> {
    let class = classify(content);
    if class & G_CONTROL != 0 || (class & G_HIGH != 0 && std::str::from_utf8(content).is_err()) {
        return Err(());
    }
    Ok(class)
}

/// serde_json refuses the 128th level of nesting.
const MAX_DEPTH: usize = 127;

/// What to do with a member and its value.
pub(crate) struct KeyAction {
    /// Replacement for the key text, if it changes.
    pub(crate) key: Option<String>,
    /// Replace a non-null value as a whole with this kind's marker (counted by the walker
    /// through [`Rewrite::replaced`], only when the value is not null).
    pub(crate) value: Option<Kind>,
}

/// Decides what changes in a document.
///
/// Text is handed over as bytes that are always valid UTF-8 (the walker checked them; a
/// `&str` would cost a second check of every string offered).
pub(crate) trait Rewrite {
    /// A member key (decoded). `class`: its `text::classify` bits when the walker has them
    /// (strings without escapes). Must depend only on the key's text: the walker asks once
    /// per distinct name in a document and reuses an answer that leaves the key as it is.
    fn key(&mut self, key: &[u8], class: Option<u8>) -> KeyAction;
    /// A string value (decoded); `Some` replaces it. `class` as for keys.
    fn string(&mut self, s: &[u8], class: Option<u8>) -> Option<String>;
    /// A non-negative integer of 11 or more digits that fits in a u64 (the digits); `Some`
    /// replaces it with a string.
    fn integer(&mut self, digits: &[u8]) -> Option<String>;
    /// A value was replaced as a whole because of its key.
    fn replaced(&mut self, kind: Kind);
    /// True when [`Self::string`] returns `None` for every string with these `classify`
    /// bits, so the walker need not decode or offer them.
    fn leaves_string_alone(&self, _class: u8) -> bool {
        false
    }
}

/// The sanitizer's rules as a [`Rewrite`]: a member whose name is sensitive has its value
/// replaced as a whole (at any depth); other keys, string values and integers that could be a
/// document or card go through the text rules.
struct SanitizeJson<'s> {
    s: &'s Sanitizer,
    stats: SanitizeStats,
}

impl Rewrite for SanitizeJson<'_> {
    fn key(&mut self, key: &[u8], class: Option<u8>) -> KeyAction {
        KeyAction {
            value: self.s.field_kind_bytes(key),
            key: if class.is_some_and(|c| self.s.leaves_class_alone(c)) {
                None
            } else {
                self.string(key, class)
            },
        }
    }

    fn string(&mut self, s: &[u8], class: Option<u8>) -> Option<String> {
        self.s.rewrite_text(s, class, &mut self.stats)
    }

    fn integer(&mut self, digits: &[u8]) -> Option<String> {
        // Only digits: their class is known without looking.
        self.string(digits, Some(G_DIGIT))
    }

    fn replaced(&mut self, kind: Kind) {
        self.stats.add(kind);
    }

    fn leaves_string_alone(&self, class: u8) -> bool {
        self.s.leaves_class_alone(class)
    }
}

/// Sanitizes a JSON document in one pass. `Err` hands the input back, with `stats`
/// untouched, when it is not valid JSON.
pub(crate) fn sanitize(
    s: &Sanitizer,
    input: Vec<u8>,
    stats: &mut SanitizeStats,
) -> Result<Vec<u8>, Vec<u8>> {
    let mut r = SanitizeJson {
        s,
        stats: SanitizeStats::default(),
    };
    let (out, _) = s.with_names(|names| rewrite(input, &mut r, names))?;
    stats.merge(&r.stats);
    Ok(out)
}

/// Rewrites `input`. `Err` hands the input back when it is not a valid JSON document.
/// `Ok((out, changed))`: `changed` is true when a key or value was replaced (not when only
/// whitespace was dropped). `names` must only ever have been used with rewrites that decide
/// keys as `r` does.
pub(crate) fn rewrite<R: Rewrite>(
    input: Vec<u8>,
    r: &mut R,
    names: &mut NameCache,
) -> Result<(Vec<u8>, bool), Vec<u8>> {
    // UTF-8 is checked string by string (only strings holding a non-ASCII byte, see
    // `Walker::classified`): outside strings every byte must be ASCII grammar anyway.
    let mut w = Walker {
        input: &input,
        pos: 0,
        out: Vec::new(),
        copied: 0,
        edited: false,
        changed: false,
        r,
        names,
    };
    let ok = w.document().is_ok();
    if !ok {
        return Err(input);
    }
    let changed = w.changed;
    if !w.edited {
        return Ok((input, changed));
    }
    let len = w.input.len();
    w.flush(len);
    Ok((w.out, changed))
}

struct Walker<'a, 'r, R> {
    input: &'a [u8],
    pos: usize,
    /// Output so far; only used once something was edited.
    out: Vec<u8>,
    /// `input[..copied]` is accounted for in `out`.
    copied: usize,
    edited: bool,
    changed: bool,
    r: &'r mut R,
    /// Names decided before (in this document or an earlier one).
    names: &'r mut NameCache,
}

type Step = Result<(), ()>;

impl<'a, R: Rewrite> Walker<'a, '_, R> {
    fn flush(&mut self, upto: usize) {
        if !self.edited {
            self.out.reserve(self.input.len() + 64);
            self.edited = true;
        }
        self.out.extend_from_slice(&self.input[self.copied..upto]);
        self.copied = upto;
    }

    /// Replaces `input[start..end]` (which must not overlap anything replaced before).
    fn replace(&mut self, start: usize, end: usize, with: &[u8]) {
        self.flush(start);
        self.out.extend_from_slice(with);
        self.copied = end;
    }

    fn replace_with_string(&mut self, start: usize, end: usize, s: &str) {
        self.flush(start);
        if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            // Nothing to escape (markers, most rewritten text): what serde_json would write.
            self.out.push(b'"');
            self.out.extend_from_slice(s.as_bytes());
            self.out.push(b'"');
        } else {
            // Writing a str into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut self.out, s);
        }
        self.copied = end;
        self.changed = true;
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    /// Skips whitespace; with `drop`, it is left out of the output.
    #[inline(always)]
    fn ws(&mut self, drop: bool) {
        // Compact input (the common case) has none: one comparison.
        if let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.ws_run(drop);
        }
    }

    #[inline(never)]
    fn ws_run(&mut self, drop: bool) {
        let start = self.pos;
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
        if drop && self.pos > start {
            self.replace(start, self.pos, b"");
        }
    }

    fn document(&mut self) -> Step {
        self.ws(true);
        self.value(true, 0)?;
        self.ws(true);
        if self.pos == self.input.len() {
            Ok(())
        } else {
            Err(())
        }
    }

    /// One value. With `emit` false the value is only validated (it is inside a range that
    /// is being replaced as a whole), so nothing inside it may be edited.
    ///
    /// Inlined into the member and element loops: only containers cost a call (most values
    /// are strings and numbers, and a call's set-up was a good part of their cost).
    #[inline(always)]
    fn value(&mut self, emit: bool, depth: usize) -> Step {
        match self.peek().ok_or(())? {
            b'{' => self.object(emit, depth + 1),
            b'[' => self.array(emit, depth + 1),
            b'"' => {
                let (start, end, class) = self.string_token()?;
                if !emit || class.is_some_and(|c| self.r.leaves_string_alone(c)) {
                    // Nothing to offer (or validated only): a string without escapes is
                    // already known to be valid; one with escapes still gets decoded.
                    if class.is_none() {
                        self.decode(start, end, class)?;
                    }
                    return Ok(());
                }
                let decoded = self.decode(start, end, class)?;
                if emit && let Some(new) = self.r.string(&decoded, class) {
                    self.replace_with_string(start, end, &new);
                }
                Ok(())
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'0'..=b'9' => {
                // Most numbers are plain integers (counts, prices, ids, timestamps): scanned
                // here; a fraction, an exponent or hundreds of digits take `number`.
                let input = self.input;
                let start = self.pos;
                let mut i = start + 1;
                if input[start] != b'0' {
                    while i < input.len() && input[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                if matches!(input.get(i), Some(b'.' | b'e' | b'E')) || i - start > 300 {
                    return self.number_value(emit);
                }
                self.pos = i;
                if emit && i - start >= 11 {
                    self.long_integer(start, i);
                }
                Ok(())
            }
            b'-' => self.number_value(emit),
            _ => Err(()),
        }
    }

    /// A number value by the full grammar.
    #[inline(never)]
    fn number_value(&mut self, emit: bool) -> Step {
        let (start, end, plain) = self.number()?;
        if emit && plain && end - start >= 11 {
            self.long_integer(start, end);
        }
        Ok(())
    }

    /// A plain integer of 11 digits or more: offered to the rewrite if it fits in a u64.
    #[inline(never)]
    fn long_integer(&mut self, start: usize, end: usize) {
        let digits = &self.input[start..end];
        if fits_u64(digits)
            && let Some(new) = self.r.integer(digits)
        {
            self.replace_with_string(start, end, &new);
        }
    }

    fn literal(&mut self, word: &[u8]) -> Step {
        if self.input[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(())
        }
    }

    #[inline(never)]
    fn object(&mut self, emit: bool, depth: usize) -> Step {
        if depth > MAX_DEPTH {
            return Err(());
        }
        self.pos += 1;
        self.ws(emit);
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(());
            }
            // A name decided before is found without scanning its token first.
            let value =
                if emit && let Some((end, value)) = self.names.get_token(self.input, self.pos) {
                    self.pos = end;
                    value
                } else {
                    let (start, end, class) = self.string_token()?;
                    let action = if !emit {
                        if class.is_none() {
                            self.decode(start, end, class)?;
                        }
                        KeyAction {
                            key: None,
                            value: None,
                        }
                    } else if class.is_some() {
                        // Without escapes the name is its bytes: look it up before deciding.
                        match self.names.get(self.input, start + 1, end - 1) {
                            Some(value) => KeyAction { key: None, value },
                            None => {
                                let key = self.decode(start, end, class)?;
                                let action = self.r.key(&key, class);
                                if action.key.is_none() {
                                    self.names.put(self.input, start + 1, end - 1, action.value);
                                }
                                action
                            }
                        }
                    } else {
                        let key = self.decode(start, end, class)?;
                        self.r.key(&key, class)
                    };
                    if let Some(new) = &action.key {
                        self.replace_with_string(start, end, new);
                    }
                    action.value
                };
            self.ws(emit);
            if self.peek() != Some(b':') {
                return Err(());
            }
            self.pos += 1;
            self.ws(emit);
            match value {
                Some(kind) if self.peek() != Some(b'n') => {
                    let vstart = self.pos;
                    self.value(false, depth)?;
                    let vend = self.pos;
                    self.r.replaced(kind);
                    self.replace_with_string(vstart, vend, kind.marker());
                }
                _ => self.value(emit, depth)?,
            }
            self.ws(emit);
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws(emit);
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(()),
            }
        }
    }

    #[inline(never)]
    fn array(&mut self, emit: bool, depth: usize) -> Step {
        if depth > MAX_DEPTH {
            return Err(());
        }
        self.pos += 1;
        self.ws(emit);
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.value(emit, depth)?;
            self.ws(emit);
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws(emit);
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(()),
            }
        }
    }

    /// A string token starting at `pos` (a quote): its byte range including the quotes and,
    /// when it holds no escapes, the `text::classify` bits of its bytes (`None`: escaped).
    /// Raw control characters are refused, as serde_json does.
    #[inline(always)]
    fn string_token(&mut self) -> Result<(usize, usize, Option<u8>), ()> {
        let start = self.pos;
        let input = self.input;
        // Sixteen bytes at a time (see `scan16`): find the closing quote and learn whether any
        // byte before it matters to `classify` at all. Most strings (keys, words, statuses,
        // descriptions) hold none, and their class is known without a table walk. Escaped
        // strings and the last bytes of the input take the general path below.
        let mut i = start + 1;
        let mut marked = 0u128;
        while let Some(chunk) = input.get(i..i + 16) {
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(chunk);
            let (special, marks) = scan16(&bytes);
            if special == 0 {
                marked |= marks;
                i += 16;
                continue;
            }
            // Lanes are all-ones bytes: bit index / 8 is the lane.
            let first = special.trailing_zeros();
            let end = i + (first / 8) as usize + 1;
            if input[end - 1] != b'"' {
                break;
            }
            // A quote is never marked, so a mark in this chunk lies before it or after it.
            if marked == 0 && marks.trailing_zeros() > first {
                // No byte any rule needs, no digit: every byte is a plain non-digit.
                self.pos = end;
                let class = if end - start > 2 { G_NON_DIGIT } else { 0 };
                return Ok((start, end, Some(class)));
            }
            return self.classified(start, end);
        }
        self.string_token_general(start)
    }

    /// The token `input[start..end]` (no escapes) with its `classify` bits.
    #[inline(never)]
    fn classified(&mut self, start: usize, end: usize) -> Result<(usize, usize, Option<u8>), ()> {
        let content = &self.input[start + 1..end - 1];
        let class = checked_class(content)?;
        self.pos = end;
        Ok((start, end, Some(class)))
    }

    /// [`Self::string_token`] byte by byte and with escapes.
    #[inline(never)]
    fn string_token_general(&mut self, start: usize) -> Result<(usize, usize, Option<u8>), ()> {
        let input = self.input;
        let limit = (start + 1 + SHORT).min(input.len());
        let mut class = 0u8;
        for (i, &b) in input[..limit].iter().enumerate().skip(start + 1) {
            if b == b'"' {
                if class & (G_CONTROL | G_HIGH) != 0 {
                    checked_class(&input[start + 1..i])?;
                }
                self.pos = i + 1;
                return Ok((start, i + 1, Some(class)));
            }
            if b == b'\\' {
                break;
            }
            class |= CLASS[usize::from(b)];
        }
        let mut i = start + 1;
        let mut escaped = false;
        let end = loop {
            let k = memchr::memchr2(b'"', b'\\', &self.input[i..]).ok_or(())?;
            let j = i + k;
            if self.input[j] == b'"' {
                break j + 1;
            }
            escaped = true;
            i = j + 2;
            if i > self.input.len() {
                return Err(());
            }
        };
        let class = checked_class(&self.input[start + 1..end - 1])?;
        self.pos = end;
        Ok((start, end, (!escaped).then_some(class)))
    }

    /// The decoded text of a string token (valid UTF-8). Escapes (rare) are decoded by
    /// serde_json itself, so what is accepted (surrogate pairs, lone surrogates) is exactly
    /// what it accepts; without escapes the text is the token's bytes, whose UTF-8 was
    /// checked when it was scanned (`checked_class`).
    fn decode(&self, start: usize, end: usize, class: Option<u8>) -> Result<Cow<'a, [u8]>, ()> {
        if class.is_none() {
            serde_json::from_slice::<String>(&self.input[start..end])
                .map(|s| Cow::Owned(s.into_bytes()))
                .map_err(|_| ())
        } else {
            Ok(Cow::Borrowed(&self.input[start + 1..end - 1]))
        }
    }

    /// A number token (JSON grammar): byte range and whether it is a plain non-negative
    /// integer (no sign, fraction or exponent).
    fn number(&mut self) -> Result<(usize, usize, bool), ()> {
        let start = self.pos;
        let b = self.input;
        let mut i = start;
        let mut plain = true;
        if b.get(i) == Some(&b'-') {
            plain = false;
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
            }
            _ => return Err(()),
        }
        if b.get(i) == Some(&b'.') {
            plain = false;
            i += 1;
            let d = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == d {
                return Err(());
            }
        }
        let mut exponent = false;
        if matches!(b.get(i), Some(b'e' | b'E')) {
            plain = false;
            exponent = true;
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let d = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == d {
                return Err(());
            }
        }
        // Only an exponent or hundreds of digits can leave f64's range; serde_json refuses
        // those, so ask it (rare).
        if (exponent || i - start > 300) && serde_json::from_slice::<f64>(&b[start..i]).is_err() {
            return Err(());
        }
        self.pos = i;
        Ok((start, i, plain))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::model::{Body, Exchange, Header, InputFormat, Request, Response, SourceRef};
    use crate::sanitize::{BodyContent, BodyLimits, SanitizerConfig};

    /// The tree-based sanitizer the streaming one replaced (parse into a `Value`, walk it,
    /// rename keys after the walk), kept as the reference the walker must agree with.
    fn tree(s: &Sanitizer, v: &mut Value, stats: &mut SanitizeStats) {
        match v {
            Value::String(t) => {
                if let Cow::Owned(new) = s.text(t, stats) {
                    *t = new;
                }
            }
            Value::Number(n) => {
                if let Some(u) = n.as_u64().filter(|u| *u >= 10_000_000_000) {
                    let digits = u.to_string();
                    if let Cow::Owned(new) = s.text(&digits, stats) {
                        *v = Value::String(new);
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    tree(s, item, stats);
                }
            }
            Value::Object(map) => {
                let mut renames = Vec::new();
                for (key, value) in map.iter_mut() {
                    match s.field_kind(key) {
                        Some(kind) if !value.is_null() => {
                            stats.add(kind);
                            *value = Value::String(kind.marker().to_string());
                        }
                        _ => tree(s, value, stats),
                    }
                    if let Cow::Owned(new_key) = s.text(key, stats) {
                        renames.push((key.clone(), new_key));
                    }
                }
                for (old, new) in renames {
                    if let Some(value) = map.remove(&old) {
                        map.insert(new, value);
                    }
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl";

    /// Valid secrets of every type (each must be replaced wherever it sits).
    const SENSITIVE: &[&str] = &[
        "4111 1111 1111 1111",
        "5555-5555-5555-4444",
        "4111111111111111",
        "529.982.247-25",
        "52998224725",
        "11.222.333/0001-81",
        "12ABC34501DE35",
        "ana.silva@example.com",
        "ana%40example.com",
        "+55 11 98765-4321",
        "(11) 98765-4321",
        JWT,
        "password=hunter2",
        "api_key: abc123",
    ];

    /// Things that look close and must survive.
    const LOOKALIKES: &[&str] = &[
        "ORD-2026-000123",
        "1763000000000",
        "4111 1111 1111 1112",
        "529.982.247-26",
        "3f2a8b1c-1d2e-4f3a-8b9c-0d1e2f3a4b5c",
        "2026-11-20T10:00:00Z",
        "notebook cabo monitor",
        "",
    ];

    const KEYS: &[&str] = &[
        "password",
        "user_pwd",
        "Passwd",
        "api_key",
        "accessToken",
        "client_secret",
        "ssn",
        "name",
        "sku",
        "description",
        "ana.silva@example.com",
        "52998224725",
    ];

    fn string() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(SENSITIVE).prop_map(String::from),
            proptest::sample::select(LOOKALIKES).prop_map(String::from),
            (
                proptest::sample::select(LOOKALIKES),
                proptest::sample::select(SENSITIVE),
                "[ -~]{0,6}",
            )
                .prop_map(|(a, b, c)| format!("{a} {b}{c}")),
            // Any text: quotes, backslashes, control characters, non-ASCII (escaped on output).
            any::<String>(),
        ]
    }

    fn number() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            proptest::sample::select(
                &[
                    52_998_224_725u64,
                    4_111_111_111_111_111,
                    11_222_333_000_181,
                    1_763_000_000_000,
                    10_000_000_000,
                    9_999_999_999,
                ][..]
            )
            .prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(KEYS).prop_map(String::from),
            "[a-z_]{1,10}",
            // Renamed keys never collide with a literal marker key in these documents: the
            // tree renamed after its walk, the walker renames in place, and only such a
            // collision could tell them apart.
            any::<String>().prop_filter("no marker keys", |k| !k.starts_with("SANITIZED")),
        ]
    }

    fn document() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            number(),
            string().prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(key(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn sanitizers() -> &'static [Sanitizer; 2] {
        static S: std::sync::LazyLock<[Sanitizer; 2]> = std::sync::LazyLock::new(|| {
            let fields = SanitizerConfig {
                sensitive_fields: vec!["SSN".into()],
                ..SanitizerConfig::default()
            };
            [
                Sanitizer::builtin(),
                Sanitizer::new(fields).expect("config"),
            ]
        });
        &S
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1500))]

        /// The walker gives the same document (as parsed JSON) and the same counts per type as
        /// the tree-based sanitizer, on compact and pretty input.
        #[test]
        fn streaming_equals_tree(doc in document(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&doc).expect("serialize")
            } else {
                serde_json::to_string(&doc).expect("serialize")
            };
            for s in sanitizers() {
                let mut expected: Value = serde_json::from_str(&text).expect("reparse");
                let mut tree_stats = SanitizeStats::default();
                tree(s, &mut expected, &mut tree_stats);
                let mut stats = SanitizeStats::default();
                let out = sanitize(s, text.clone().into_bytes(), &mut stats)
                    .expect("valid JSON takes the JSON path");
                let got: Value = serde_json::from_slice(&out).expect("output is JSON");
                prop_assert_eq!(&got, &expected);
                prop_assert_eq!(&stats, &tree_stats);
                // Compact: no whitespace outside strings.
                prop_assert_eq!(compact_len(&out), out.len());
            }
        }

        /// On any bytes, the walker accepts exactly what serde_json accepts; a refused input
        /// comes back unchanged with nothing counted.
        #[test]
        fn validity_matches_serde_json(
            doc in document(),
            cut in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            byte in prop_oneof![
                proptest::sample::select(&b"{}[],:\"\\ \t\n0-.eE+tfnu\x00\x1f\xff"[..]),
                any::<u8>(),
            ],
            how in 0u8..5,
        ) {
            let mut bytes = serde_json::to_vec(&doc).expect("serialize");
            let i = at.index(bytes.len() + 1);
            match how {
                0 => bytes.truncate(cut.index(bytes.len() + 1)),
                1 => bytes.insert(i, byte),
                2 if i < bytes.len() => bytes[i] = byte,
                3 if i < bytes.len() => { bytes.remove(i); }
                _ => bytes.push(byte),
            }
            let serde_ok = serde_json::from_slice::<Value>(&bytes).is_ok();
            let mut stats = SanitizeStats::default();
            match sanitize(&sanitizers()[0], bytes.clone(), &mut stats) {
                Ok(_) => prop_assert!(serde_ok, "walker accepted what serde_json refuses"),
                Err(back) => {
                    prop_assert!(!serde_ok, "walker refused what serde_json accepts");
                    prop_assert_eq!(back, bytes);
                    prop_assert_eq!(stats, SanitizeStats::default());
                }
            }
        }

        /// A JSON body that does not parse (cut short, or with garbage around it) falls back
        /// to the text rules: no panic, and no secret survives whole.
        #[test]
        fn malformed_json_bodies_take_the_text_path(
            doc in document(),
            secrets in proptest::collection::vec(proptest::sample::select(SENSITIVE), 1..4),
            password in "[a-z0-9]{12}",
            how in 0u8..3,
            cut in any::<prop::sample::Index>(),
        ) {
            let mut members = serde_json::Map::new();
            members.insert("doc".into(), doc);
            members.insert("password".into(), Value::String(format!("pw-{password}")));
            for (i, secret) in secrets.iter().enumerate() {
                members.insert(format!("field{i}"), Value::String((*secret).to_string()));
            }
            let text = serde_json::to_string(&Value::Object(members)).expect("serialize");
            let broken = match how {
                0 => text[..text.floor_char_boundary(cut.index(text.len()))].to_string(),
                1 => format!("{text}}}"),
                _ => format!("x{text}"),
            };
            prop_assume!(!broken.is_empty() && serde_json::from_str::<Value>(&broken).is_err());
            let ex = Exchange {
                source: SourceRef {
                    format: InputFormat::Jsonl,
                    file: "t".into(),
                    position: String::new(),
                },
                captured_at: None,
                request: Request {
                    method: "POST".into(),
                    host: None,
                    path: "/".into(),
                    query: Vec::new(),
                    headers: vec![Header::new("Content-Type", "application/json")],
                    body: Body::complete(broken.clone().into_bytes()),
                },
                response: Response { status: 200, headers: Vec::new(), body: Body::complete(Vec::new()) },
            };
            let mut stats = SanitizeStats::default();
            let clean = sanitizers()[0].sanitize(
                ex,
                &BodyLimits { max_body: 1 << 20 },
                &mut stats,
            );
            let BodyContent::Text(out) = &clean.request_body().content else {
                return Err(TestCaseError::fail("malformed JSON must be kept as text"));
            };
            for secret in SENSITIVE {
                // Every whole secret standing as a string value (a secret cut in half by the
                // truncation is no longer the secret; one glued to letters is a look-alike).
                let quoted = format!("\"{secret}\"");
                if broken.contains(&quoted) {
                    prop_assert!(!out.contains(&quoted), "{} survived in {}", secret, out);
                }
            }
            if broken.contains(&format!("pw-{password}\"")) {
                prop_assert!(!out.contains(&format!("pw-{password}")), "password survived");
            }
        }
    }

    /// Bytes outside strings that are whitespace.
    fn compact_len(out: &[u8]) -> usize {
        let mut n = 0;
        let mut in_str = false;
        let mut esc = false;
        for &b in out {
            if in_str {
                if esc {
                    esc = false;
                } else if b == b'\\' {
                    esc = true;
                } else if b == b'"' {
                    in_str = false;
                }
                n += 1;
            } else if b == b'"' {
                in_str = true;
                n += 1;
            } else if !matches!(b, b' ' | b'\n' | b'\t' | b'\r') {
                n += 1;
            }
        }
        n
    }

    /// Names are cached per document by slot: hundreds of distinct names (every slot taken
    /// over and over) never let a password member through, nor replace a plain one.
    #[test]
    fn member_name_cache_decides_by_the_whole_name() {
        let mut doc = String::from("[");
        for i in 0..200 {
            doc.push_str(&format!(
                r#"{{"k{i}":1,"password":"p{i}","Password":"q{i}","passwordx{i}":"r{i}","k{i}x":"v{i}","pwdk{i}":null}},"#
            ));
        }
        doc.pop();
        doc.push(']');
        let mut stats = SanitizeStats::default();
        let out = sanitize(&sanitizers()[0], doc.into_bytes(), &mut stats).expect("json");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(stats.get("password"), 600);
        for i in 0..200 {
            for raw in [
                format!("\"p{i}\""),
                format!("\"q{i}\""),
                format!("\"r{i}\""),
            ] {
                assert!(!text.contains(&raw), "{raw} survived");
            }
            assert!(text.contains(&format!("\"k{i}x\":\"v{i}\"")));
            assert!(text.contains(&format!("\"pwdk{i}\":null")));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// The name cache a sanitizer keeps across documents changes nothing: a run of
        /// documents through one sanitizer gives what each gives through a fresh clone
        /// (whose cache is empty), output and counts, also with configured field names.
        #[test]
        fn name_cache_across_documents_equals_fresh_decisions(
            docs in proptest::collection::vec((document(), any::<bool>()), 1..6),
        ) {
            for s in sanitizers() {
                let shared = s.clone();
                for (doc, pretty) in &docs {
                    let text = if *pretty {
                        serde_json::to_string_pretty(doc).expect("serialize")
                    } else {
                        serde_json::to_string(doc).expect("serialize")
                    };
                    let mut warm_stats = SanitizeStats::default();
                    let warm = sanitize(&shared, text.clone().into_bytes(), &mut warm_stats);
                    let mut cold_stats = SanitizeStats::default();
                    let cold = sanitize(&s.clone(), text.into_bytes(), &mut cold_stats);
                    prop_assert_eq!(warm, cold);
                    prop_assert_eq!(warm_stats, cold_stats);
                }
            }
        }
    }

    /// Names are compared in full by the cross-document cache: names that differ only in
    /// their last byte, at the lengths where the cache's words split (16, 32) and past its
    /// limit, at the very end of a document too, each get their own decision, document
    /// after document.
    #[test]
    fn name_cache_tells_names_apart_by_every_byte() {
        let s = Sanitizer::builtin();
        for len in [1usize, 7, 8, 15, 16, 17, 31, 32, 33, 40] {
            let stem = "n".repeat(len.saturating_sub(3));
            let plain = format!("{stem}pwx");
            let secret = format!("{stem}pwd");
            for round in 0..3 {
                for (a, b) in [(&plain, &secret), (&secret, &plain)] {
                    let doc = format!(
                        r#"{{"x":[{{"{a}":"v{round}"}},{{"{b}":"v{round}"}}],"{a}":"w","{b}":"w"}}"#
                    );
                    let mut stats = SanitizeStats::default();
                    let out = sanitize(&s, doc.into_bytes(), &mut stats).expect("json");
                    let out = String::from_utf8(out).expect("utf8");
                    assert_eq!(stats.get("password"), 2, "{out}");
                    assert!(out.contains(&format!(r#""{plain}":"v{round}""#)), "{out}");
                    assert!(
                        out.contains(&format!(r#""{secret}":"SANITIZED_PASSWORD""#)),
                        "{out}"
                    );
                    assert!(out.contains(&format!(r#""{plain}":"w""#)), "{out}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A member name found by its token's first sixteen bytes (`NameCache::get_token`)
        /// is exactly what scanning the token and looking its bytes up finds: whenever the
        /// fast lookup answers, and it answers for every held name of up to 15 bytes with
        /// sixteen bytes of input after the quote. Names are put as the walker puts them (only
        /// tokens without escapes that scan cleanly); the input is built from those names,
        /// near misses, quotes, backslashes, control and non-ASCII bytes, at every offset.
        #[test]
        fn name_token_lookup_equals_scan_then_lookup(
            names in proptest::collection::vec("[a-dé_\u{1}\\\\0-2]{0,18}", 1..12),
            parts in proptest::collection::vec(
                prop_oneof![
                    (0usize..12, any::<bool>()).prop_map(|(i, q)| (Some(i), q, String::new())),
                    "[a-d\"\\\\:,é\u{1}]{0,4}".prop_map(|s| (None, false, s)),
                ],
                0..16,
            ),
        ) {
            let mut cache = NameCache::default();
            let mut r = Untouched;
            for (i, name) in names.iter().enumerate() {
                let token = format!("\"{name}\"");
                let mut w = Walker {
                    input: token.as_bytes(),
                    pos: 0,
                    out: Vec::new(),
                    copied: 0,
                    edited: false,
                    changed: false,
                    r: &mut r,
                    names: &mut NameCache::default(),
                };
                if let Ok((s, e, Some(_))) = w.string_token() {
                    let value = (i % 2 == 0).then_some(Kind::Password);
                    cache.put(token.as_bytes(), s + 1, e - 1, value);
                }
            }
            // Names (quoted or not, so a quote may open any of them), and other bytes.
            let mut input = String::new();
            for (i, quoted, other) in parts {
                match i {
                    Some(i) => {
                        let name = &names[i % names.len()];
                        if quoted {
                            input.push_str(&format!("\"{name}\""));
                        } else {
                            input.push_str(name);
                        }
                    }
                    None => input.push_str(&other),
                }
            }
            let input = input.as_bytes();
            for p in (0..input.len()).filter(|&p| input[p] == b'"') {
                let fast = cache.get_token(input, p);
                let mut names = NameCache::default();
                let mut w = Walker {
                    input,
                    pos: p,
                    out: Vec::new(),
                    copied: 0,
                    edited: false,
                    changed: false,
                    r: &mut r,
                    names: &mut names,
                };
                let slow = match w.string_token() {
                    Ok((s, e, Some(_))) => cache.get(input, s + 1, e - 1).map(|v| (e, v)),
                    _ => None,
                };
                if fast.is_some() {
                    prop_assert_eq!(fast, slow, "{:?} at {}", String::from_utf8_lossy(input), p);
                }
                if let Some((e, _)) = slow
                    && e - p - 2 <= 15
                    && p + 17 <= input.len()
                {
                    prop_assert_eq!(fast, slow, "{:?} at {}", String::from_utf8_lossy(input), p);
                }
            }
        }
    }

    #[test]
    fn nesting_limit_matches_serde_json() {
        for depth in 120..135 {
            for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
                let doc = format!("{}1{}", open.repeat(depth), close.repeat(depth));
                let serde_ok = serde_json::from_str::<Value>(&doc).is_ok();
                let mut stats = SanitizeStats::default();
                let ours = sanitize(&sanitizers()[0], doc.into_bytes(), &mut stats).is_ok();
                assert_eq!(ours, serde_ok, "depth {depth} {open}");
            }
        }
    }

    #[test]
    fn edge_cases_match_serde_json() {
        for doc in [
            "1e400",
            "-1e400",
            "1e308",
            "[1.5e-400]",
            "\"\\ud800\"",
            "\"\\ud83d\\ude00\"",
            "\"\\u00e9\"",
            "\"\\x\"",
            "01",
            "-",
            "1.",
            ".5",
            "+1",
            "[1,]",
            "{\"a\":1,}",
            "",
            " ",
            "nul",
            "true false",
            "\"a\tb\"",
            "{\"a\" 1}",
            "[\"\\\"\"]",
            "-0",
            "0e0",
            "\u{feff}{}",
            "[0]",
            "[00]",
            "[0.5,1e3,12E-2,7]",
            "[12.]",
            "[12e]",
            "{\"a\":123,\"b\":-0,\"c\":17630000000001}",
            "18446744073709551616",
            "99999999999999999999999999",
        ] {
            let serde_ok = serde_json::from_str::<Value>(doc).is_ok();
            let mut stats = SanitizeStats::default();
            let ours = sanitize(&sanitizers()[0], doc.as_bytes().to_vec(), &mut stats);
            assert_eq!(ours.is_ok(), serde_ok, "{doc:?}");
            if let Ok(out) = ours {
                assert_eq!(
                    serde_json::from_slice::<Value>(&out).expect("json"),
                    serde_json::from_str::<Value>(doc).expect("json"),
                    "{doc:?}"
                );
            }
        }
    }

    /// UTF-8 is checked per string, not over the whole document first: every invalid
    /// sequence in a key or value (short, long, escaped) is still refused, and a non-ASCII
    /// byte outside a string too.
    #[test]
    fn invalid_utf8_is_refused_where_serde_json_refuses_it() {
        let bad: &[&[u8]] = &[
            b"\xff",
            b"\xc3",
            b"\xc0\xaf",
            b"\xed\xa0\x80",
            b"\xe9t\xe9",
            b"\xf4\x90\x80\x80",
        ];
        let good: &[&[u8]] = &["é".as_bytes(), "日本".as_bytes(), "😀".as_bytes()];
        for (seq, valid) in bad
            .iter()
            .map(|b| (b, false))
            .chain(good.iter().map(|g| (g, true)))
        {
            for pad in [0usize, 5, 14, 15, 16, 17, 30] {
                let filler = "a".repeat(pad);
                for (before, after) in [
                    ("[\"", "\"]"),
                    ("{\"", "\":1}"),
                    ("{\"k\":\"", "\"}"),
                    ("[\"\\n", "\"]"),
                    ("[\"1234", "\"]"),
                    ("[1,", "]"),
                ] {
                    let mut doc = before.as_bytes().to_vec();
                    doc.extend_from_slice(filler.as_bytes());
                    doc.extend_from_slice(seq);
                    doc.extend_from_slice(filler.as_bytes());
                    doc.extend_from_slice(after.as_bytes());
                    let serde_ok = serde_json::from_slice::<Value>(&doc).is_ok();
                    let mut stats = SanitizeStats::default();
                    let ours = sanitize(&sanitizers()[0], doc.clone(), &mut stats);
                    assert_eq!(ours.is_ok(), serde_ok, "{doc:?}");
                    if before != "[1," {
                        assert_eq!(serde_ok, valid, "{doc:?}");
                    }
                    if let Ok(out) = ours {
                        assert!(std::str::from_utf8(&out).is_ok());
                    }
                }
            }
        }
    }

    #[test]
    fn sensitive_members_are_replaced_whole_and_the_rest_is_copied() {
        let input = br#" { "user": {"password": {"a": [1, "x"]}, "pwd": null},
            "note": "mail ana.silva@example.com", "n": 52998224725, "big": 1763000000000,
            "ok": "plain \u00e9 text" } "#;
        let mut stats = SanitizeStats::default();
        let out = sanitize(&sanitizers()[0], input.to_vec(), &mut stats).expect("json");
        assert_eq!(
            std::str::from_utf8(&out).expect("utf8"),
            r#"{"user":{"password":"SANITIZED_PASSWORD","pwd":null},"note":"mail SANITIZED_EMAIL","n":"SANITIZED_DOCUMENT","big":1763000000000,"ok":"plain \u00e9 text"}"#
        );
        assert_eq!(stats.get("password"), 1);
        assert_eq!(stats.get("email"), 1);
        assert_eq!(stats.get("document"), 1);
        // Already compact and nothing to change: handed back as it is.
        let clean = br#"{"a":[1,2,{"b":"c"}]}"#.to_vec();
        let ptr = clean.as_ptr();
        let out = sanitize(&sanitizers()[0], clean, &mut stats).expect("json");
        assert_eq!(out.as_ptr(), ptr);
    }

    struct Untouched;

    impl Rewrite for Untouched {
        fn key(&mut self, _: &[u8], _: Option<u8>) -> KeyAction {
            KeyAction {
                key: None,
                value: None,
            }
        }
        fn string(&mut self, _: &[u8], _: Option<u8>) -> Option<String> {
            None
        }
        fn integer(&mut self, _: &[u8]) -> Option<String> {
            None
        }
        fn replaced(&mut self, _: Kind) {}
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The sixteen-bytes-at-a-time token scan gives the same range, class bits and
        /// errors as the byte-by-byte scan, for strings of any length and content (quotes,
        /// escapes, control characters, digits and every byte a rule needs, non-ASCII),
        /// followed by anything, at any offset.
        #[test]
        fn chunked_string_scan_equals_the_byte_scan(
            body in prop_oneof![
                "[a-z ]{0,40}".prop_map(String::into_bytes),
                "[a-zA-Z0-9 @%:=J.-]{0,40}".prop_map(String::into_bytes),
                "[a-z\"\\\\\u{1}\u{1f}0-9]{0,40}".prop_map(String::into_bytes),
                any::<String>().prop_map(String::into_bytes),
                // Not UTF-8: the scans must refuse the same strings.
                proptest::collection::vec(any::<u8>(), 0..40),
            ],
            pad in 0usize..20,
            tail in "[a-z\",:}\\]\\\\ ]{0,24}",
        ) {
            let mut input = " ".repeat(pad).into_bytes();
            input.push(b'"');
            input.extend_from_slice(&body);
            input.extend_from_slice(tail.as_bytes());
            let mut r = Untouched;
            let mut w = Walker {
                input: &input,
                pos: pad,
                out: Vec::new(),
                copied: 0,
                edited: false,
                changed: false,
                r: &mut r,
                names: &mut NameCache::default(),
            };
            let chunked = w.string_token();
            let chunked_pos = w.pos;
            w.pos = pad;
            let bytewise = w.string_token_general(pad);
            prop_assert_eq!(chunked, bytewise);
            if chunked.is_ok() {
                prop_assert_eq!(chunked_pos, w.pos);
            }
        }
    }

    proptest! {
        /// The length-and-compare test equals parsing, on plain integers around u64::MAX.
        #[test]
        fn fits_u64_equals_parse(
            n in prop_oneof![
                any::<u64>().prop_map(|n| n.to_string()),
                "[1-9][0-9]{17,21}",
                Just("18446744073709551615".to_string()),
                Just("18446744073709551616".to_string()),
                Just("0".to_string()),
            ]
        ) {
            prop_assert_eq!(fits_u64(n.as_bytes()), n.parse::<u64>().is_ok(), "{}", n);
        }
    }
}
