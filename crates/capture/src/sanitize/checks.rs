//! Check-digit algorithms: Luhn (cards), CPF and CNPJ (including the alphanumeric CNPJ).
//!
//! All functions take ASCII bytes and return `false` for anything of the wrong shape, so they
//! are safe on arbitrary input.

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
    let (mut s1, mut s2) = (0u32, 0u32);
    for (i, &b) in base.iter().enumerate() {
        let d = u32::from(b - b'0');
        s1 += d * (10 - i as u32);
        s2 += d * (11 - i as u32);
    }
    let dv1 = dv(s1);
    Some((dv1, dv(s2 + 2 * u32::from(dv1))))
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
    let (mut s1, mut s2) = (0u32, 0u32);
    for (i, &b) in base.iter().enumerate() {
        let v = cnpj_value(b)?;
        s1 += v * CNPJ_W1[i];
        s2 += v * CNPJ_W2[i];
    }
    let dv1 = dv(s1);
    Some((dv1, dv(s2 + u32::from(dv1) * CNPJ_W2[12])))
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn luhn_vectors() {
        assert!(luhn(b"4111111111111111"));
        assert!(luhn(b"5555555555554444"));
        assert!(luhn(b"378282246310005"));
        assert!(luhn(b"79927398713"));
        assert!(!luhn(b"4111111111111112"));
        assert!(!luhn(b"79927398710"));
        assert!(!luhn(b""));
        assert!(!luhn(b"41x1"));
    }

    #[test]
    fn cpf_vectors() {
        assert_eq!(cpf_check_digits(b"529982247"), Some((2, 5)));
        assert_eq!(cpf_check_digits(b"111444777"), Some((3, 5)));
        assert!(cpf_valid(b"52998224725"));
        assert!(cpf_valid(b"11144477735"));
        assert!(!cpf_valid(b"52998224726"));
        assert!(!cpf_valid(b"11111111111"), "all-equal digits are rejected");
        assert!(!cpf_valid(b"5299822472"));
    }

    #[test]
    fn cnpj_vectors() {
        assert_eq!(cnpj_check_digits(b"112223330001"), Some((8, 1)));
        assert!(cnpj_valid(b"11222333000181"));
        assert_eq!(cnpj_check_digits(b"12ABC34501DE"), Some((3, 5)));
        assert!(cnpj_valid(b"12ABC34501DE35"));
        assert!(!cnpj_valid(b"12ABC34501DE36"));
        assert!(
            !cnpj_valid(b"12abc34501DE35"),
            "letters are upper case only"
        );
        assert!(!cnpj_valid(b"00000000000000"));
        assert_eq!(cnpj_check_digits(b"11.222.333/0"), None);
    }

    #[test]
    fn card_shape() {
        assert!(card_valid(b"4111111111111111"));
        assert!(card_valid(b"378282246310005"));
        assert!(
            !card_valid(b"1732190400006"),
            "epoch-like numbers starting with 1"
        );
        assert!(!card_valid(b"411111111111"), "too short");
        assert!(!card_valid(b"4111111111111112"), "Luhn fails");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// The check digits computed in one loop without buffers equal the fourth pass'
        /// (`v4::checks`, frozen), on bases of every length near the right one, digits,
        /// letters and anything else.
        #[test]
        fn check_digits_equal_the_fourth_pass(
            base in prop_oneof![
                "[0-9]{8,13}",
                "[0-9A-Z]{11,13}",
                "[0-9A-Za-z./-]{0,14}",
                proptest::collection::vec(any::<u8>(), 0..15)
                    .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            ]
        ) {
            use crate::sanitize::v4::checks as v4;
            let b = base.as_bytes();
            prop_assert_eq!(cpf_check_digits(b), v4::cpf_check_digits(b));
            prop_assert_eq!(cnpj_check_digits(b), v4::cnpj_check_digits(b));
            prop_assert_eq!(cpf_valid(b), v4::cpf_valid(b));
            prop_assert_eq!(cnpj_valid(b), v4::cnpj_valid(b));
        }
    }
}
