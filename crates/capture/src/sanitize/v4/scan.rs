//! `scan` as the fourth pass left it (see the parent module).

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

/// All matches of `find` in `t`, left to right (what `Regex::find_iter` gives: none of
/// these patterns matches the empty string).
pub(crate) fn find_iter(find: Finder, t: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let (s, e) = find(t, at)?;
        at = e;
        Some((s, e))
    })
}
