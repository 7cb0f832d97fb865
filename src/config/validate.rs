//! The checks every resolver uses ([`Validator`]): each failure is a [`ConfigError::Invalid`]
//! naming the file, the dotted key, what it takes and what it got.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ConfigError;

/// Builds [`ConfigError::Invalid`] values that name the file and key.
pub(super) struct Validator<'a> {
    pub(super) path: &'a Path,
}

impl Validator<'_> {
    pub(super) fn invalid(&self, key: &str, expected: &str, got: &str) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key: key.to_owned(),
            expected: expected.to_owned(),
            got: got.to_owned(),
        }
    }

    pub(super) fn at_least(&self, key: &str, value: i64, min: i64) -> Result<usize, ConfigError> {
        if value < min {
            return Err(self.invalid(key, &format!("an integer >= {min}"), &value.to_string()));
        }
        Ok(value as usize)
    }

    pub(super) fn between(
        &self,
        key: &str,
        value: i64,
        min: i64,
        max: i64,
    ) -> Result<usize, ConfigError> {
        if !(min..=max).contains(&value) {
            return Err(self.invalid(
                key,
                &format!("an integer from {min} to {max}"),
                &value.to_string(),
            ));
        }
        Ok(value as usize)
    }

    pub(super) fn positive(&self, key: &str, value: f64) -> Result<f64, ConfigError> {
        if !(value.is_finite() && value > 0.0) {
            return Err(self.invalid(key, "a number > 0", &fmt_number(value)));
        }
        Ok(value)
    }

    pub(super) fn non_negative(&self, key: &str, value: f64) -> Result<f64, ConfigError> {
        if !(value.is_finite() && value >= 0.0) {
            return Err(self.invalid(key, "a number >= 0", &fmt_number(value)));
        }
        Ok(value)
    }

    pub(super) fn seconds(&self, key: &str, value: f64) -> Result<Duration, ConfigError> {
        if !(0.0..1e9).contains(&value) {
            return Err(self.invalid(key, "a number of seconds from 0 to 1e9", &fmt_number(value)));
        }
        Ok(Duration::from_secs_f64(value))
    }

    /// A number of seconds above zero (a deadline of zero would end everything at once).
    pub(super) fn positive_seconds(&self, key: &str, value: f64) -> Result<Duration, ConfigError> {
        let d = self.seconds(key, value)?;
        if d.is_zero() {
            return Err(self.invalid(key, "a number of seconds > 0", "0"));
        }
        Ok(d)
    }

    pub(super) fn non_empty(&self, key: &str, value: &str) -> Result<String, ConfigError> {
        if value.trim().is_empty() {
            return Err(self.invalid(key, "a non-empty string", "an empty value"));
        }
        Ok(value.to_owned())
    }

    /// An `http://` or `https://` URL with a host.
    pub(super) fn url(&self, key: &str, value: &str) -> Result<String, ConfigError> {
        let value = self.non_empty(key, value)?;
        match reqwest::Url::parse(value.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(value),
            _ => Err(self.invalid(
                key,
                "an http:// or https:// URL such as https://generativelanguage.googleapis.com",
                &format!("{value:?}"),
            )),
        }
    }

    pub(super) fn input_path(
        &self,
        key: &str,
        flag: &str,
        file_name: &str,
        flag_value: &Option<PathBuf>,
        value: &Option<String>,
    ) -> Result<PathBuf, ConfigError> {
        let given = match (flag_value, value) {
            (Some(p), _) => p.clone(),
            (None, Some(v)) => PathBuf::from(self.non_empty(key, v)?),
            (None, None) => {
                return Err(self.invalid(
                    key,
                    &format!("a folder holding {file_name}, or a file (or {flag} PATH)"),
                    "nothing",
                ));
            }
        };
        // The original names folders (`data/themes/`) and reads its file inside them.
        let is_folder = given.is_dir() || given.as_os_str().to_string_lossy().ends_with('/');
        Ok(if is_folder {
            given.join(file_name)
        } else {
            given
        })
    }
}

/// A number for a message: `1e308`, never its 309 digits.
pub(super) fn fmt_number(v: f64) -> String {
    let a = v.abs();
    if v.is_finite() && a != 0.0 && !(1e-4..1e9).contains(&a) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}
