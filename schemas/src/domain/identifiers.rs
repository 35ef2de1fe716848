//! The identifiers department records carry, and their check characters: citizen identity
//! numbers (GB 11643), unified social credit codes (GB 32100 with the GB 11714
//! organisation-code check), division codes
//! (GB/T 2260, every county-level code of Shaanxi shipped as data), e-licence identifiers
//! (ISO 7064 MOD 37,36) and property unit numbers.
//!
//! Every check returns the *rule* that failed, never the value: callers put the rule in
//! errors and logs, and personal identifiers are shown only through [`mask`].

use std::{collections::HashMap, sync::OnceLock};

use chrono::NaiveDate;

/// The Shaanxi division table: code, name, successor code.
const SHAANXI: &str = include_str!("../../data/shaanxi-divisions.tsv");

/// A known division.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownDivision {
    /// The code as given.
    pub code: &'static str,
    /// Its name.
    pub name: &'static str,
    /// The code that replaced it, for codes retired since (610928 → 610981).
    pub successor: Option<&'static str>,
}

fn shaanxi() -> &'static HashMap<&'static str, KnownDivision> {
    static TABLE: OnceLock<HashMap<&'static str, KnownDivision>> = OnceLock::new();
    TABLE.get_or_init(|| {
        SHAANXI
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| {
                let mut parts = line.split('\t');
                let code = parts.next()?;
                let name = parts.next()?;
                let successor = parts.next().filter(|s| !s.is_empty());
                Some((code, KnownDivision { code, name, successor }))
            })
            .collect()
    })
}

/// Checks a division code: shape and province (GB/T 2260), and for Shaanxi (61) that the
/// code exists. Returns the current code (a retired code maps to its successor).
pub fn division(code: &str) -> Result<String, &'static str> {
    let parsed = super::Division::parse(code).map_err(|e| match e {
        super::division::DivisionError::Shape { .. } => "division-shape",
        super::division::DivisionError::UnknownProvince(_) => "division-province",
        super::division::DivisionError::CountyWithoutPrefecture(_) => "division-shape",
    })?;
    if !code.starts_with("61") {
        return Ok(parsed.to_string());
    }
    match shaanxi().get(code) {
        Some(known) => Ok(known.successor.unwrap_or(known.code).to_owned()),
        None => Err("division-exists"),
    }
}

/// The Shaanxi division with this code, if it is one.
pub fn shaanxi_division(code: &str) -> Option<KnownDivision> {
    shaanxi().get(code).copied()
}

/// Every county-level Shaanxi code in force.
pub fn shaanxi_counties() -> impl Iterator<Item = &'static str> {
    shaanxi().values().filter(|d| d.successor.is_none() && !d.code.ends_with("00")).map(|d| d.code)
}

const CITIZEN_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];

/// Checks a citizen identity number (GB 11643): 18 characters, a real division prefix
/// shape, a real birth date not after `today`, and the ISO 7064 MOD 11-2 check character.
pub fn citizen_id(id: &str, today: NaiveDate) -> Result<(), &'static str> {
    let bytes = id.as_bytes();
    if bytes.len() != 18
        || !bytes[..17].iter().all(u8::is_ascii_digit)
        || !(bytes[17].is_ascii_digit() || bytes[17] == b'X')
    {
        return Err("citizen-id-shape");
    }
    let birth = NaiveDate::parse_from_str(&id[6..14], "%Y%m%d").map_err(|_| "citizen-id-birth-date")?;
    if birth > today || birth.year_ce().1 < 1900 {
        return Err("citizen-id-birth-date");
    }
    if citizen_id_check(&id[..17]).map(|c| c as u8) != Some(bytes[17]) {
        return Err("citizen-id-check");
    }
    Ok(())
}

/// The ISO 7064 MOD 11-2 check character of a citizen identity number's first 17 digits;
/// `None` when they are not 17 digits.
pub fn citizen_id_check(first17: &str) -> Option<char> {
    let bytes = first17.as_bytes();
    if bytes.len() != 17 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = bytes.iter().zip(CITIZEN_WEIGHTS).map(|(b, w)| u32::from(b - b'0') * w).sum();
    let check = (12 - sum % 11) % 11;
    Some(if check == 10 { 'X' } else { char::from(b'0' + check as u8) })
}

/// The GB 11714 check character (position 17) of a credit code's organisation code
/// (positions 9-16); `None` when they are not 8 digits or upper-case letters.
pub fn organisation_code_check(code8: &str) -> Option<char> {
    let bytes = code8.as_bytes();
    if bytes.len() != 8 || !bytes.iter().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()) {
        return None;
    }
    let org_value = |b: u8| if b.is_ascii_digit() { u32::from(b - b'0') } else { u32::from(b - b'A') + 10 };
    let org_sum: u32 = bytes.iter().zip(ORG_WEIGHTS).map(|(b, w)| org_value(*b) * w).sum();
    Some(match 11 - org_sum % 11 {
        10 => 'X',
        11 => '0',
        n => char::from(b'0' + n as u8),
    })
}

/// The MOD 31 check character (position 18) of a credit code's first 17 characters; `None`
/// when one is outside the code's alphabet.
pub fn credit_code_check(first17: &str) -> Option<char> {
    let bytes = first17.as_bytes();
    if bytes.len() != 17 {
        return None;
    }
    let mut sum = 0u32;
    for (b, w) in bytes.iter().zip(CREDIT_WEIGHTS) {
        sum += CREDIT_ALPHABET.iter().position(|a| a == b)? as u32 * w;
    }
    Some(char::from(CREDIT_ALPHABET[((31 - sum % 31) % 31) as usize]))
}

/// Whether `c` is in the credit code's alphabet (digits and upper-case letters but I, O, S,
/// V and Z).
pub fn in_credit_alphabet(c: char) -> bool {
    c.is_ascii() && CREDIT_ALPHABET.contains(&(c as u8))
}

use chrono::Datelike;

const CREDIT_ALPHABET: &[u8] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const CREDIT_WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];
const ORG_WEIGHTS: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];

/// Checks a unified social credit code (GB 32100): 18 characters of its alphabet, a
/// division shape in positions 3-8, the GB 11714 check of the organisation code, and the
/// MOD 31 check character.
pub fn credit_code(code: &str) -> Result<(), &'static str> {
    let bytes = code.as_bytes();
    if bytes.len() != 18 {
        return Err("credit-code-shape");
    }
    if !bytes.iter().all(|b| CREDIT_ALPHABET.contains(b)) || !bytes[2..8].iter().all(u8::is_ascii_digit) {
        return Err("credit-code-shape");
    }
    // GB 11714 organisation code: positions 9..17 (index 8..16), its check at index 16.
    if organisation_code_check(&code[8..16]).map(|c| c as u8) != Some(bytes[16]) {
        return Err("credit-code-organisation-check");
    }
    if credit_code_check(&code[..17]).map(|c| c as u8) != Some(bytes[17]) {
        return Err("credit-code-check");
    }
    Ok(())
}

const LICENCE_PREFIX: &str = "1.2.156.3005.2.";

/// The parts of an e-licence identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenceId<'a> {
    /// Licence type code (the defining authority's credit code and a 3-digit number).
    pub type_code: &'a str,
    /// Issuer code (a credit code, or in some provinces a division code).
    pub issuer: &'a str,
    /// Serial, unique per issuer and type.
    pub serial: &'a str,
    /// Version, `001` first.
    pub version: u16,
}

/// ISO 7064 MOD 37,36 check character over `text` (digits and upper-case letters).
pub fn mod37_36_check(text: &str) -> Option<char> {
    let value = |c: u8| match c {
        b'0'..=b'9' => Some(u32::from(c - b'0')),
        b'A'..=b'Z' => Some(u32::from(c - b'A') + 10),
        _ => None,
    };
    let mut p = 36u32;
    for c in text.bytes() {
        let mut t = (p + value(c)?) % 36;
        if t == 0 {
            t = 36;
        }
        p = (2 * t) % 37;
    }
    let check = (37 - p) % 36;
    Some(char::from(if check < 10 { b'0' + check as u8 } else { b'A' + (check - 10) as u8 }))
}

/// Checks an e-licence identifier `1.2.156.3005.2.<type>.<issuer>.<serial>.<version>.<check>`.
pub fn licence_id(id: &str) -> Result<LicenceId<'_>, &'static str> {
    let rest = id.strip_prefix(LICENCE_PREFIX).ok_or("licence-id-prefix")?;
    let parts: Vec<&str> = rest.split('.').collect();
    let [type_code, issuer, serial, version, check] = parts.as_slice() else { return Err("licence-id-shape") };
    let upper_alnum = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
    if type_code.len() != 21 || !upper_alnum(type_code) || !type_code[18..].bytes().all(|b| b.is_ascii_digit()) {
        return Err("licence-id-type-code");
    }
    credit_code(&type_code[..18]).map_err(|_| "licence-id-type-code")?;
    let issuer_ok = (issuer.len() == 18 && credit_code(issuer).is_ok())
        || (issuer.len() == 6 && issuer.bytes().all(|b| b.is_ascii_digit()));
    if !issuer_ok {
        return Err("licence-id-issuer");
    }
    if !upper_alnum(serial) {
        return Err("licence-id-serial");
    }
    if version.len() != 3 || !version.bytes().all(|b| b.is_ascii_digit()) || *version == "000" {
        return Err("licence-id-version");
    }
    let body = format!("{type_code}{issuer}{serial}{version}");
    if check.len() != 1 || mod37_36_check(&body).map(String::from).as_deref() != Some(*check) {
        return Err("licence-id-check");
    }
    Ok(LicenceId { type_code, issuer, serial, version: version.parse().map_err(|_| "licence-id-version")? })
}

/// Checks a property unit number (不动产单元号): 28 characters, a 6-digit division that
/// [`division`] accepts, a 6-digit cadastral zone and subzone, a 2-letter parcel feature
/// code, a 5-digit parcel number, a 1-letter building code and an 8-digit unit number.
pub fn property_unit_number(number: &str) -> Result<(), &'static str> {
    let b = number.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let letters = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_uppercase);
    if b.len() != 28 || !digits(0..12) || !letters(12..14) || !digits(14..19) || !letters(19..20) || !digits(20..28) {
        return Err("property-unit-number-shape");
    }
    division(&number[..6]).map_err(|_| "property-unit-number-division")?;
    Ok(())
}

/// What stands for the hidden part of a masked value: always the same length, so that a mask
/// says nothing about the length (or kind) of what it hides.
const HIDDEN: &str = "************";

/// Masks a personal identifier for display and logs: the first six characters of an
/// identifier that begins with a division code (six digits, as citizen identity numbers do)
/// stay, the rest becomes twelve `*` (`610902************`). The birth date, the sequence
/// and the check character never show: with the check character visible, the hidden digits
/// of a citizen identity number fall to a few thousand guesses. A shorter identifier (a
/// passport number, say) is hidden entirely.
pub fn mask(identifier: &str) -> String {
    let chars: Vec<char> = identifier.chars().collect();
    if chars.len() >= 15 && chars[..6].iter().all(char::is_ascii_digit) {
        chars[..6].iter().collect::<String>() + HIDDEN
    } else {
        HIDDEN.to_owned()
    }
}

/// Masks a person's name to its surname (the first character) and a fixed `**`, so that the
/// length of the given name does not show either (`王**`).
pub fn mask_name(name: &str) -> String {
    name.chars().next().map(String::from).unwrap_or_default() + "**"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()
    }

    #[test]
    fn citizen_ids() {
        assert_eq!(citizen_id("11010519491231002X", today()), Ok(()), "the standard's own example");
        assert_eq!(citizen_id("11010519491231002", today()), Err("citizen-id-shape"));
        assert_eq!(citizen_id("110105194912310021", today()), Err("citizen-id-check"));
        assert_eq!(citizen_id("11010519491331002X", today()), Err("citizen-id-birth-date"), "month 13");
        assert_eq!(citizen_id("11010520991231002X", today()), Err("citizen-id-birth-date"), "born in the future");
        assert_eq!(citizen_id("11010519491231002x", today()), Err("citizen-id-shape"), "lower-case x");
    }

    #[test]
    fn credit_codes() {
        for real in ["91110000600037341L", "11100000000013338W", "11430000006122244L"] {
            assert_eq!(credit_code(real), Ok(()), "{real}");
        }
        assert_eq!(credit_code("91110000600037341M"), Err("credit-code-check"));
        assert_eq!(credit_code("9111000060003734IL"), Err("credit-code-shape"), "I is not in the alphabet");
        assert_eq!(credit_code("91110000600037351L"), Err("credit-code-organisation-check"));
        assert_eq!(credit_code("9111000060003734"), Err("credit-code-shape"));
    }

    #[test]
    fn divisions() {
        assert_eq!(division("610921").as_deref(), Ok("610921"));
        assert_eq!(division("610928").as_deref(), Ok("610981"), "旬阳县 became 旬阳市");
        assert_eq!(division("610981").as_deref(), Ok("610981"));
        assert_eq!(division("610999"), Err("division-exists"));
        assert_eq!(division("110105").as_deref(), Ok("110105"), "outside Shaanxi only the shape is known");
        assert_eq!(division("990101"), Err("division-province"));
        assert_eq!(division("61092"), Err("division-shape"));
        assert_eq!(shaanxi_counties().count(), 107, "every county-level division of Shaanxi");
        assert_eq!(shaanxi_division("610921").unwrap().name, "汉阴县");
    }

    #[test]
    fn licence_ids() {
        let real = "1.2.156.3005.2.11100000000013338W011.11430000006122244L.20230000403.001.U";
        let parsed = licence_id(real).unwrap();
        assert_eq!((parsed.serial, parsed.version), ("20230000403", 1));
        assert_eq!(licence_id(&real.replace(".U", ".V")), Err("licence-id-check"));
        assert_eq!(licence_id(&real.replace("1.2.156.3005.2.", "1.2.156.3005.3.")), Err("licence-id-prefix"));
        assert_eq!(licence_id(&real.replace(".001.", ".000.")), Err("licence-id-version"));
        assert_eq!(licence_id(&real.replace("11430000006122244L", "11430000006122244M")), Err("licence-id-issuer"));
        assert_eq!(licence_id("1.2.156.3005.2.a.b"), Err("licence-id-shape"));
        // A division code as issuer, as some provinces use.
        let body = "11100000000013338W011610921SN0001001";
        let with_division =
            format!("1.2.156.3005.2.11100000000013338W011.610921.SN0001.001.{}", mod37_36_check(body).unwrap());
        assert!(licence_id(&with_division).is_ok());
    }

    #[test]
    fn property_unit_numbers() {
        assert_eq!(property_unit_number("610921001001GB00001F00010001"), Ok(()));
        assert_eq!(property_unit_number("610921001001GB00001F0001000"), Err("property-unit-number-shape"));
        assert_eq!(property_unit_number("610921001001Gb00001F00010001"), Err("property-unit-number-shape"));
        assert_eq!(property_unit_number("610999001001GB00001F00010001"), Err("property-unit-number-division"));
    }

    #[test]
    fn masking_keeps_the_division_only() {
        assert_eq!(mask("61090219800101123X"), "610902************");
        assert_eq!(mask("610902198001011"), "610902************", "a 15-digit number of the old kind");
        assert_eq!(mask("E12345678"), "************", "nothing of a short identifier shows");
        assert_eq!(mask("E1234567890123456"), "************", "nor of one that does not begin with a division");
        assert_eq!(mask("ZHANGSANFENG LIMITED"), "************");
        assert_eq!(mask("short"), mask("a much longer value?"), "the mask's length says nothing");
        assert_eq!(mask_name("王小明"), "王**");
        assert_eq!(mask_name("欧阳"), mask_name("欧阳小明"), "the given name's length does not show");
    }
}
