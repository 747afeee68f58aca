//! Parsing of `key=value,key=value` option strings, the syntax every
//! cloud-hypervisor option uses (`--device path=...,iommu=on`).

use std::collections::BTreeMap;

/// Why an option string did not parse. Each variant names the option, the
/// bad part and what would be accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// A key the option does not know.
    #[error("--{option}: unknown key '{key}'; known keys: {known}")]
    UnknownKey {
        /// The option being parsed (without dashes).
        option: &'static str,
        /// The unknown key.
        key: String,
        /// The keys that option accepts, comma separated.
        known: String,
    },
    /// A key given twice.
    #[error("--{option}: key '{key}' is given more than once")]
    DuplicateKey {
        /// The option being parsed.
        option: &'static str,
        /// The repeated key.
        key: String,
    },
    /// A `key=` with nothing after it, or an empty option string.
    #[error("--{option}: '{part}' has no value; write {key}=<value>")]
    MissingValue {
        /// The option being parsed.
        option: &'static str,
        /// The key without a value.
        key: String,
        /// The offending part of the string.
        part: String,
    },
    /// A value that does not parse for its key.
    #[error("--{option}: {key}={value} is not valid: {expected}")]
    InvalidValue {
        /// The option being parsed.
        option: &'static str,
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What the key accepts.
        expected: String,
    },
    /// A key the option cannot do without.
    #[error("--{option}: '{key}=' is required")]
    MissingKey {
        /// The option being parsed.
        option: &'static str,
        /// The required key.
        key: &'static str,
    },
}

/// A parsed option string: its leading bare word (if the option allows one,
/// e.g. `--vsmmu cmdqv,backend=emulated`) and its `key=value` pairs.
#[derive(Debug)]
pub struct Options {
    option: &'static str,
    /// The leading word without `=`, when allowed.
    pub word: Option<String>,
    pairs: BTreeMap<String, String>,
}

impl Options {
    /// Parse `input` for `--option`, accepting only `known` keys. With
    /// `leading_word`, the first part may be a bare word.
    pub fn parse(
        option: &'static str,
        input: &str,
        known: &[&str],
        leading_word: bool,
    ) -> Result<Self, OptionError> {
        let mut word = None;
        let mut pairs = BTreeMap::new();
        // An empty string is an option with every key at its default.
        for (index, part) in split_top_level(input).into_iter().enumerate() {
            let Some((key, value)) = part.split_once('=') else {
                if index == 0 && leading_word && !part.is_empty() {
                    word = Some(part.to_string());
                    continue;
                }
                return Err(OptionError::MissingValue {
                    option,
                    key: part.to_string(),
                    part: part.to_string(),
                });
            };
            if !known.contains(&key) {
                return Err(OptionError::UnknownKey {
                    option,
                    key: key.to_string(),
                    known: known.join(", "),
                });
            }
            if value.is_empty() {
                return Err(OptionError::MissingValue {
                    option,
                    key: key.to_string(),
                    part: part.to_string(),
                });
            }
            if pairs.insert(key.to_string(), value.to_string()).is_some() {
                return Err(OptionError::DuplicateKey {
                    option,
                    key: key.to_string(),
                });
            }
        }
        Ok(Options {
            option,
            word,
            pairs,
        })
    }

    /// The raw value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.get(key).map(String::as_str)
    }

    /// The value of a required key.
    pub fn require(&self, key: &'static str) -> Result<&str, OptionError> {
        self.get(key).ok_or(OptionError::MissingKey {
            option: self.option,
            key,
        })
    }

    /// An error for `key=value` naming what would be accepted.
    pub fn invalid(&self, key: &str, value: &str, expected: &str) -> OptionError {
        OptionError::InvalidValue {
            option: self.option,
            key: key.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }

    /// An `on|off` switch, `default` when absent.
    pub fn toggle(&self, key: &str, default: bool) -> Result<bool, OptionError> {
        match self.get(key) {
            None => Ok(default),
            Some("on") => Ok(true),
            Some("off") => Ok(false),
            Some(other) => Err(self.invalid(key, other, "use 'on' or 'off'")),
        }
    }

    /// A decimal or 0x-hex integer, `None` when absent.
    pub fn number<T: TryFrom<u64>>(&self, key: &str) -> Result<Option<T>, OptionError> {
        let Some(raw) = self.get(key) else {
            return Ok(None);
        };
        parse_u64(raw)
            .and_then(|n| T::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| self.invalid(key, raw, "expected a whole number in range"))
    }

    /// A size with an optional K/M/G/T suffix (powers of 1024), `None` when absent.
    pub fn size(&self, key: &str) -> Result<Option<u64>, OptionError> {
        let Some(raw) = self.get(key) else {
            return Ok(None);
        };
        parse_size(raw)
            .map(Some)
            .ok_or_else(|| self.invalid(key, raw, "expected a size such as 512M, 2G or 1073741824"))
    }
}

/// The comma-separated parts of `input`, except commas inside `[...]`
/// (cloud-hypervisor's lists: `cpus=[0-3,6],distances=[1@20]`). Empty
/// input has no parts.
pub fn split_top_level(input: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    if input.is_empty() {
        return parts;
    }
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in input.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&input[start..]);
    parts
}

/// The items of a `[a,b,c]` list value (brackets optional for one item).
pub fn list_items(raw: &str) -> Vec<&str> {
    let inner = raw
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(raw);
    inner.split(',').filter(|s| !s.is_empty()).collect()
}

/// A decimal or 0x-prefixed hexadecimal number.
pub fn parse_u64(raw: &str) -> Option<u64> {
    match raw.strip_prefix("0x").or_else(|| raw.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => raw.parse().ok(),
    }
}

/// A byte count with an optional K/M/G/T suffix (powers of 1024).
pub fn parse_size(raw: &str) -> Option<u64> {
    let (digits, shift) = match raw.chars().last()? {
        'K' | 'k' => (&raw[..raw.len() - 1], 10),
        'M' | 'm' => (&raw[..raw.len() - 1], 20),
        'G' | 'g' => (&raw[..raw.len() - 1], 30),
        'T' | 't' => (&raw[..raw.len() - 1], 40),
        _ => (raw, 0),
    };
    let value: u64 = digits.parse().ok()?;
    value.checked_mul(1u64 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_and_leading_word() {
        let opts = Options::parse("vsmmu", "cmdqv,backend=emulated", &["backend"], true).unwrap();
        assert_eq!(opts.word.as_deref(), Some("cmdqv"));
        assert_eq!(opts.get("backend"), Some("emulated"));
    }

    #[test]
    fn unknown_key_names_the_key_and_the_known_ones() {
        let err =
            Options::parse("device", "path=/x,iommmu=on", &["path", "iommu"], false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--device: unknown key 'iommmu'; known keys: path, iommu"
        );
    }

    #[test]
    fn duplicate_key_is_refused() {
        let err = Options::parse("device", "iommu=on,iommu=off", &["iommu"], false).unwrap_err();
        assert_eq!(
            err,
            OptionError::DuplicateKey {
                option: "device",
                key: "iommu".into()
            }
        );
    }

    #[test]
    fn bare_word_is_refused_where_no_leading_word_is_allowed() {
        let err = Options::parse("memory", "2G", &["size"], false).unwrap_err();
        assert!(matches!(err, OptionError::MissingValue { .. }), "{err}");
        let err = Options::parse("memory", "size=", &["size"], false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--memory: 'size=' has no value; write size=<value>"
        );
    }

    #[test]
    fn toggle_accepts_only_on_and_off() {
        let opts = Options::parse("device", "iommu=yes", &["iommu"], false).unwrap();
        assert_eq!(
            opts.toggle("iommu", false).unwrap_err().to_string(),
            "--device: iommu=yes is not valid: use 'on' or 'off'"
        );
        let opts = Options::parse("device", "iommu=on", &["iommu"], false).unwrap();
        assert!(opts.toggle("iommu", false).unwrap());
    }

    #[test]
    fn sizes_parse_with_suffixes_and_refuse_overflow() {
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1T"), Some(1 << 40));
        assert_eq!(parse_size("99999999999T"), None);
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("1.5G"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn numbers_parse_decimal_and_hex_and_check_range() {
        let opts = Options::parse("device", "pci_segment=0x10", &["pci_segment"], false).unwrap();
        assert_eq!(opts.number::<u16>("pci_segment").unwrap(), Some(16));
        let opts = Options::parse("device", "pci_segment=70000", &["pci_segment"], false).unwrap();
        assert!(opts.number::<u16>("pci_segment").is_err());
    }
}
