//! Administrative division codes (GB/T 2260): the place a node, a record or a hop belongs to.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The two-digit province-level prefixes GB/T 2260 assigns (including Taiwan, Hong Kong, Macao).
const PROVINCES: &[u8] = &[
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52, 53, 54, 61, 62, 63,
    64, 65, 71, 81, 82,
];

/// A six-digit GB/T 2260 division code, checked for shape and for a real province prefix.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Division([u8; 6]);

/// Why a string is not a division code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DivisionError {
    /// Not exactly six ASCII digits.
    #[error("a division code is 6 digits (GB/T 2260), found {found_len} characters{}", if *.non_digit { " including a non-digit" } else { "" })]
    Shape {
        /// Characters found.
        found_len: usize,
        /// Whether something other than a digit was found.
        non_digit: bool,
    },
    /// The first two digits name no province.
    #[error("division code {0}: '{p}' is not a GB/T 2260 province prefix", p = &.0[..2])]
    UnknownProvince(String),
    /// A county part without a prefecture part (`xx00yy`).
    #[error("division code {0}: a county code needs a prefecture part (digits 3-4 are 00)")]
    CountyWithoutPrefecture(String),
}

/// The level of a division, read off its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `xx0000`.
    Province,
    /// `xxxx00`: a prefecture-level city.
    City,
    /// Anything else: a county, county-level city or district.
    County,
}

impl Division {
    /// Parses and checks a division code.
    pub fn parse(code: &str) -> Result<Self, DivisionError> {
        let bytes = code.as_bytes();
        let non_digit = !bytes.iter().all(u8::is_ascii_digit);
        if bytes.len() != 6 || non_digit {
            return Err(DivisionError::Shape { found_len: code.chars().count(), non_digit });
        }
        let province = (bytes[0] - b'0') * 10 + (bytes[1] - b'0');
        if !PROVINCES.contains(&province) {
            return Err(DivisionError::UnknownProvince(code.to_owned()));
        }
        if &bytes[2..4] == b"00" && &bytes[4..6] != b"00" {
            return Err(DivisionError::CountyWithoutPrefecture(code.to_owned()));
        }
        let mut digits = [0u8; 6];
        digits.copy_from_slice(bytes);
        Ok(Self(digits))
    }

    /// The code as a string slice.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever stored (checked in `parse`).
        std::str::from_utf8(&self.0).unwrap_or("000000")
    }

    /// The level this code names.
    pub fn level(&self) -> Level {
        match (&self.0[2..4], &self.0[4..6]) {
            (b"00", _) => Level::Province,
            (_, b"00") => Level::City,
            _ => Level::County,
        }
    }

    /// Whether this division is `ancestor` or lies under it (610921 is within 610900 and
    /// 610000).
    pub fn is_within(&self, ancestor: Division) -> bool {
        let mut current = Some(*self);
        while let Some(division) = current {
            if division == ancestor {
                return true;
            }
            current = division.parent();
        }
        false
    }

    /// The division one level up, derived from the code (610921 → 610900 → 610000 → none).
    pub fn parent(&self) -> Option<Division> {
        let mut parent = self.0;
        match self.level() {
            Level::Province => return None,
            Level::City => parent[2..4].copy_from_slice(b"00"),
            Level::County => parent[4..6].copy_from_slice(b"00"),
        }
        Some(Division(parent))
    }
}

impl fmt::Display for Division {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Division {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Division({})", self.as_str())
    }
}

impl std::str::FromStr for Division {
    type Err = DivisionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Division {
    type Error = DivisionError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Division> for String {
    fn from(value: Division) -> Self {
        value.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(code: &str, expected: Result<(Level, Option<&str>), &str>) {
        let got = Division::parse(code).map(|d| (d.level(), d.parent().map(|p| p.to_string())));
        match (got, expected) {
            (Ok((level, parent)), Ok((want_level, want_parent))) => {
                assert_eq!(level, want_level, "{code}");
                assert_eq!(parent.as_deref(), want_parent, "{code}");
            }
            (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{code}: {e}"),
            (got, want) => panic!("{code}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn codes_levels_and_parents() {
        check("610921", Ok((Level::County, Some("610900"))));
        check("610900", Ok((Level::City, Some("610000"))));
        check("610000", Ok((Level::Province, None)));
        check("110105", Ok((Level::County, Some("110100"))));
        check("61092", Err("6 digits"));
        check("61092a", Err("non-digit"));
        check("991234", Err("province prefix"));
        check("610021", Err("prefecture part"));
    }
}
