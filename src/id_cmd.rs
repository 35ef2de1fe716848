//! `govex id`: checks an identifier and says which character is wrong, or computes its check
//! character, so that an integrator who built one by hand can find the fault without
//! reading GB 11643, GB 32100 or the e-licence rules.
//!
//! A citizen identity number is personal data: it is never printed in full, only its masked
//! form and the characters the user needs (the check character, a position). Since a typo
//! can make one look like anything, only an e-licence identifier is ever echoed: every other
//! input is shown masked, whatever it was checked as.

use chrono::NaiveDate;
use govex_schemas::identifiers;

/// What kind of identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// 居民身份证号码 (GB 11643), 18 characters.
    CitizenId,
    /// 统一社会信用代码 (GB 32100), 18 characters.
    CreditCode,
    /// 电子证照标识 `1.2.156.3005.2.<type>.<issuer>.<serial>.<version>.<check>`.
    LicenceId,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::CitizenId => "citizen identity number",
            Self::CreditCode => "unified social credit code",
            Self::LicenceId => "e-licence identifier",
        }
    }

    /// The kind `value` looks like: a licence identifier by its prefix, a citizen identity
    /// number when its first 17 characters are digits, a credit code otherwise.
    pub fn guess(value: &str) -> Self {
        if value.starts_with("1.2.156.") {
            Self::LicenceId
        } else if value.len() >= 17 && value.bytes().take(17).all(|b| b.is_ascii_digit()) {
            // 18 digits may be either; a citizen identity number is far more common, and a
            // credit code that fails as one is tried as the other below.
            Self::CitizenId
        } else {
            Self::CreditCode
        }
    }
}

/// The verdict on one identifier: whether it is valid, and lines for people.
pub struct Verdict {
    /// Whether it passed every rule.
    pub valid: bool,
    /// What was found, one finding per line.
    pub lines: Vec<String>,
}

/// Checks `value` as `kind` (guessed when `None`).
pub fn check(value: &str, kind: Option<Kind>, today: NaiveDate) -> Verdict {
    let value = value.trim();
    let guessed = kind.is_none();
    let kind = kind.unwrap_or_else(|| Kind::guess(value));
    let mut findings = match kind {
        Kind::CitizenId => citizen_id(value, today),
        Kind::CreditCode => credit_code(value, 1),
        Kind::LicenceId => licence_id(value),
    };
    // 18 digits may be either kind: one that fails as a citizen identity number but passes as
    // a credit code is not called valid on a guess.
    if guessed && kind == Kind::CitizenId && !findings.is_empty() && identifiers::credit_code(value).is_ok() {
        findings
            .push("as a unified social credit code it would be valid: if it is one, give --kind credit-code".into());
    }
    let shown = match kind {
        Kind::LicenceId if value.starts_with("1.2.156.") => value.to_owned(),
        _ => identifiers::mask(value),
    };
    let mut lines = vec![format!("{shown}: checked as a {}", kind.name())];
    let valid = findings.is_empty();
    if valid {
        lines.push("valid".into());
        if let Some(division) = division_name(value, kind) {
            lines.push(division);
        }
    } else {
        lines.extend(findings);
    }
    Verdict { valid, lines }
}

/// Completes `value`, an identifier without its check character (or with `?` in its place),
/// with the check character; the answer names the character, and for a citizen identity
/// number (personal data) prints only that, never the whole number.
pub fn complete(value: &str, kind: Option<Kind>) -> Result<String, String> {
    let value = value.trim().trim_end_matches('?').trim_end_matches('.');
    match kind.unwrap_or_else(|| Kind::guess(value)) {
        Kind::CitizenId => {
            let check = identifiers::citizen_id_check(value)
                .ok_or_else(|| "give the first 17 characters of a citizen identity number, all digits".to_owned())?;
            Ok(format!("check character (18th): {check}"))
        }
        Kind::CreditCode => {
            if value.len() != 17 {
                return Err("give the first 17 characters of a unified social credit code".into());
            }
            let mut lines = Vec::new();
            if let Some(organisation) = value.get(8..16) {
                match identifiers::organisation_code_check(organisation) {
                    Some(c) if Some(c) != value.chars().nth(16) => lines.push(format!(
                        "note: character 17 (the organisation code's check) should be {c}, not {}",
                        value.chars().nth(16).unwrap_or(' ')
                    )),
                    _ => {}
                }
            }
            let check = identifiers::credit_code_check(value).ok_or_else(|| {
                "a character is outside the code's alphabet (digits and A-Z without I, O, S, V, Z)".to_owned()
            })?;
            // A credit code is an organisation's, not a person's; but 17 digits may be the start
            // of a citizen identity number given the wrong kind: then only the character.
            match value.bytes().all(|b| b.is_ascii_digit()) {
                true => lines.insert(0, format!("check character (18th): {check}")),
                false => lines.insert(0, format!("{value}{check}  (check character: {check})")),
            }
            Ok(lines.join("\n"))
        }
        Kind::LicenceId => {
            let body = value.strip_prefix("1.2.156.3005.2.").ok_or("a licence identifier starts 1.2.156.3005.2.")?;
            let parts: Vec<&str> = body.split('.').collect();
            if parts.len() != 4 {
                return Err(
                    "give type, issuer, serial and version: 1.2.156.3005.2.<type>.<issuer>.<serial>.<version>".into()
                );
            }
            let check = identifiers::mod37_36_check(&parts.concat())
                .ok_or("type, issuer, serial and version take only digits and upper-case letters")?;
            let full = format!("{value}.{check}");
            let verdict = licence_id(&full);
            if verdict.is_empty() {
                Ok(format!("{full}  (check character: {check})"))
            } else {
                Err(format!("with its check character ({check}) it still breaks: {}", verdict.join("; ")))
            }
        }
    }
}

fn division_name(value: &str, kind: Kind) -> Option<String> {
    let code = match kind {
        Kind::CitizenId => value.get(..6)?,
        Kind::CreditCode => value.get(2..8)?,
        Kind::LicenceId => return None,
    };
    identifiers::shaanxi_division(code).map(|d| format!("division {code}: {}", d.name))
}

/// Positions are 1-based, as a person counts.
fn citizen_id(id: &str, today: NaiveDate) -> Vec<String> {
    let chars: Vec<char> = id.chars().collect();
    let mut out = Vec::new();
    if chars.len() == 17 {
        return vec!["has 17 characters: the check character is missing (add --complete to compute it)".into()];
    }
    if chars.len() != 18 {
        return vec![format!("has {} characters; a citizen identity number has 18", chars.len())];
    }
    for (i, c) in chars.iter().enumerate().take(17) {
        if !c.is_ascii_digit() {
            out.push(format!("character {} is not a digit", i + 1));
        }
    }
    match chars[17] {
        c if c.is_ascii_digit() || c == 'X' => {}
        'x' => out.push("character 18 must be an upper-case X".into()),
        _ => out.push("character 18 (the check character) must be a digit or X".into()),
    }
    if !out.is_empty() {
        return out;
    }
    let birth: String = chars[6..14].iter().collect();
    match NaiveDate::parse_from_str(&birth, "%Y%m%d") {
        Err(_) => out.push("characters 7-14 are not a real birth date (YYYYMMDD)".into()),
        Ok(date) if date > today => out.push("characters 7-14: the birth date is in the future".into()),
        Ok(date) if chrono::Datelike::year(&date) < 1900 => {
            out.push("characters 7-14: the birth date is before 1900".into())
        }
        Ok(_) => {}
    }
    let first17: String = chars[..17].iter().collect();
    if let Some(expected) = identifiers::citizen_id_check(&first17) {
        if chars[17] != expected {
            out.push(format!(
                "character 18 (the check character) should be {expected} if characters 1-17 are right; \
                 if the 18th is right, one of characters 1-17 is wrong (any single wrong digit changes the check)"
            ));
        }
    }
    out
}

fn credit_code(code: &str, first_position: usize) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let at = |i: usize| i + first_position;
    if chars.len() == 17 && first_position == 1 {
        return vec!["has 17 characters: the check character is missing (add --complete to compute it)".into()];
    }
    if chars.len() != 18 {
        return vec![format!("has {} characters; a unified social credit code has 18", chars.len())];
    }
    let mut out = Vec::new();
    for (i, c) in chars.iter().enumerate() {
        if c.is_ascii_lowercase() {
            out.push(format!("character {} must be upper-case", at(i)));
        } else if !identifiers::in_credit_alphabet(*c) {
            out.push(format!(
                "character {} is outside the code's alphabet (digits and A-Z without I, O, S, V, Z)",
                at(i)
            ));
        }
    }
    for (i, c) in chars.iter().enumerate().take(8).skip(2) {
        if identifiers::in_credit_alphabet(*c) && !c.is_ascii_digit() {
            out.push(format!(
                "character {} is part of the division code (characters {}-{}) and must be a digit",
                at(i),
                at(2),
                at(7)
            ));
        }
    }
    if !out.is_empty() {
        return out;
    }
    // Each check character covers the characters before it: the organisation code's
    // (GB 11714) characters 9-16, the code's own all 17.
    type Check = fn(&str) -> Option<char>;
    let checks: [(&str, usize, usize, Check); 2] = [
        ("the organisation code's check, GB 11714", 8, 16, identifiers::organisation_code_check),
        ("the check character", 0, 17, identifiers::credit_code_check),
    ];
    for (what, from, at_check, check) in checks {
        let covered: String = chars[from..at_check].iter().collect();
        if let Some(expected) = check(&covered).filter(|expected| chars[at_check] != *expected) {
            out.push(format!(
                "character {} ({what}) should be {expected} if characters {}-{} are right",
                at(at_check),
                at(from),
                at(at_check - 1)
            ));
        }
    }
    out
}

fn licence_id(id: &str) -> Vec<String> {
    let Some(body) = id.strip_prefix("1.2.156.3005.2.") else {
        return vec!["must start 1.2.156.3005.2. (the e-licence arc)".into()];
    };
    let parts: Vec<&str> = body.split('.').collect();
    let [type_code, issuer, serial, version, check] = parts.as_slice() else {
        return vec![format!(
            "after 1.2.156.3005.2. it has {} parts; it needs 5: <type>.<issuer>.<serial>.<version>.<check>",
            parts.len()
        )];
    };
    let mut out = Vec::new();
    if type_code.len() != 21 {
        out.push(format!("the type code has {} characters; it needs 21 (a credit code and 3 digits)", type_code.len()));
    } else {
        out.extend(credit_code(&type_code[..18], 1).into_iter().map(|f| format!("type code: {f}")));
        if !type_code[18..].bytes().all(|b| b.is_ascii_digit()) {
            out.push("type code: characters 19-21 must be digits".into());
        }
    }
    match issuer.len() {
        6 if issuer.bytes().all(|b| b.is_ascii_digit()) => {}
        18 => out.extend(credit_code(issuer, 1).into_iter().map(|f| format!("issuer: {f}"))),
        _ => out.push("the issuer must be a credit code (18 characters) or a division code (6 digits)".into()),
    }
    if serial.is_empty() || !serial.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()) {
        out.push("the serial must be digits and upper-case letters".into());
    }
    if version.len() != 3 || !version.bytes().all(|b| b.is_ascii_digit()) || *version == "000" {
        out.push("the version must be 3 digits from 001".into());
    }
    if out.is_empty() {
        match identifiers::mod37_36_check(&format!("{type_code}{issuer}{serial}{version}")) {
            Some(expected) if *check != expected.to_string() => out
                .push(format!("the check character (last part) should be {expected} if the parts before it are right")),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The day the checks are made on: fixed, so that no verdict changes with the clock.
    const TODAY: NaiveDate = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();

    #[test]
    fn a_wrong_check_character_is_named_with_the_right_one() {
        let first17 = "61092119900101123";
        let right = identifiers::citizen_id_check(first17).unwrap();
        let wrong = if right == '0' { '1' } else { '0' };
        let verdict = check(&format!("{first17}{wrong}"), None, TODAY);
        assert!(!verdict.valid);
        let text = verdict.lines.join("\n");
        assert!(text.contains(&format!("should be {right}")), "{text}");
        assert!(!text.contains(first17), "the number is echoed: {text}");
        assert!(check(&format!("{first17}{right}"), None, TODAY).valid);
        assert_eq!(complete(first17, None).unwrap(), format!("check character (18th): {right}"));
    }

    #[test]
    fn credit_codes_and_licences_complete_and_check() {
        // 18 digits that fail as a citizen identity number are not called valid on a guess,
        // even where they pass as a credit code, and are never echoed.
        let verdict = check("610902197703157895", None, TODAY);
        assert!(!verdict.valid && identifiers::credit_code("610902197703157895").is_ok());
        assert!(verdict.lines.iter().any(|l| l.contains("--kind credit-code")), "{:?}", verdict.lines);
        for (value, kind) in [
            ("610902197703157895", Some(Kind::CreditCode)),
            ("610902198001010019", Some(Kind::LicenceId)),
            ("6109021980010l0019", None),
            ("610902-19800101-0019", None),
        ] {
            let text = check(value, kind, TODAY).lines.join("\n");
            assert!(!text.contains("19800101") && !text.contains("19770315"), "{value} is echoed: {text}");
        }
        let completed = complete("91350100M000100Y4", Some(Kind::CreditCode)).unwrap();
        assert!(completed.starts_with("91350100M000100Y43"), "{completed}");
        assert!(check("91350100M000100Y43", None, TODAY).valid);
        assert!(check("91350100M000100Y43", None, TODAY).lines[0].starts_with("913501"), "masked too");
        let verdict = check("91350100M000100Y44", None, TODAY);
        assert!(
            verdict.lines.iter().any(|l| l.contains("character 18") && l.contains("should be 3")),
            "{:?}",
            verdict.lines
        );
        let verdict = check("91350100M0O0100Y43", None, TODAY);
        assert!(verdict.lines.iter().any(|l| l.contains("character 11 is outside")), "{:?}", verdict.lines);

        let licence = complete("1.2.156.3005.2.11100000000013338W011.610921.SN0001.001", None).unwrap();
        let full = licence.split_whitespace().next().unwrap();
        assert!(check(full, None, TODAY).valid, "{licence}");
        let wrong = format!("{}{}", &full[..full.len() - 1], if full.ends_with('A') { 'B' } else { 'A' });
        let verdict = check(&wrong, None, TODAY);
        assert!(
            verdict.lines.iter().any(|l| l.contains("check character (last part) should be")),
            "{:?}",
            verdict.lines
        );
    }

    #[test]
    fn shape_errors_name_the_position() {
        let verdict = check("6109211990A101123X", Some(Kind::CitizenId), TODAY);
        assert!(verdict.lines.iter().any(|l| l == "character 11 is not a digit"), "{:?}", verdict.lines);
        let verdict = check("610921199013011234", Some(Kind::CitizenId), TODAY);
        assert!(verdict.lines.iter().any(|l| l.contains("not a real birth date")), "{:?}", verdict.lines);
    }
}
