//! The text rules, applied to bytes (so binary bodies are covered too).
//!
//! Each rule finds candidates (with a regex, or for the numeric and email rules with the
//! hand-written finders of `scan`) and validates them (check digits, boundaries, JWT structure) before
//! replacing. Rules run in a fixed order; replacement markers contain
//! no digits, `@` or `eyJ`, so a later rule never re-matches an earlier rule's output.

use std::borrow::Cow;

use base64::Engine as _;
use memchr::memmem;
use regex::bytes::Regex;

use super::checks::{card_valid, cnpj_valid, cpf_valid};
use super::scan::{self, Finder, Numeric};
use super::{Kind, SanitizeStats};

/// A custom pattern from the configuration file.
#[derive(Clone)]
pub(crate) struct CustomRule {
    pub(crate) index: usize,
    pub(crate) regex: Regex,
    pub(crate) replacement: Vec<u8>,
}

/// All compiled text rules.
#[derive(Clone)]
pub(crate) struct TextRules {
    jwt: Regex,
    keyed: Regex,
    eyj: memmem::Finder<'static>,
    pub(crate) custom: Vec<CustomRule>,
}

/// The text with some ranges replaced, built as the replacements come (left to right, not
/// overlapping): nothing is allocated until the first one.
struct Splice<'t> {
    t: &'t [u8],
    out: Vec<u8>,
    /// `t[..pos]` is accounted for in `out`.
    pos: usize,
    any: bool,
}

impl<'t> Splice<'t> {
    fn new(t: &'t [u8]) -> Self {
        Splice {
            t,
            out: Vec::new(),
            pos: 0,
            any: false,
        }
    }

    /// Replaces `t[start..end]` with `with` (`start` at or after the previous range's end).
    fn put(&mut self, start: usize, end: usize, with: &[u8]) {
        if !self.any {
            self.any = true;
            self.out.reserve(self.t.len() + 16);
        }
        self.out.extend_from_slice(&self.t[self.pos..start]);
        self.out.extend_from_slice(with);
        self.pos = end;
    }

    /// The text with every replacement; `None` when there was none.
    fn finish(mut self) -> Option<Vec<u8>> {
        if !self.any {
            return None;
        }
        self.out.extend_from_slice(&self.t[self.pos..]);
        Some(self.out)
    }
}

#[allow(clippy::expect_used)] // the patterns are constants, covered by every test
fn re(p: &str) -> Regex {
    Regex::new(p).expect("built-in pattern compiles")
}

fn alnum(b: Option<&u8>) -> bool {
    b.is_some_and(u8::is_ascii_alphanumeric)
}

fn digit(b: Option<&u8>) -> bool {
    b.is_some_and(u8::is_ascii_digit)
}

impl TextRules {
    pub(crate) fn new(custom: Vec<CustomRule>) -> Self {
        TextRules {
            eyj: memmem::Finder::new(b"eyJ").into_owned(),
            jwt: re(r"eyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"),
            // `password=…`, `"api_key": "…"`, `token: …` in text, form-like strings and
            // truncated JSON (which cannot be parsed, so structure-aware rules cannot see it).
            keyed: re(
                r#"(?i)([A-Za-z0-9_\-]*(?:password|passwd|pwd|token|secret|api_?key|access_?key|private_?key)[A-Za-z0-9_\-]*"?\s*[:=]\s*)("(?:[^"\\]|\\.)*"?|[^\s&,;"}<>]+)"#,
            ),
            custom,
        }
    }

    /// True when a string with these [`classify`] bits is never changed (no custom pattern,
    /// and none of the bytes a built-in rule needs): callers may skip it.
    pub(crate) fn leaves_class_alone(&self, class: u8) -> bool {
        self.custom.is_empty() && class & G_ANY_RULE == 0
    }

    /// Applies every rule. Returns `None` when nothing was replaced.
    ///
    /// Most strings in a body (words, ids, statuses, dates) can hold nothing sensitive; one
    /// branch-free pass over the bytes (vectorized by the compiler) says so before any regex
    /// runs, and strings of bare digits are decided by the check digits alone. Custom patterns
    /// can match anything, so with them every string takes the general path.
    pub(crate) fn apply(&self, input: &[u8], stats: &mut SanitizeStats) -> Option<Vec<u8>> {
        self.apply_classified(input, None, stats)
    }

    /// [`Self::apply`] for a string whose [`classify`] bits the caller already has (the JSON
    /// walker computes them while checking the string's bytes).
    pub(crate) fn apply_classified(
        &self,
        input: &[u8],
        class: Option<u8>,
        stats: &mut SanitizeStats,
    ) -> Option<Vec<u8>> {
        if !self.custom.is_empty() {
            return self.apply_general(input, stats);
        }
        let g = class.unwrap_or_else(|| classify(input));
        if g & G_ANY_RULE == 0 {
            return None;
        }
        if g & G_NON_DIGIT == 0 {
            return bare_digits(input, stats);
        }
        if g & (G_JWT | G_AT | G_KV) == 0 && too_few_digits(input) {
            // Only the numeric rules could apply, and none can match.
            return None;
        }
        self.apply_with_class(input, g, stats)
    }

    /// Every rule, in order, behind the per-rule shape checks.
    pub(crate) fn apply_general(&self, input: &[u8], stats: &mut SanitizeStats) -> Option<Vec<u8>> {
        self.apply_with_class(input, classify(input), stats)
    }

    /// [`Self::apply_general`] for a string with these [`classify`] bits: the bits already
    /// say which of the JWT, email and keyed rules need a closer look, so one pass over the
    /// bytes is left for the numeric rules' shape.
    fn apply_with_class(&self, input: &[u8], g: u8, stats: &mut SanitizeStats) -> Option<Vec<u8>> {
        let mut cur: Cow<[u8]> = Cow::Borrowed(input);
        let mut changed = false;
        macro_rules! step {
            ($f:expr) => {
                if let Some(next) = $f(&*cur, stats) {
                    cur = Cow::Owned(next);
                    changed = true;
                }
            };
        }
        if g & G_JWT != 0 && self.eyj.find(input).is_some() {
            step!(|t: &[u8], s: &mut SanitizeStats| self.jwt_rule(t, s));
        }
        if g & G_AT != 0 {
            // The finder jumps from `@`/`%` to `@`/`%`: without one it costs a memchr.
            step!(|t: &[u8], s: &mut SanitizeStats| self.email_rule(t, s));
        }
        for rule in &self.custom {
            step!(
                |t: &[u8], s: &mut SanitizeStats| replace_each(&rule.regex, t, |_, _, _| {
                    s.add(Kind::Custom(rule.index));
                    Some(rule.replacement.as_slice())
                })
            );
        }
        // The keyed rule needs a `:` or `=` after the key word.
        if g & G_KV != 0 && key_word_kind(&cur).is_some() {
            step!(|t: &[u8], s: &mut SanitizeStats| self.keyed_rule(t, s));
        }
        // Replacements above only remove digits, so the shape still bounds what the numeric
        // rules can find; strings that cannot hold a document, phone or card skip them. Which
        // numeric rules run is decided on the text as it is before any of them (a marker's
        // letters never join a later numeric match).
        if g & G_DIGIT != 0 {
            let hits = match &cur {
                // Nothing replaced: one pass over the input finds what the finders would
                // (without the shape check: a match implies it; the one exception, an
                // international phone of fewer than 8 digits, the phone rule refuses).
                Cow::Borrowed(t) => scan::numeric(t),
                Cow::Owned(before) if Shape::of(input).may_hold_numbers() => scan::numeric(before),
                Cow::Owned(_) => Numeric::default(),
            };
            if hits.none() {
                return changed.then(|| cur.into_owned());
            }
            // The first matches are known while the text is still the one `hits` describes.
            let mut fresh = true;
            macro_rules! numeric_step {
                ($f:expr) => {
                    if let Some(next) = $f(&*cur, fresh, stats) {
                        cur = Cow::Owned(next);
                        changed = true;
                        #[allow(unused_assignments)] // not read after the last step
                        {
                            fresh = false;
                        }
                    }
                };
            }
            let known = |fresh: bool, m: Option<(usize, usize)>| {
                if fresh {
                    First::Known(m)
                } else {
                    First::Search
                }
            };
            if hits.doc.is_some() {
                numeric_step!(
                    |t: &[u8], f: bool, s: &mut SanitizeStats| self.doc_formatted_rule(
                        t,
                        known(f, hits.doc),
                        s
                    )
                );
            }
            if hits.cnpj.is_some() {
                numeric_step!(
                    |t: &[u8], f: bool, s: &mut SanitizeStats| self.cnpj_alnum_rule(
                        t,
                        known(f, hits.cnpj),
                        s
                    )
                );
            }
            if hits.phone {
                numeric_step!(|t: &[u8], f: bool, s: &mut SanitizeStats| self.phone_rule(
                    t,
                    known(f, hits.intl),
                    s
                ));
            }
            if hits.run.is_some() {
                numeric_step!(
                    |t: &[u8], f: bool, s: &mut SanitizeStats| self.digit_run_rule(
                        t,
                        known(f, hits.run),
                        s
                    )
                );
            }
        }
        if changed {
            Some(cur.into_owned())
        } else {
            None
        }
    }

    fn jwt_rule(&self, t: &[u8], s: &mut SanitizeStats) -> Option<Vec<u8>> {
        replace_each(&self.jwt, t, |m, _, _| {
            let mut parts = m.split(|b| *b == b'.');
            let header = parts.next()?;
            let payload = parts.next()?;
            if is_b64_json_object(header) && is_b64_json_object(payload) {
                s.add(Kind::Jwt);
                Some(b"SANITIZED_JWT")
            } else {
                None
            }
        })
    }

    fn email_rule(&self, t: &[u8], s: &mut SanitizeStats) -> Option<Vec<u8>> {
        find_each(scan::email, t, First::Search, |_, _, _| {
            s.add(Kind::Email);
            Some(b"SANITIZED_EMAIL")
        })
    }

    fn keyed_rule(&self, t: &[u8], s: &mut SanitizeStats) -> Option<Vec<u8>> {
        let mut out = Splice::new(t);
        for caps in self.keyed.captures_iter(t) {
            let (Some(key), Some(value)) = (caps.get(1), caps.get(2)) else {
                continue;
            };
            let v = value.as_bytes();
            if v.starts_with(b"SANITIZED_") || v.starts_with(b"\"SANITIZED_") {
                continue;
            }
            let kind = if self.key_is_password(key.as_bytes()) {
                Kind::Password
            } else {
                Kind::Secret
            };
            let marker = kind.marker().as_bytes();
            s.add(kind);
            if v.first() == Some(&b'"') {
                out.put(value.start(), value.end(), b"\"");
                out.out.extend_from_slice(marker);
                out.out.push(b'"');
            } else {
                out.put(value.start(), value.end(), marker);
            }
        }
        out.finish()
    }

    fn doc_formatted_rule(&self, t: &[u8], first: First, s: &mut SanitizeStats) -> Option<Vec<u8>> {
        find_each(scan::doc_formatted, t, first, |m, start, end| {
            let before = start.checked_sub(1).and_then(|i| t.get(i));
            if alnum(before) || before == Some(&b'.') || alnum(t.get(end)) {
                return None;
            }
            // A match is 14 or 18 bytes: at most 14 alphanumerics (more: neither check).
            let mut buf = [0u8; 18];
            let mut n = 0;
            for &b in m.iter().filter(|b| b.is_ascii_alphanumeric()) {
                buf[n] = b;
                n += 1;
            }
            let bare = &buf[..n];
            if cpf_valid(bare) || cnpj_valid(bare) {
                s.add(Kind::Document);
                Some(b"SANITIZED_DOCUMENT")
            } else {
                None
            }
        })
    }

    fn cnpj_alnum_rule(&self, t: &[u8], first: First, s: &mut SanitizeStats) -> Option<Vec<u8>> {
        find_each(scan::cnpj_alnum, t, first, |m, start, end| {
            let before = start.checked_sub(1).and_then(|i| t.get(i));
            if alnum(before) || alnum(t.get(end)) || m.iter().all(u8::is_ascii_digit) {
                return None;
            }
            if cnpj_valid(m) {
                s.add(Kind::Document);
                Some(b"SANITIZED_DOCUMENT")
            } else {
                None
            }
        })
    }

    /// `intl`: where the first international phone is, if known.
    fn phone_rule(&self, t: &[u8], intl: First, s: &mut SanitizeStats) -> Option<Vec<u8>> {
        let first = find_each(scan::phone_intl, t, intl, |m, start, end| {
            let before = start.checked_sub(1).and_then(|i| t.get(i));
            let digits = m.iter().filter(|b| b.is_ascii_digit()).count();
            if alnum(before) || digit(t.get(end)) || !(8..=15).contains(&digits) {
                return None;
            }
            s.add(Kind::Phone);
            Some(b"SANITIZED_PHONE")
        });
        let t2 = first.as_deref().unwrap_or(t);
        let second = find_each(scan::phone_br, t2, First::Search, |_, start, end| {
            let before = start.checked_sub(1).and_then(|i| t2.get(i));
            let after = t2.get(end);
            if alnum(before)
                || matches!(before, Some(b'-' | b'.' | b'/' | b':' | b'+'))
                || alnum(after)
                || matches!(after, Some(b'-' | b'/' | b':'))
            {
                return None;
            }
            s.add(Kind::Phone);
            Some(b"SANITIZED_PHONE")
        });
        second.or(first)
    }

    fn digit_run_rule(&self, t: &[u8], first: First, s: &mut SanitizeStats) -> Option<Vec<u8>> {
        let mut out = Splice::new(t);
        for (start, end) in matches(scan::digit_run, t, first) {
            let at = |i: Option<usize>| i.and_then(|i| t.get(i));
            let before = at(start.checked_sub(1));
            let after = t.get(end);
            // A dash/space-grouped number glued to letters, dashes or a decimal point is part
            // of a larger token (a UUID's groups, a version string), not a card written out.
            // A full stop ending a sentence is fine.
            let glued_before = alnum(before)
                || before == Some(&b'-')
                || (before == Some(&b'.') && digit(at(start.checked_sub(2))));
            let glued_after = alnum(after)
                || after == Some(&b'-')
                || (after == Some(&b'.') && alnum(t.get(end + 1)));
            analyse_run(
                &t[start..end],
                start,
                [!glued_before, !glued_after],
                &mut out,
                s,
            );
        }
        out.finish()
    }
}

/// A digit (the numeric rules).
pub(crate) const G_DIGIT: u8 = 1;
/// A `J`: every JWT starts with `eyJ`.
const G_JWT: u8 = 2;
/// `@` or `%` (emails, also `%40`-encoded).
const G_AT: u8 = 4;
/// `:` or `=` (the keyed rule).
const G_KV: u8 = 8;
pub(crate) const G_NON_DIGIT: u8 = 16;
/// Some built-in rule needs one of these bytes; a string with none of them is never changed
/// by the built-in rules.
pub(crate) const G_ANY_RULE: u8 = G_DIGIT | G_JWT | G_AT | G_KV;

/// A raw control character (refused inside JSON strings).
pub(crate) const G_CONTROL: u8 = 32;

/// A byte of a multi-byte UTF-8 sequence (or not UTF-8 at all): the JSON walker validates
/// only the strings holding one, instead of the whole document up front.
pub(crate) const G_HIGH: u8 = 64;

/// Which of the bytes the built-in rules need occur at all (`G_*` bits). Every built-in rule
/// needs one of them: numeric rules a digit, JWTs a `J`, emails `@`/`%`, the keyed rule
/// `:`/`=`.
pub(crate) fn classify(t: &[u8]) -> u8 {
    // A table lookup per byte, eight independent accumulators so the loads pipeline.
    let mut lanes = [0u8; 8];
    let mut chunks = t.chunks_exact(8);
    for chunk in &mut chunks {
        for (acc, &b) in lanes.iter_mut().zip(chunk) {
            *acc |= CLASS[usize::from(b)];
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(0u8, |m, &b| m | CLASS[usize::from(b)]);
    lanes.iter().fold(tail, |m, l| m | l)
}

/// `classify` bits of each byte.
pub(crate) static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = class(i as u8);
        i += 1;
    }
    t
};

const fn class(b: u8) -> u8 {
    let digit = b.wrapping_sub(b'0') < 10;
    let mut c = if digit { G_DIGIT } else { G_NON_DIGIT };
    if b == b'J' {
        c |= G_JWT;
    }
    if b == b'@' || b == b'%' {
        c |= G_AT;
    }
    if b == b':' || b == b'=' {
        c |= G_KV;
    }
    if b < 0x20 {
        c |= G_CONTROL;
    }
    if b >= 0x80 {
        c |= G_HIGH;
    }
    c
}

/// Fewer than 8 digits (every phone, document and card has more) and fewer than 14
/// characters of `0-9A-Z` (an alphanumeric CNPJ has 14): no numeric rule can replace
/// anything. Ids, SKUs, versions and short codes stop here.
fn too_few_digits(t: &[u8]) -> bool {
    let (digits, alnum) = t.iter().fold((0u32, 0u32), |(d, a), &b| {
        let digit = u32::from(b.is_ascii_digit());
        (d + digit, a + digit + u32::from(b.is_ascii_uppercase()))
    });
    digits < 8 && alnum < 14
}

/// Only ASCII digits: no JWT, email, keyed value, phone (those need `+`, spaces or
/// parentheses) or formatted document can be in it, and the digit-run rule sees one run
/// without separators: the whole string is a CPF, a CNPJ, a card or nothing.
fn bare_digits(t: &[u8], s: &mut SanitizeStats) -> Option<Vec<u8>> {
    // What `analyse_run` decides for a run without separators, without its buffers.
    let kind = if (t.len() == 11 && cpf_valid(t)) || (t.len() == 14 && cnpj_valid(t)) {
        Kind::Document
    } else if t.len() >= 11 && card_valid(t) {
        Kind::Card
    } else {
        return None;
    };
    s.add(kind);
    Some(kind.marker().as_bytes().to_vec())
}

/// Decides what a run of digits (with single space/dash separators) is.
fn analyse_run(
    run: &[u8],
    offset: usize,
    // Whether the run's left and right ends are free (not glued to a larger token).
    free: [bool; 2],
    out: &mut Splice<'_>,
    s: &mut SanitizeStats,
) {
    if run.iter().all(u8::is_ascii_digit) {
        let digits = run;
        let kind = if (digits.len() == 11 && cpf_valid(digits))
            || (digits.len() == 14 && cnpj_valid(digits))
        {
            Some(Kind::Document)
        } else if card_valid(digits) {
            Some(Kind::Card)
        } else {
            None
        };
        if let Some(kind) = kind {
            s.add(kind);
            out.put(offset, offset + run.len(), kind.marker().as_bytes());
        }
        return;
    }
    let digits: Vec<u8> = run.iter().copied().filter(u8::is_ascii_digit).collect();
    if free[0] && free[1] && card_valid(&digits) {
        s.add(Kind::Card);
        out.put(offset, offset + run.len(), b"SANITIZED_CARD");
        return;
    }
    // Groups of digits with their byte ranges and the separator that follows each.
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    for (i, b) in run.iter().enumerate() {
        if !b.is_ascii_digit() {
            groups.push((start, i));
            start = i + 1;
        }
    }
    groups.push((start, run.len()));
    // A card inside a longer run ("ref 1234 4111 1111 1111 1111"): only where the run is
    // split by spaces around the window, so dash-joined ids (UUID-like) are never cut apart.
    let mut i = 0;
    while i < groups.len() {
        let mut found = None;
        for j in (i..groups.len()).rev() {
            // Each end of the window is judged on its own: a card after an id glued to a
            // prefix ("ORD-2026-000123 4111 …") is still a card.
            let left_ok = if i == 0 {
                free[0]
            } else {
                run[groups[i].0 - 1] == b' '
            };
            let right_ok = if j + 1 == groups.len() {
                free[1]
            } else {
                run[groups[j].1] == b' '
            };
            if !left_ok || !right_ok || (i == 0 && j + 1 == groups.len()) {
                continue;
            }
            let window = &run[groups[i].0..groups[j].1];
            let wd: Vec<u8> = window.iter().copied().filter(u8::is_ascii_digit).collect();
            if card_valid(&wd) {
                found = Some(j);
                break;
            }
        }
        if let Some(j) = found {
            s.add(Kind::Card);
            out.put(
                offset + groups[i].0,
                offset + groups[j].1,
                b"SANITIZED_CARD",
            );
            i = j + 1;
        } else {
            i += 1;
        }
    }
}

/// Replaces every match for which `f` returns a replacement. `None` when nothing changed.
fn replace_each<'w>(
    re: &Regex,
    t: &[u8],
    mut f: impl FnMut(&[u8], usize, usize) -> Option<&'w [u8]>,
) -> Option<Vec<u8>> {
    let mut out = Splice::new(t);
    for m in re.find_iter(t) {
        if let Some(with) = f(m.as_bytes(), m.start(), m.end()) {
            out.put(m.start(), m.end(), with);
        }
    }
    out.finish()
}

/// Where a rule's first match is: found by its finder, or already known (what the finder
/// returns from offset 0).
#[derive(Clone, Copy)]
enum First {
    Search,
    Known(Option<(usize, usize)>),
}

/// All matches of `find` in `t`, left to right, the first one as `first` says.
fn matches(find: Finder, t: &[u8], first: First) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut next = match first {
        First::Search => find(t, 0),
        First::Known(m) => m,
    };
    std::iter::from_fn(move || {
        let (s, e) = next?;
        next = find(t, e);
        Some((s, e))
    })
}

/// [`replace_each`] for a hand-written finder.
fn find_each(
    find: Finder,
    t: &[u8],
    first: First,
    mut f: impl FnMut(&[u8], usize, usize) -> Option<&'static [u8]>,
) -> Option<Vec<u8>> {
    let mut out = Splice::new(t);
    for (start, end) in matches(find, t, first) {
        if let Some(with) = f(&t[start..end], start, end) {
            out.put(start, end, with);
        }
    }
    out.finish()
}

fn is_b64_json_object(part: &[u8]) -> bool {
    let trimmed: &[u8] = match part.iter().position(|b| *b == b'=') {
        Some(i) => &part[..i],
        None => part,
    };
    match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed) {
        Ok(bytes) => matches!(
            serde_json::from_slice::<serde_json::Value>(&bytes),
            Ok(serde_json::Value::Object(_))
        ),
        Err(_) => false,
    }
}

impl TextRules {
    /// What a key names: `Some(Kind::Password)` for password words (`password`, `passwd`,
    /// `pwd`, any case, anywhere in the key), `Some(Kind::Secret)` for secret words (`token`,
    /// `secret`, `api_key`, `access_key`, `private_key`, with `_`, `-` or nothing between),
    /// else `None`. One scan of the key.
    pub(crate) fn key_kind(&self, key: &[u8]) -> Option<Kind> {
        key_word_kind(key)
    }

    fn key_is_password(&self, key: &[u8]) -> bool {
        key_word_kind(key) == Some(Kind::Password)
    }
}

/// Whether `word` (lower-case ASCII letters and `_`/`-`) occurs in `t` starting at `start`
/// (which may lie before the start of `t`), letters compared case-insensitively.
#[inline(always)]
fn word_at(t: &[u8], start: usize, back: usize, word: &[u8]) -> bool {
    let Some(from) = start.checked_sub(back) else {
        return false;
    };
    t.get(from..from + word.len()).is_some_and(|hay| {
        hay.iter().zip(word).all(|(&h, &w)| {
            if w.is_ascii_lowercase() {
                h | 0x20 == w
            } else {
                h == w
            }
        })
    })
}

/// The key words in `t` (see [`TextRules::key_kind`]): `Password` if a password word occurs
/// anywhere, else `Secret` if a secret word does.
///
/// A hand-written scan, equivalent to the case-insensitive Aho-Corasick search it replaced
/// (kept in the tests as the reference): every key word holds one of three anchor letters at
/// a fixed place — `w` (pwd, passwd, password), `k` (token and every `…key`), `c` (secret) —
/// so only those bytes (any case) look around them; the rest cost a compare each.
pub(crate) fn key_word_kind(t: &[u8]) -> Option<Kind> {
    // Most texts that get here (timestamps, times, URLs) hold no anchor at all: one
    // branch-free pass, which the compiler vectorizes, says so.
    if !t.iter().fold(false, |any, &b| {
        any | matches!(b | 0x20, b'w' | b'k' | b'c')
    }) {
        return None;
    }
    let mut secret = false;
    // Most bytes are not an anchor: skip them with one compare each.
    let mut i = 0;
    while i < t.len() {
        let b = t[i];
        if b | 0x20 != b'w' && b | 0x20 != b'k' && b | 0x20 != b'c' {
            i += 1;
            continue;
        }
        match b | 0x20 {
            b'w' if word_at(t, i, 1, b"pwd")
                || (word_at(t, i, 4, b"passw")
                    && (word_at(t, i + 1, 0, b"d") || word_at(t, i + 1, 0, b"ord"))) =>
            {
                return Some(Kind::Password);
            }
            b'k' if !secret => {
                secret = word_at(t, i, 2, b"token")
                    || (word_at(t, i, 0, b"key") && {
                        // api/access/private, then `_`, `-` or nothing.
                        let j = match i.checked_sub(1).map(|j| t[j]) {
                            Some(b'_' | b'-') => i - 1,
                            _ => i,
                        };
                        word_at(t, j, 3, b"api")
                            || word_at(t, j, 6, b"access")
                            || word_at(t, j, 7, b"private")
                    });
            }
            b'c' if !secret => secret = word_at(t, i, 2, b"secret"),
            _ => {}
        }
        i += 1;
    }
    secret.then_some(Kind::Secret)
}

/// What one pass over a string says about whether the numeric rules could match in it.
/// Each field is a necessary condition for its rules (a superset test), so skipping on it
/// never misses.
#[derive(Default)]
struct Shape {
    plus: bool,
    /// Most digits in a stretch where digits are at most two of ` .-/()+` apart (phones,
    /// formatted documents, grouped cards).
    dense_digits: u32,
    /// Most `0-9A-Z` characters in a stretch where they are at most one of `.-/` apart
    /// (alphanumeric CNPJ, formatted or bare).
    dense_alnum: u32,
}

impl Shape {
    fn of(t: &[u8]) -> Shape {
        let mut s = Shape::default();
        let (mut d, mut dgap, mut a, mut agap) = (0u32, 0u32, 0u32, 0u32);
        for &b in t {
            let digit = b.is_ascii_digit();
            if digit {
                if dgap > 2 {
                    d = 0;
                }
                d += 1;
                dgap = 0;
                s.dense_digits = s.dense_digits.max(d);
            } else if matches!(b, b' ' | b'.' | b'-' | b'/' | b'(' | b')' | b'+') {
                dgap += 1;
                s.plus |= b == b'+';
            } else {
                d = 0;
                dgap = 0;
            }
            if digit || b.is_ascii_uppercase() {
                if agap > 1 {
                    a = 0;
                }
                a += 1;
                agap = 0;
                s.dense_alnum = s.dense_alnum.max(a);
            } else if matches!(b, b'.' | b'-' | b'/') {
                agap += 1;
            } else {
                a = 0;
                agap = 0;
            }
        }
        s
    }

    /// Cards and CPFs need 11+ digits, Brazilian phones 10+, international phones 8+ after a
    /// `+`, CNPJs 14 alphanumerics.
    fn may_hold_numbers(&self) -> bool {
        self.dense_digits >= 10 || (self.plus && self.dense_digits >= 8) || self.dense_alnum >= 14
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The gate and the bare-digit path never change a result: `apply` equals running
        /// every rule.
        #[test]
        fn gate_and_digit_path_agree_with_all_rules(
            t in prop_oneof![
                "[0-9]{0,22}",
                "[0-9 .()/+-]{0,24}",
                "[a-zA-Z0-9 .@%:=_-]{0,30}",
                "[A-Z0-9 .()/+-]{0,24}",
                any::<String>(),
                proptest::sample::select(&[
                    "52998224725", "11222333000181", "4111111111111111", "1763000000000",
                    "ana@example.com", "x%40example.com", "password=1", "12ABC34501DE35",
                    "ORD-2026-000123 4111111111111111",
                ][..]).prop_map(String::from),
            ]
        ) {
            static RULES: std::sync::LazyLock<TextRules> =
                std::sync::LazyLock::new(|| TextRules::new(Vec::new()));
            let rules = &*RULES;
            let mut a = SanitizeStats::default();
            let mut b = SanitizeStats::default();
            prop_assert_eq!(rules.apply(t.as_bytes(), &mut a), rules.apply_general(t.as_bytes(), &mut b));
            prop_assert_eq!(a, b);
        }
    }

    /// The key words as the case-insensitive Aho-Corasick search the scan replaced: the
    /// reference for [`key_word_kind`].
    fn key_words_reference(key: &[u8]) -> Option<Kind> {
        static AC: std::sync::LazyLock<aho_corasick::AhoCorasick> =
            std::sync::LazyLock::new(|| {
                aho_corasick::AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build([
                        // The first three are the password words.
                        "password",
                        "passwd",
                        "pwd",
                        "token",
                        "secret",
                        "apikey",
                        "api_key",
                        "api-key",
                        "accesskey",
                        "access_key",
                        "access-key",
                        "privatekey",
                        "private_key",
                        "private-key",
                    ])
                    .expect("constant keywords")
            });
        let mut secret = false;
        for m in AC.find_overlapping_iter(key) {
            if m.pattern().as_usize() < 3 {
                return Some(Kind::Password);
            }
            secret = true;
        }
        secret.then_some(Kind::Secret)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The hand-written key-word scan finds exactly what the Aho-Corasick search finds,
        /// on keys with key words (any case, glued, cut short, doubled), look-alikes and
        /// arbitrary text.
        #[test]
        fn key_word_scan_equals_aho_corasick(
            key in prop_oneof![
                "[a-zA-Z_-]{0,16}",
                "[pPaAsStTkKeEyYwWdDoOrRcCiInNvV_-]{0,20}",
                (
                    "[a-zA-Z_\\-]{0,4}",
                    proptest::sample::select(&[
                        "PassWord", "passwd", "PWD", "token", "Secret", "apikey", "API_KEY",
                        "api-key", "accessKey", "access_key", "private-key", "PrivateKey",
                        "passw", "pass", "api_", "access-", "privat", "tok", "secre", "ke",
                        "api__key", "api_-key", "Access_Key", "PRIVATE_KEY", "pw d", "p\u{e9}d",
                    ][..]),
                    "[a-zA-Z_\\-]{0,4}",
                    proptest::sample::select(&["", "pwd", "key", "token", "Key", "_key", "\u{212a}ey"][..]),
                )
                    .prop_map(|(a, w, b, c)| format!("{a}{w}{b}{c}")),
                any::<String>(),
                proptest::collection::vec(any::<u8>(), 0..24)
                    .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            ]
        ) {
            prop_assert_eq!(key_word_kind(key.as_bytes()), key_words_reference(key.as_bytes()));
        }
    }

    impl TextRules {
        /// Every built-in rule in order, with no gate at all: the reference the gated
        /// [`TextRules::apply`] must equal.
        fn apply_ungated(&self, input: &[u8], stats: &mut SanitizeStats) -> Option<Vec<u8>> {
            type Rule<'a> = &'a dyn Fn(&[u8], &mut SanitizeStats) -> Option<Vec<u8>>;
            let rules: [Rule<'_>; 7] = [
                &|t, s| self.jwt_rule(t, s),
                &|t, s| self.email_rule(t, s),
                &|t, s| self.keyed_rule(t, s),
                &|t, s| self.doc_formatted_rule(t, First::Search, s),
                &|t, s| self.cnpj_alnum_rule(t, First::Search, s),
                &|t, s| self.phone_rule(t, First::Search, s),
                &|t, s| self.digit_run_rule(t, First::Search, s),
            ];
            let mut cur = input.to_vec();
            let mut changed = false;
            for rule in rules {
                if let Some(next) = rule(&cur, stats) {
                    cur = next;
                    changed = true;
                }
            }
            changed.then_some(cur)
        }
    }

    static RULES: std::sync::LazyLock<TextRules> =
        std::sync::LazyLock::new(|| TextRules::new(Vec::new()));
    /// The text rules as the fourth pass left them (`super::super::v4`, frozen).
    static V4: std::sync::LazyLock<crate::sanitize::v4::TextRules> =
        std::sync::LazyLock::new(|| crate::sanitize::v4::TextRules::new(Vec::new()));

    /// Pieces for the fifth pass' equivalence: the corpus' strings (order ids, timestamps,
    /// UUIDs, SKUs, phones, documents, emails), secrets of every type, look-alikes, key words
    /// and the bytes the numeric pass tracks.
    fn dense_piece() -> impl Strategy<Value = String> {
        prop_oneof![
            piece(),
            proptest::sample::select(
                &[
                    "ORD-2026-000123",
                    "2026-11-20T10:00:00.000Z",
                    "SKU-01234",
                    "WH-3",
                    "cliente123@example.com.br",
                    "+55 11 4004-0000",
                    "+55 11 91234-5678",
                    "token: abc",
                    "pwd=",
                    "Key",
                    "W",
                    "k",
                    "c",
                    "(",
                    "((",
                    "12 ",
                    "1 ",
                    "AB.",
                    "12.",
                    "+1 2 34",
                    "+12",
                    "4111-1111 1111",
                    "1 2 3 4 5 6 7 8 9 0 1",
                    "1--2",
                    "1  2",
                    "ABCDEFGHIJKL99",
                ][..]
            )
            .prop_map(String::from),
            "[0-9A-Z .()/+@:=-]{1,20}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(6000))]

        /// The fifth pass' text rules (one pass for the numeric rules' hits, first matches
        /// reused, fewer buffers) equal the fourth pass' (`v4`, frozen): same text, same
        /// counts per type.
        #[test]
        fn text_rules_equal_the_fourth_pass(
            parts in proptest::collection::vec(dense_piece(), 0..8)
        ) {
            let t = parts.concat();
            let mut a = SanitizeStats::default();
            let mut b = SanitizeStats::default();
            prop_assert_eq!(
                RULES.apply(t.as_bytes(), &mut a),
                V4.apply(t.as_bytes(), &mut b),
                "{:?}", t
            );
            prop_assert_eq!(a, b, "{:?}", t);
        }

        /// The same on arbitrary bytes from the characters the rules look at, every suffix.
        #[test]
        fn text_rules_equal_the_fourth_pass_on_dense_text(
            t in proptest::collection::vec(
                proptest::sample::select(&b"0123456789 .-/()+9AZ@:=kwJ"[..]), 0..40)
        ) {
            for k in 0..=t.len() {
                let t = &t[k..];
                let mut a = SanitizeStats::default();
                let mut b = SanitizeStats::default();
                prop_assert_eq!(
                    RULES.apply(t, &mut a),
                    V4.apply(t, &mut b),
                    "{:?}", String::from_utf8_lossy(t)
                );
                prop_assert_eq!(a, b);
            }
        }
    }

    /// Pieces of text: secrets of every type, look-alikes, separators, letters, unicode.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(
                &[
                    "52998224725",
                    "529.982.247-25",
                    "11222333000181",
                    "11.222.333/0001-81",
                    "12ABC34501DE35",
                    "12.ABC.345/01DE-35",
                    "4111111111111111",
                    "4111 1111 1111 1111",
                    "5555-5555-5555-4444",
                    "+55 11 98765-4321",
                    "(11) 98765-4321",
                    "11 98765-4321",
                    "+1 415 555 2671",
                    "ana@example.com",
                    "x%40example.com.br",
                    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2ln",
                    "password=1",
                    "api_key: \"k\"",
                    "ORD-2026-000123",
                    "1763000000000",
                    "2026-11-20T10:00:00Z",
                    "EMAIL",
                    "SANITIZED_",
                    "3f2a8b1c-1d2e-4f3a-8b9c-0d1e2f3a4b5c",
                    "4111 1111 1111 1112",
                    "529.982.247-26",
                    "+55",
                    "(",
                    ")",
                    "-",
                    " ",
                    ".",
                    "/",
                    "+",
                    "@",
                    "%40",
                    ":",
                    "=",
                    "é",
                    "\u{a0}",
                ][..]
            )
            .prop_map(String::from),
            "[0-9]{1,16}",
            "[0-9 .()/+-]{1,12}",
            "[A-Z0-9]{1,14}",
            "[a-zA-Z]{1,6}",
            any::<char>().prop_map(String::from),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(6000))]

        /// The per-rule gates (shape checks, the combined numeric scan, the bare-digit path,
        /// the key-word scan) never change a result: same text and same counts per type as
        /// every rule run ungated (but see `a_marker_never_takes_part_in_a_numeric_match`).
        #[test]
        fn gated_rules_equal_ungated_rules(
            parts in proptest::collection::vec(piece(), 0..8)
        ) {
            static RULES: std::sync::LazyLock<TextRules> =
                std::sync::LazyLock::new(|| TextRules::new(Vec::new()));
            let t = parts.concat();
            let mut a = SanitizeStats::default();
            let mut b = SanitizeStats::default();
            prop_assert_eq!(
                RULES.apply(t.as_bytes(), &mut a),
                RULES.apply_ungated(t.as_bytes(), &mut b),
                "{:?}", t
            );
            prop_assert_eq!(a, b, "{:?}", t);
        }
    }

    /// The one place the gates differ from running every rule ungated, on purpose: a
    /// marker's letters never take part in a later numeric match. Ungated, the email's marker
    /// and the digits after it (`EMAIL123456773`) form a valid alphanumeric CNPJ; gated, the
    /// numeric rules are skipped because the input cannot hold one. (The random strings of
    /// `gated_rules_equal_ungated_rules` practically never build such a check-digit-valid
    /// run after an email or JWT.)
    #[test]
    fn a_marker_never_takes_part_in_a_numeric_match() {
        let rules = TextRules::new(Vec::new());
        let (mut a, mut b) = (SanitizeStats::default(), SanitizeStats::default());
        let t = b"ana@example.com123456773";
        assert_eq!(
            rules.apply(t, &mut a).as_deref(),
            Some(&b"SANITIZED_EMAIL123456773"[..])
        );
        assert_eq!(a.get("email"), 1);
        assert_eq!(a.get("document"), 0);
        assert_eq!(
            rules.apply_ungated(t, &mut b).as_deref(),
            Some(&b"SANITIZED_SANITIZED_DOCUMENT"[..])
        );
    }

    #[test]
    fn a_card_after_a_glued_id_is_found() {
        let rules = TextRules::new(Vec::new());
        let mut s = SanitizeStats::default();
        let out = rules
            .apply(b"ORD-2026-000123 4111111111111111", &mut s)
            .expect("replaced");
        assert_eq!(out, b"ORD-2026-000123 SANITIZED_CARD");
        assert_eq!(s.get("card"), 1);
    }
}
