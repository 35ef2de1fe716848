//! Departments: the names of the systems (and the platform) that put records on the exchange.

use std::{fmt, str::FromStr};

/// Why a string is not a department. The value is never repeated: errors go to logs and
/// dead-letter headers, and a value in the wrong place may be anything, a citizen's
/// identifier included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DepartmentError {
    /// Not of a department name's form.
    #[error("not a department name (lower-case letters, digits and single hyphens, starting with a letter, at most {} characters)", Department::MAX_NAME_LEN)]
    NotAName,
    /// The interner is full.
    #[error("more than {} distinct department names", Department::MAX_NAMES)]
    TooMany,
}

/// A department (or the platform itself) that puts records on the exchange: a name such as
/// `tax` or `market-regulation`, used in topics, headers, URLs and tokens.
///
/// Departments are configuration, not code: a record type's schema names its department, and
/// tokens name theirs. The name is interned (leaked once per distinct name, up to
/// [`Department::MAX_NAMES`]), so a `Department` stays `Copy` and `as_str` stays
/// `&'static str`; the cap bounds what hostile headers can make the interner hold.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Department(&'static str);

impl fmt::Debug for Department {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Every department name seen so far, interned.
static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());

impl Department {
    /// 不动产登记 real-estate registration.
    pub const LAND_REGISTRY: Department = Department("land-registry");
    /// 住房和城乡建设 / 房管 housing administration.
    pub const HOUSING: Department = Department("housing");
    /// 税务 tax.
    pub const TAX: Department = Department("tax");
    /// 住房公积金 housing provident fund.
    pub const PROVIDENT_FUND: Department = Department("provident-fund");
    /// 政务服务平台 the government-service platform itself (case events, licences it issues).
    pub const PLATFORM: Department = Department("platform");

    /// The departments the exchange ships record types for; others come from configuration.
    pub const BUILT_IN: [Department; 5] =
        [Self::LAND_REGISTRY, Self::HOUSING, Self::TAX, Self::PROVIDENT_FUND, Self::PLATFORM];

    /// The most distinct department names one process interns.
    pub const MAX_NAMES: usize = 4096;

    /// The longest department name.
    pub const MAX_NAME_LEN: usize = 40;

    /// The name used in topics, headers and URLs.
    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// The department named `name` if this process already knows it (built in, configured or
    /// seen), without learning a new one: for names a caller puts in a URL.
    pub fn known(name: &str) -> Option<Self> {
        if let Some(known) = Self::BUILT_IN.iter().find(|d| d.0 == name) {
            return Some(*known);
        }
        let names = NAMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        names.iter().find(|n| **n == name).map(|n| Department(n))
    }

    /// Whether `name` has a department's (or a record type's) form, without learning it.
    pub fn valid_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= Self::MAX_NAME_LEN
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && !name.ends_with('-')
            && !name.contains("--")
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }

    /// `name` as a department: lower-case ASCII letters and digits in words joined by single
    /// hyphens, starting with a letter, at most [`Self::MAX_NAME_LEN`] bytes.
    pub fn parse(name: &str) -> Result<Self, DepartmentError> {
        if !Self::valid_name(name) {
            return Err(DepartmentError::NotAName);
        }
        if let Some(known) = Self::BUILT_IN.iter().find(|d| d.0 == name) {
            return Ok(*known);
        }
        let mut names = NAMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(known) = names.iter().find(|n| **n == name) {
            return Ok(Department(known));
        }
        if names.len() >= Self::MAX_NAMES {
            return Err(DepartmentError::TooMany);
        }
        let interned: &'static str = Box::leak(name.to_owned().into_boxed_str());
        names.push(interned);
        Ok(Department(interned))
    }
}

impl fmt::Display for Department {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl FromStr for Department {
    type Err = DepartmentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for Department {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Department {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&name).map_err(serde::de::Error::custom)
    }
}
