//! Connection URLs carry passwords: this wrapper prints them with the password
//! masked, so a URL can go into an error or a log line safely.

use std::fmt;

use url::Url;

#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Check that `value` is a URL with one of `schemes`; the error names the
    /// setting and never repeats the value.
    pub fn parse(setting: &str, value: &str, schemes: &[&str]) -> Result<Self, String> {
        let url =
            Url::parse(value).map_err(|error| format!("{setting} is not a valid URL ({error})"))?;
        if !schemes.contains(&url.scheme()) {
            return Err(format!(
                "{setting} must start with {}, not {}://",
                schemes
                    .iter()
                    .map(|scheme| format!("{scheme}://"))
                    .collect::<Vec<_>>()
                    .join(" or "),
                url.scheme()
            ));
        }
        Ok(Self(value.to_string()))
    }

    /// The URL with its password, for the client library only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The host the URL names, if any.
    pub fn host(&self) -> Option<String> {
        Url::parse(&self.0)
            .ok()?
            .host_str()
            .map(ToString::to_string)
    }

    /// The same URL with another path (for a URL that parses, as every
    /// `SecretUrl` does).
    pub fn with_path(&self, path: &str) -> Self {
        match Url::parse(&self.0) {
            Ok(mut url) => {
                url.set_path(path);
                Self(url.to_string())
            }
            Err(_) => self.clone(),
        }
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Url::parse(&self.0) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("***"));
                }
                f.write_str(url.as_str())
            }
            Err(_) => f.write_str("<unparseable url>"),
        }
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_debug_mask_the_password() {
        let url = SecretUrl::parse("AMQP_URL", "amqp://user:hunter2@host:5672/%2f", &["amqp"])
            .expect("valid");
        assert_eq!(url.to_string(), "amqp://user:***@host:5672/%2f");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(url.expose(), "amqp://user:hunter2@host:5672/%2f");
    }

    #[test]
    fn errors_name_the_setting_and_hide_the_value() {
        let error = SecretUrl::parse(
            "DATABASE_URL",
            "mysql://u:hunter2@h/db",
            &["postgres", "postgresql"],
        )
        .expect_err("wrong scheme");
        assert!(error.contains("DATABASE_URL"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        let error =
            SecretUrl::parse("DATABASE_URL", "hunter2", &["postgres"]).expect_err("not a url");
        assert!(
            error.contains("DATABASE_URL") && !error.contains("hunter2"),
            "{error}"
        );
    }
}
