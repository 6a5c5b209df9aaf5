//! `checks` as the fourth pass left it (see the parent module).

/// Luhn check over ASCII digits. Non-digits make it fail.
pub fn luhn(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (i, &b) in digits.iter().rev().enumerate() {
        if !b.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

fn all_same(s: &[u8]) -> bool {
    s.iter().all(|&b| b == s[0])
}

fn dv(sum: u32) -> u8 {
    let r = sum % 11;
    if r < 2 { 0 } else { (11 - r) as u8 }
}

/// The two CPF check digits for nine ASCII base digits.
pub fn cpf_check_digits(base: &[u8]) -> Option<(u8, u8)> {
    if base.len() != 9 || !base.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let d: Vec<u32> = base.iter().map(|b| u32::from(b - b'0')).collect();
    let s1: u32 = d.iter().zip((2..=10).rev()).map(|(x, w)| x * w).sum();
    let dv1 = dv(s1);
    let s2: u32 = d
        .iter()
        .chain(std::iter::once(&u32::from(dv1)))
        .zip((2..=11).rev())
        .map(|(x, w)| x * w)
        .sum();
    Some((dv1, dv(s2)))
}

/// True for 11 ASCII digits forming a valid CPF (all-equal digits rejected).
pub fn cpf_valid(s: &[u8]) -> bool {
    if s.len() != 11 || !s.iter().all(u8::is_ascii_digit) || all_same(s) {
        return false;
    }
    cpf_check_digits(&s[..9]) == Some((s[9] - b'0', s[10] - b'0'))
}

const CNPJ_W1: [u32; 12] = [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2];
const CNPJ_W2: [u32; 13] = [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2];

/// Value of a CNPJ base character: ASCII − 48, so digits are 0–9 and `A` is 17.
fn cnpj_value(b: u8) -> Option<u32> {
    match b {
        b'0'..=b'9' | b'A'..=b'Z' => Some(u32::from(b) - 48),
        _ => None,
    }
}

/// The two CNPJ check digits for 12 base characters (`0-9`, `A-Z`).
pub fn cnpj_check_digits(base: &[u8]) -> Option<(u8, u8)> {
    if base.len() != 12 {
        return None;
    }
    let v: Option<Vec<u32>> = base.iter().map(|&b| cnpj_value(b)).collect();
    let v = v?;
    let s1: u32 = v.iter().zip(CNPJ_W1).map(|(x, w)| x * w).sum();
    let dv1 = dv(s1);
    let s2: u32 = v
        .iter()
        .chain(std::iter::once(&u32::from(dv1)))
        .zip(CNPJ_W2)
        .map(|(x, w)| x * w)
        .sum();
    Some((dv1, dv(s2)))
}

/// True for 14 characters forming a valid CNPJ: 12 base characters (`0-9A-Z`) and two check
/// digits. All-equal bases are rejected.
pub fn cnpj_valid(s: &[u8]) -> bool {
    if s.len() != 14 || !s[12].is_ascii_digit() || !s[13].is_ascii_digit() || all_same(s) {
        return false;
    }
    cnpj_check_digits(&s[..12]) == Some((s[12] - b'0', s[13] - b'0'))
}

/// A card number shape: 13–19 digits, a payment-network first digit (2–6), not all equal,
/// and a passing Luhn check. The first-digit rule keeps epoch timestamps (which start with 1)
/// and most numeric ids from being taken for cards.
pub fn card_valid(digits: &[u8]) -> bool {
    (13..=19).contains(&digits.len())
        && (b'2'..=b'6').contains(&digits[0])
        && !all_same(digits)
        && luhn(digits)
}
