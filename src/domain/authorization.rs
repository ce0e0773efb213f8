//! Who may ask for a disconnect that names no token (by connection id, a
//! whole company or a whole application): the broker users of
//! `AUTHORIZED_PUBLISHERS`, each for the applications it lists. RabbitMQ
//! checks a message's `user_id` against the user of the connection that
//! published it, so a publisher cannot claim another's name.

use std::collections::{HashMap, HashSet};

use super::scope::ClientId;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authorizations {
    grants: HashMap<String, Grant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Grant {
    Every,
    Applications(HashSet<String>),
}

impl Authorizations {
    /// `user:application` pairs, comma-separated; `*` for every application
    /// (`billing:app-a,billing:app-b,ops:*`). Empty: nobody.
    pub fn parse(setting: &str, value: &str) -> Result<Self, String> {
        let mut grants: HashMap<String, Grant> = HashMap::new();
        for pair in value
            .split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
        {
            let Some((user, application)) = pair.split_once(':') else {
                return Err(format!(
                    "{setting}: `{pair}` is not a user:application pair (`*` for every application)"
                ));
            };
            let (user, application) = (user.trim(), application.trim());
            if user.is_empty() || application.is_empty() {
                return Err(format!(
                    "{setting}: `{pair}` has an empty user or application"
                ));
            }
            let grant = grants
                .entry(user.to_string())
                .or_insert_with(|| Grant::Applications(HashSet::new()));
            match (application, &mut *grant) {
                ("*", _) => *grant = Grant::Every,
                (_, Grant::Every) => {}
                (application, Grant::Applications(set)) => {
                    set.insert(application.to_string());
                }
            }
        }
        Ok(Self { grants })
    }

    /// Whether `publisher` (a request's AMQP `user_id`, if it had one) may
    /// disconnect in `client_id`.
    pub fn allows(&self, publisher: Option<&str>, client_id: &ClientId) -> bool {
        match publisher.and_then(|user| self.grants.get(user)) {
            Some(Grant::Every) => true,
            Some(Grant::Applications(set)) => set.contains(client_id.as_str()),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str) -> ClientId {
        ClientId::parse(name.into()).expect("valid")
    }

    #[test]
    fn each_user_may_ask_for_the_applications_it_is_granted_and_star_is_every_one() {
        let grants = Authorizations::parse(
            "AUTHORIZED_PUBLISHERS",
            "billing:app-a, billing:app-b,ops:*",
        )
        .expect("valid");
        assert!(grants.allows(Some("billing"), &app("app-a")));
        assert!(grants.allows(Some("billing"), &app("app-b")));
        assert!(!grants.allows(Some("billing"), &app("app-c")));
        assert!(grants.allows(Some("ops"), &app("anything")));
        assert!(!grants.allows(Some("intruder"), &app("app-a")));
        assert!(!grants.allows(None, &app("app-a")), "no user_id, no grant");
        assert!(!Authorizations::default().allows(Some("ops"), &app("app-a")));
    }

    #[test]
    fn a_malformed_pair_is_refused_by_name() {
        for value in ["billing", "billing:", ":app-a", "a:b,c"] {
            let error = Authorizations::parse("AUTHORIZED_PUBLISHERS", value).expect_err(value);
            assert!(error.contains("AUTHORIZED_PUBLISHERS"), "{error}");
        }
    }
}
