//! The text rules as the fourth pass of instruction counting left them (commit `0f042a4`),
//! frozen: the reference the fifth pass' rewrites of `text`, `scan` and `checks` are tested
//! against (`text::tests::text_rules_equal_the_fourth_pass*`). Test-only; never changed.

#![allow(dead_code)]

pub(crate) mod checks;
// The finders did not change in the fifth pass (identical to the live ones), so the reference
// uses them; their own tests compare them with the regexes.
use super::scan;

use std::borrow::Cow;

use base64::Engine as _;
use memchr::memmem;
use regex::bytes::Regex;

use super::{Kind, SanitizeStats};
use checks::{card_valid, cnpj_valid, cpf_valid};
use scan::Finder;

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

struct Repl {
    start: usize,
    end: usize,
    with: Vec<u8>,
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
                    Some(rule.replacement.clone())
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
        if (g & G_DIGIT != 0) && Shape::of(input).may_hold_numbers() {
            let before = &*cur;
            let hit = |f: Finder| f(before, 0).is_some();
            let hits = [
                hit(scan::doc_formatted),
                hit(scan::cnpj_alnum),
                hit(scan::phone_intl) || hit(scan::phone_br),
                hit(scan::digit_run),
            ];
            if hits[0] {
                step!(|t: &[u8], s: &mut SanitizeStats| self.doc_formatted_rule(t, s));
            }
            if hits[1] {
                step!(|t: &[u8], s: &mut SanitizeStats| self.cnpj_alnum_rule(t, s));
            }
            if hits[2] {
                step!(|t: &[u8], s: &mut SanitizeStats| self.phone_rule(t, s));
            }
            if hits[3] {
                step!(|t: &[u8], s: &mut SanitizeStats| self.digit_run_rule(t, s));
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
                Some(b"SANITIZED_JWT".to_vec())
            } else {
                None
            }
        })
    }

    fn email_rule(&self, t: &[u8], s: &mut SanitizeStats) -> Option<Vec<u8>> {
        find_each(scan::email, t, |_, _, _| {
            s.add(Kind::Email);
            Some(b"SANITIZED_EMAIL".to_vec())
        })
    }

    fn keyed_rule(&self, t: &[u8], s: &mut SanitizeStats) -> Option<Vec<u8>> {
        let mut repls = Vec::new();
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
            let with = if v.first() == Some(&b'"') {
                [b"\"".as_slice(), marker, b"\""].concat()
            } else {
                marker.to_vec()
            };
            s.add(kind);
            repls.push(Repl {
                start: value.start(),
                end: value.end(),
                with,
            });
        }
        splice(t, repls)
    }

    fn doc_formatted_rule(&self, t: &[u8], s: &mut SanitizeStats) -> Option<Vec<u8>> {
        find_each(scan::doc_formatted, t, |m, start, end| {
            let before = start.checked_sub(1).and_then(|i| t.get(i));
            if alnum(before) || before == Some(&b'.') || alnum(t.get(end)) {
                return None;
            }
            let bare: Vec<u8> = m
                .iter()
                .copied()
                .filter(u8::is_ascii_alphanumeric)
                .collect();
            if cpf_valid(&bare) || cnpj_valid(&bare) {
                s.add(Kind::Document);
                Some(b"SANITIZED_DOCUMENT".to_vec())
            } else {
                None
            }
        })
    }

    fn cnpj_alnum_rule(&self, t: &[u8], s: &mut SanitizeStats) -> Option<Vec<u8>> {
        find_each(scan::cnpj_alnum, t, |m, start, end| {
            let before = start.checked_sub(1).and_then(|i| t.get(i));
            if alnum(before) || alnum(t.get(end)) || m.iter().all(u8::is_ascii_digit) {
                return None;
            }
            if cnpj_valid(m) {
                s.add(Kind::Document);
                Some(b"SANITIZED_DOCUMENT".to_vec())
            } else {
                None
            }
        })
    }

    fn phone_rule(&self, t: &[u8], s: &mut SanitizeStats) -> Option<Vec<u8>> {
        let first = find_each(scan::phone_intl, t, |m, start, end| {
            let before = start.checked_sub(1).and_then(|i| t.get(i));
            let digits = m.iter().filter(|b| b.is_ascii_digit()).count();
            if alnum(before) || digit(t.get(end)) || !(8..=15).contains(&digits) {
                return None;
            }
            s.add(Kind::Phone);
            Some(b"SANITIZED_PHONE".to_vec())
        });
        let t2 = first.as_deref().unwrap_or(t);
        let second = find_each(scan::phone_br, t2, |_, start, end| {
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
            Some(b"SANITIZED_PHONE".to_vec())
        });
        second.or(first)
    }

    fn digit_run_rule(&self, t: &[u8], s: &mut SanitizeStats) -> Option<Vec<u8>> {
        let mut repls = Vec::new();
        for (start, end) in scan::find_iter(scan::digit_run, t) {
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
                &mut repls,
                s,
            );
        }
        splice(t, repls)
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
    repls: &mut Vec<Repl>,
    s: &mut SanitizeStats,
) {
    let digits: Vec<u8> = run.iter().copied().filter(u8::is_ascii_digit).collect();
    let has_separators = digits.len() != run.len();
    if !has_separators {
        let kind = if (digits.len() == 11 && cpf_valid(&digits))
            || (digits.len() == 14 && cnpj_valid(&digits))
        {
            Some(Kind::Document)
        } else if card_valid(&digits) {
            Some(Kind::Card)
        } else {
            None
        };
        if let Some(kind) = kind {
            s.add(kind);
            repls.push(Repl {
                start: offset,
                end: offset + run.len(),
                with: kind.marker().as_bytes().to_vec(),
            });
        }
        return;
    }
    if free[0] && free[1] && card_valid(&digits) {
        s.add(Kind::Card);
        repls.push(Repl {
            start: offset,
            end: offset + run.len(),
            with: b"SANITIZED_CARD".to_vec(),
        });
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
            repls.push(Repl {
                start: offset + groups[i].0,
                end: offset + groups[j].1,
                with: b"SANITIZED_CARD".to_vec(),
            });
            i = j + 1;
        } else {
            i += 1;
        }
    }
}

/// Replaces every match for which `f` returns a replacement. `None` when nothing changed.
fn replace_each(
    re: &Regex,
    t: &[u8],
    mut f: impl FnMut(&[u8], usize, usize) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    let mut repls = Vec::new();
    for m in re.find_iter(t) {
        if let Some(with) = f(m.as_bytes(), m.start(), m.end()) {
            repls.push(Repl {
                start: m.start(),
                end: m.end(),
                with,
            });
        }
    }
    splice(t, repls)
}

/// [`replace_each`] for a hand-written finder.
fn find_each(
    find: Finder,
    t: &[u8],
    mut f: impl FnMut(&[u8], usize, usize) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    let mut repls = Vec::new();
    for (start, end) in scan::find_iter(find, t) {
        if let Some(with) = f(&t[start..end], start, end) {
            repls.push(Repl { start, end, with });
        }
    }
    splice(t, repls)
}

fn splice(t: &[u8], repls: Vec<Repl>) -> Option<Vec<u8>> {
    if repls.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(t.len());
    let mut pos = 0;
    for r in repls {
        out.extend_from_slice(&t[pos..r.start]);
        out.extend_from_slice(&r.with);
        pos = r.end;
    }
    out.extend_from_slice(&t[pos..]);
    Some(out)
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
