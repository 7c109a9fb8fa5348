//! The version a request names in its path: `latest` (or `-1`, as
//! Confluent's clients send it) or a number from 1.

use crate::error::RegistryError;

/// Which version of a subject a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    Latest,
    Number(u32),
}

impl VersionSpec {
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        if s == "latest" || s == "-1" {
            return Ok(Self::Latest);
        }
        match s.parse::<u32>() {
            Ok(n) if (1..=i32::MAX as u32).contains(&n) => Ok(Self::Number(n)),
            _ => Err(RegistryError::invalid_version(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_specs() {
        assert_eq!(VersionSpec::parse("latest"), Ok(VersionSpec::Latest));
        assert_eq!(VersionSpec::parse("-1"), Ok(VersionSpec::Latest));
        assert_eq!(VersionSpec::parse("4"), Ok(VersionSpec::Number(4)));
        assert_eq!(VersionSpec::parse("0").map_err(|e| e.code), Err(42202));
        assert_eq!(VersionSpec::parse("x").map_err(|e| e.code), Err(42202));
    }
}
