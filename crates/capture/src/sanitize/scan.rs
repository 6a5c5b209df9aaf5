//! Hand-written finders for the numeric text rules (formatted CPF/CNPJ, alphanumeric CNPJ,
//! international and Brazilian phones, digit runs).
//!
//! Each finder returns exactly what `regex::bytes::Regex::find_at` returns for its pattern
//! (shown above each one): the leftmost start, and at that start the match a backtracking
//! engine prefers (greedy pieces try more first, optional pieces try "present" first). The
//! regexes are kept in the tests as the reference (`finders_equal_the_regexes`). The
//! patterns are small and fixed, so a few compares per position replace a lazy DFA search.

/// A finder: the first match at or after `from`, as a byte range.
pub(crate) type Finder = fn(&[u8], usize) -> Option<(usize, usize)>;

#[inline(always)]
fn digit(t: &[u8], i: usize) -> bool {
    t.get(i).is_some_and(u8::is_ascii_digit)
}

#[inline(always)]
fn is(t: &[u8], i: usize, c: u8) -> bool {
    t.get(i) == Some(&c)
}

/// Number of consecutive ASCII digits starting at `i`.
#[inline(always)]
fn digits_from(t: &[u8], i: usize) -> usize {
    t.get(i..)
        .map_or(0, |r| r.iter().take_while(|b| b.is_ascii_digit()).count())
}

/// Whether `t[i..]` starts with `template`: `d` stands for `[0-9]`, `A` for `[0-9A-Z]`,
/// anything else for itself.
#[inline(always)]
fn fits(t: &[u8], i: usize, template: &[u8]) -> bool {
    t.get(i..i + template.len()).is_some_and(|hay| {
        hay.iter().zip(template).all(|(&h, &p)| match p {
            b'd' => h.is_ascii_digit(),
            b'A' => h.is_ascii_digit() || h.is_ascii_uppercase(),
            _ => h == p,
        })
    })
}

const CPF_FORMATTED: &[u8] = b"ddd.ddd.ddd-dd";
const CNPJ_FORMATTED: &[u8] = b"AA.AAA.AAA/AAAA-dd";
const CNPJ_BARE: &[u8] = b"AAAAAAAAAAAAdd";

/// `[0-9]{3}\.[0-9]{3}\.[0-9]{3}-[0-9]{2}|[0-9A-Z]{2}\.[0-9A-Z]{3}\.[0-9A-Z]{3}/[0-9A-Z]{4}-[0-9]{2}`
pub(crate) fn doc_formatted(t: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i + CPF_FORMATTED.len() <= t.len() {
        // Both alternatives have a dot at 2 or 3.
        if t[i + 2] == b'.' || t[i + 3] == b'.' {
            if fits(t, i, CPF_FORMATTED) {
                return Some((i, i + CPF_FORMATTED.len()));
            }
            if fits(t, i, CNPJ_FORMATTED) {
                return Some((i, i + CNPJ_FORMATTED.len()));
            }
        }
        i += 1;
    }
    None
}

/// `[0-9A-Z]{12}[0-9]{2}`
pub(crate) fn cnpj_alnum(t: &[u8], from: usize) -> Option<(usize, usize)> {
    // Count the `[0-9A-Z]` run ending at each position; a match ends where the run is 14
    // long and its last two are digits, so the start is the leftmost one.
    let mut run = 0usize;
    let mut i = from;
    while i < t.len() {
        let b = t[i];
        if b.is_ascii_digit() || b.is_ascii_uppercase() {
            run += 1;
            if run >= 14 && fits(t, i + 1 - 14, CNPJ_BARE) {
                return Some((i + 1 - 14, i + 1));
            }
        } else {
            run = 0;
        }
        i += 1;
    }
    None
}

/// The options of `c?` (greedy) at `p`: with `c` first, then without.
#[inline(always)]
fn optional(t: &[u8], p: usize, c: impl Fn(u8) -> bool) -> impl Iterator<Item = usize> {
    let with = t.get(p).is_some_and(|&b| c(b)).then_some(p + 1);
    with.into_iter().chain(std::iter::once(p))
}

fn sep(b: u8) -> bool {
    matches!(b, b' ' | b'.' | b'-')
}

/// `\+[0-9]{1,3}[ .\-]?(?:\([0-9]{1,4}\)[ .\-]?)?[0-9]{1,5}(?:[ .\-]?[0-9]{2,5}){1,4}`
pub(crate) fn phone_intl(t: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while let Some(k) = t.get(i..).and_then(|r| memchr::memchr(b'+', r)) {
        let start = i + k;
        if let Some(end) = phone_intl_at(t, start) {
            return Some((start, end));
        }
        i = start + 1;
    }
    None
}

fn phone_intl_at(t: &[u8], i: usize) -> Option<usize> {
    let cc = digits_from(t, i + 1);
    for n in (1..=cc.min(3)).rev() {
        for p in optional(t, i + 1 + n, sep) {
            if is(t, p, b'(') {
                let area = digits_from(t, p + 1);
                for m in (1..=area.min(4)).rev() {
                    let q = p + 1 + m;
                    if is(t, q, b')') {
                        for r in optional(t, q + 1, sep) {
                            if let Some(end) = local_number(t, r) {
                                return Some(end);
                            }
                        }
                    }
                }
            }
            if let Some(end) = local_number(t, p) {
                return Some(end);
            }
        }
    }
    None
}

/// `[0-9]{1,5}(?:[ .\-]?[0-9]{2,5}){1,4}` at `p`.
fn local_number(t: &[u8], p: usize) -> Option<usize> {
    let run = digits_from(t, p);
    for n in (1..=run.min(5)).rev() {
        if let Some(end) = groups(t, p + n) {
            return Some(end);
        }
    }
    None
}

/// `(?:[ .\-]?[0-9]{2,5}){1,4}` at `p`. Nothing follows it in the pattern, so the first
/// option that matches in each round is final: the repetition is greedy without backtracking.
fn groups(t: &[u8], p: usize) -> Option<usize> {
    let mut pos = p;
    let mut rounds = 0;
    while rounds < 4 {
        let with_sep = t.get(pos).is_some_and(|&b| sep(b)) && digits_from(t, pos + 1) >= 2;
        let at = if with_sep { pos + 1 } else { pos };
        let run = digits_from(t, at);
        if run < 2 {
            break;
        }
        pos = at + run.min(5);
        rounds += 1;
    }
    (rounds > 0).then_some(pos)
}

/// `\([0-9]{2}\) ?9?[0-9]{4}-?[0-9]{4}|[0-9]{2} 9?[0-9]{4}-[0-9]{4}`
pub(crate) fn phone_br(t: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i < t.len() {
        let b = t[i];
        if (b == b'(' || b.is_ascii_digit())
            && let Some(end) = phone_br_at(t, i)
        {
            return Some((i, end));
        }
        i += 1;
    }
    None
}

fn phone_br_at(t: &[u8], i: usize) -> Option<usize> {
    if fits(t, i, b"(dd)") {
        for p in optional(t, i + 4, |b| b == b' ') {
            for q in optional(t, p, |b| b == b'9') {
                if fits(t, q, b"dddd") {
                    for r in optional(t, q + 4, |b| b == b'-') {
                        if fits(t, r, b"dddd") {
                            return Some(r + 4);
                        }
                    }
                }
            }
        }
    }
    if fits(t, i, b"dd ") {
        for q in optional(t, i + 3, |b| b == b'9') {
            if fits(t, q, b"dddd-dddd") {
                return Some(q + 9);
            }
        }
    }
    None
}

/// `[0-9](?:[ \-]?[0-9]){10,}`
pub(crate) fn digit_run(t: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i < t.len() {
        if !t[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // Each round has one option at most (a separator is not a digit), so the greedy
        // repetition never backtracks.
        let mut end = i + 1;
        let mut rounds = 0;
        loop {
            if matches!(t.get(end), Some(b' ' | b'-')) && digit(t, end + 1) {
                end += 2;
            } else if digit(t, end) {
                end += 1;
            } else {
                break;
            }
            rounds += 1;
        }
        if rounds >= 10 {
            return Some((i, end));
        }
        // A later start inside this run follows the same path to the same end with fewer
        // rounds: none of them matches either.
        i = end;
    }
    None
}

/// A byte of an email's local part: `[A-Za-z0-9._%+\-]`.
#[inline(always)]
fn local_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// `[A-Za-z0-9._%+\-]+(?:@|%40)[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}`
///
/// Every match has an `@` or a `%40`, so the search jumps between those. Around one, the
/// candidate starts are the run of local-part bytes holding it: a start inside the run only
/// has fewer separators to its right than the run's first byte (the domain's match does not
/// depend on the start), so the run's first byte is the leftmost start if any is. From it, the
/// separators are tried right to left (the local part is greedy): an `@` ending the run, then
/// each `%40` inside it.
pub(crate) fn email(t: &[u8], from: usize) -> Option<(usize, usize)> {
    // No start before `lo`: `from`, or the end of a run that held no match.
    let mut lo = from;
    let mut i = from;
    while let Some(k) = t.get(i..).and_then(|r| memchr::memchr2(b'@', b'%', r)) {
        let p = i + k;
        if t[p] == b'%' && !t[p..].starts_with(b"%40") {
            i = p + 1;
            continue;
        }
        let mut start = p;
        while start > lo && local_byte(t[start - 1]) {
            start -= 1;
        }
        // `%` is a local-part byte: the run goes on past a `%40`; an `@` ends it.
        let mut end = p;
        while end < t.len() && local_byte(t[end]) {
            end += 1;
        }
        if end > start
            && t.get(end) == Some(&b'@')
            && let Some(e) = email_domain(t, end + 1)
        {
            return Some((start, e));
        }
        let mut q = end;
        while q >= start + 4 {
            q -= 1;
            // `%40` at q - 2, with a non-empty local part before it.
            if t[q - 2..=q] == *b"%40"
                && let Some(e) = email_domain(t, q + 1)
            {
                return Some((start, e));
            }
        }
        lo = end + 1;
        i = lo;
    }
    None
}

/// The end of `L(?:\.L)*\.[A-Za-z]{2,}` at `q`, where `L` is a DNS label
/// (`[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?`). A label can only be followed by the dot
/// the pattern needs when it is its whole `[A-Za-z0-9-]` run (and that run ends in a letter
/// or digit), so the labels form one chain; the greedy repetition takes the last dot of the
/// chain that is followed by two letters or more, and the letters run to their end.
fn email_domain(t: &[u8], q: usize) -> Option<usize> {
    let mut best = None;
    let mut pos = q;
    while t.get(pos).is_some_and(u8::is_ascii_alphanumeric) {
        let mut e = pos + 1;
        while t
            .get(e)
            .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'-')
        {
            e += 1;
        }
        if t[e - 1] == b'-' || t.get(e) != Some(&b'.') {
            break;
        }
        let letters = t[e + 1..]
            .iter()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        if letters >= 2 {
            best = Some(e + 1 + letters);
        }
        pos = e + 1;
    }
    best
}

/// What the numeric finders find first in a text, from one pass over it: each field is
/// what its finder returns from offset 0 (`finders_equal_the_regexes` proves the finders
/// equal the regexes; `numeric_equals_the_finders` proves this equals the finders).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Numeric {
    /// `doc_formatted(t, 0)`.
    pub(crate) doc: Option<(usize, usize)>,
    /// `cnpj_alnum(t, 0)`.
    pub(crate) cnpj: Option<(usize, usize)>,
    /// `phone_intl(t, 0)`.
    pub(crate) intl: Option<(usize, usize)>,
    /// `phone_intl(t, 0)` or `phone_br(t, 0)` found something.
    pub(crate) phone: bool,
    /// `digit_run(t, 0)`.
    pub(crate) run: Option<(usize, usize)>,
}

impl Numeric {
    /// True when no numeric finder finds anything.
    pub(crate) fn none(&self) -> bool {
        self.doc.is_none() && self.cnpj.is_none() && !self.phone && self.run.is_none()
    }
}

/// [`Numeric`] of `t`. One pass over the text, a run of digits or capitals at a time,
/// finds the first alphanumeric CNPJ and the first digit run outright (both are decided by run
/// lengths) and, for the other finders, the first place a match could start: a formatted
/// document has two or more `0-9A-Z` right before its first dot, an international phone
/// starts at a `+`, a Brazilian one at `(` or at two digits and a space. Most texts have none
/// of these, and no finder runs at all; the others run from there instead of from the start.
pub(crate) fn numeric(t: &[u8]) -> Numeric {
    let mut n = Numeric::default();
    let (mut doc, mut plus, mut br, mut run) = (None, None, None, None);
    // `0-9A-Z` in a row before `i`.
    let mut arun = 0usize;
    // The digit run being built (`digit_run`'s chain: runs of digits with a single ` ` or
    // `-` between two of them): its first digit, how many digits, and where it could go on
    // (the index right after a single separator that follows its last digit).
    let (mut cstart, mut chain, mut goes_on) = (0usize, 0usize, usize::MAX);
    let mut i = 0;
    while i < t.len() {
        let b = t[i];
        if b.is_ascii_digit() {
            let s = i;
            i += 1;
            while i < t.len() && t[i].is_ascii_digit() {
                i += 1;
            }
            let len = i - s;
            // `[0-9A-Z]{12}[0-9]{2}` ends at the first digit `j` of this run with 13 of
            // `0-9A-Z` before it, the one before it a digit of this run.
            if n.cnpj.is_none() && len >= 2 && arun + len >= 14 {
                let j = (s + 1).max((s + 13).saturating_sub(arun));
                n.cnpj = Some((j + 1 - 14, j + 1));
            }
            arun += len;
            if s == goes_on {
                chain += len;
            } else {
                cstart = s;
                chain = len;
            }
            if chain >= 11 && run.is_none() {
                run = Some(cstart);
            }
            match t.get(i) {
                Some(b' ') => {
                    if len >= 2 && br.is_none() {
                        br = Some(i - 2);
                    }
                    goes_on = i + 1;
                }
                Some(b'-') => goes_on = i + 1,
                _ => {}
            }
            continue;
        }
        if b.is_ascii_uppercase() {
            arun += 1;
            i += 1;
            continue;
        }
        match b {
            b'.' if arun >= 2 && doc.is_none() => doc = Some(i.saturating_sub(3)),
            b'(' if br.is_none() => br = Some(i),
            b'+' if plus.is_none() => plus = Some(i),
            _ => {}
        }
        arun = 0;
        i += 1;
    }
    // The run's end: where `digit_run` stops (found again from its first digit, which only
    // walks that run).
    n.run = run.and_then(|s| digit_run(t, s));
    n.doc = doc.and_then(|from| doc_formatted(t, from));
    n.intl = plus.and_then(|from| phone_intl(t, from));
    n.phone = n.intl.is_some() || br.is_some_and(|from| phone_br(t, from).is_some());
    n
}

/// All matches of `find` in `t`, left to right (what `Regex::find_iter` gives: none of
/// these patterns matches the empty string). The rules use `text::matches`.
#[cfg(test)]
pub(crate) fn find_iter(find: Finder, t: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let (s, e) = find(t, at)?;
        at = e;
        Some((s, e))
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use regex::bytes::Regex;

    use super::*;

    /// The regexes the finders replaced, as the text rules compiled them.
    fn reference() -> Vec<(&'static str, Regex, Finder)> {
        [
            (
                r"[0-9]{3}\.[0-9]{3}\.[0-9]{3}-[0-9]{2}|[0-9A-Z]{2}\.[0-9A-Z]{3}\.[0-9A-Z]{3}/[0-9A-Z]{4}-[0-9]{2}",
                doc_formatted as Finder,
            ),
            (r"[0-9A-Z]{12}[0-9]{2}", cnpj_alnum),
            (
                r"\+[0-9]{1,3}[ .\-]?(?:\([0-9]{1,4}\)[ .\-]?)?[0-9]{1,5}(?:[ .\-]?[0-9]{2,5}){1,4}",
                phone_intl,
            ),
            (
                r"\([0-9]{2}\) ?9?[0-9]{4}-?[0-9]{4}|[0-9]{2} 9?[0-9]{4}-[0-9]{4}",
                phone_br,
            ),
            (r"[0-9](?:[ \-]?[0-9]){10,}", digit_run),
        ]
        .into_iter()
        .map(|(p, f)| (p, Regex::new(p).expect("constant pattern"), f))
        .collect()
    }

    /// Pieces that build phones, documents and runs, broken ones and their separators.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(
                &[
                    "+",
                    "+55",
                    "+1",
                    "+351",
                    "+5511",
                    "(",
                    ")",
                    "(11)",
                    "(11) ",
                    "(0800)",
                    " ",
                    "-",
                    ".",
                    "/",
                    "9",
                    "98765",
                    "4321",
                    "98765-4321",
                    "529.982.247-25",
                    "11.222.333/0001-81",
                    "12.ABC.345/01DE-35",
                    "12ABC34501DE35",
                    "4111",
                    "4111 1111 1111 1111",
                    "5555-5555-5555-4444",
                    "+55 11 98765-4321",
                    "+1 (415) 555-2671",
                    "(11) 98765-4321",
                    "11 98765-4321",
                    "11 8765-4321",
                    "ORD-2026-000123",
                    "1763000000000",
                    "2026-11-20T10:00:00Z",
                    "ABC",
                    "x",
                    "é",
                ][..]
            )
            .prop_map(String::from),
            "[0-9]{1,16}",
            "[0-9 .()/+-]{1,12}",
            "[A-Z0-9]{1,14}",
            "[a-zA-Z]{1,3}",
            any::<char>().prop_map(String::from),
        ]
    }

    fn check(t: &[u8]) -> Result<(), TestCaseError> {
        check_with(t, reference())
    }

    fn check_with(t: &[u8], finders: Vec<(&str, Regex, Finder)>) -> Result<(), TestCaseError> {
        for (pattern, re, find) in finders {
            let want: Vec<(usize, usize)> = re.find_iter(t).map(|m| (m.start(), m.end())).collect();
            let got: Vec<(usize, usize)> = find_iter(find, t).collect();
            prop_assert_eq!(got, want, "{} on {:?}", pattern, String::from_utf8_lossy(t));
            for from in 0..=t.len() {
                let want = re.find_at(t, from).map(|m| (m.start(), m.end()));
                prop_assert_eq!(find(t, from), want, "{} at {} on {:?}", pattern, from, t);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1500))]

        /// Every finder finds exactly the regex's matches (same ranges, same order, from
        /// every start), on text built from phone, document and digit-run pieces, broken
        /// ones, separators, letters and arbitrary characters.
        #[test]
        fn finders_equal_the_regexes(parts in proptest::collection::vec(piece(), 0..10)) {
            check(parts.concat().as_bytes())?;
        }

        /// The same on arbitrary bytes from the characters the patterns use.
        #[test]
        fn finders_equal_the_regexes_on_dense_text(
            t in proptest::collection::vec(
                proptest::sample::select(&b"0123456789 .-/()+9AZ"[..]), 0..40)
        ) {
            check(&t)?;
        }
    }

    /// The email regex the email finder replaced.
    fn email_reference() -> Vec<(&'static str, Regex, Finder)> {
        let p = r"[A-Za-z0-9._%+\-]+(?:@|%40)[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}";
        vec![(p, Regex::new(p).expect("constant pattern"), email as Finder)]
    }

    /// Pieces of emails: local parts, separators (`@`, `%40` and broken ones), labels,
    /// top-level domains too short or with digits, dashes where labels may not have them.
    fn email_piece() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(
                &[
                    "ana",
                    "ana.silva",
                    "user+tag",
                    "a_b",
                    "x",
                    "1",
                    "@",
                    "@@",
                    "%40",
                    "%4",
                    "%",
                    "40",
                    ".",
                    "..",
                    "-",
                    "--",
                    "com",
                    "co",
                    "c",
                    "br",
                    "c0m",
                    "a-b",
                    "-a",
                    "a-",
                    "example.com",
                    "example.com.br",
                    "mail-1.example.org",
                    "ana@example.com",
                    "ana%40example.com",
                    "a@b.c",
                    "a@b.co.u",
                    "a@b@c.com",
                    " ",
                    ",",
                    "\"",
                    "é",
                    "Z9",
                ][..]
            )
            .prop_map(String::from),
            "[a-zA-Z0-9]{1,6}",
            "[a-z0-9.@%-]{1,10}",
            any::<char>().prop_map(String::from),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1500))]

        /// The email finder finds exactly the regex's matches (same ranges, same order, from
        /// every start) on text built from email pieces, broken ones and arbitrary characters.
        #[test]
        fn email_finder_equals_the_regex(parts in proptest::collection::vec(email_piece(), 0..12)) {
            check_with(parts.concat().as_bytes(), email_reference())?;
        }

        /// The same on arbitrary bytes from the characters the pattern uses.
        #[test]
        fn email_finder_equals_the_regex_on_dense_text(
            t in proptest::collection::vec(
                proptest::sample::select(&b"ab1.-_+@%40Z .@"[..]), 0..40)
        ) {
            check_with(&t, email_reference())?;
        }
    }

    /// [`Numeric`] as the finders say it.
    fn numeric_by_the_finders(t: &[u8]) -> Numeric {
        Numeric {
            doc: doc_formatted(t, 0),
            cnpj: cnpj_alnum(t, 0),
            intl: phone_intl(t, 0),
            phone: phone_intl(t, 0).is_some() || phone_br(t, 0).is_some(),
            run: digit_run(t, 0),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// The one-pass [`numeric`] equals running each finder from the start, on text built
        /// from phone, document and digit-run pieces (every suffix, so every piece starts at
        /// every offset of some text).
        #[test]
        fn numeric_equals_the_finders(parts in proptest::collection::vec(piece(), 0..10)) {
            let t = parts.concat();
            let t = t.as_bytes();
            for k in 0..=t.len() {
                prop_assert_eq!(numeric(&t[k..]), numeric_by_the_finders(&t[k..]), "{:?}", &t[k..]);
            }
        }

        /// The same on arbitrary bytes from the characters the finders use.
        #[test]
        fn numeric_equals_the_finders_on_dense_text(
            t in proptest::collection::vec(
                proptest::sample::select(&b"0123456789 .-/()+9AZ"[..]), 0..40)
        ) {
            for k in 0..=t.len() {
                prop_assert_eq!(numeric(&t[k..]), numeric_by_the_finders(&t[k..]), "{:?}", &t[k..]);
            }
        }
    }

    #[test]
    fn finders_find_the_documented_shapes() {
        assert_eq!(email(b"mail ana.silva@example.com.br!", 0), Some((5, 29)));
        assert_eq!(email(b"to=ana%40example.com&x", 3), Some((3, 20)));
        assert_eq!(email(b"a@b.co.u", 0), Some((0, 6)));
        assert_eq!(email(b"a@b@c.com", 0), Some((2, 9)));
        assert_eq!(email(b"a@b.c0m", 0), None);
        assert_eq!(doc_formatted(b"cpf 529.982.247-25", 0), Some((4, 18)));
        assert_eq!(doc_formatted(b"12.ABC.345/01DE-35", 0), Some((0, 18)));
        assert_eq!(cnpj_alnum(b"x12ABC34501DE35", 0), Some((1, 15)));
        assert_eq!(phone_intl(b"tel +55 11 98765-4321.", 0), Some((4, 21)));
        assert_eq!(phone_br(b"(11) 98765-4321", 0), Some((0, 15)));
        assert_eq!(phone_br(b"11 98765-4321", 0), Some((0, 13)));
        assert_eq!(digit_run(b"4111 1111 1111 1111", 0), Some((0, 19)));
        assert_eq!(digit_run(b"2026-000123", 0), None);
    }
}
