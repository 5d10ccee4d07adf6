//! Namespaces and bearer tokens.
//!
//! A token opens exactly one namespace; a database name lives inside a
//! namespace. In the engine, names of the `default` namespace are stored as
//! given and names of namespace `ns` as `ns:name`; client names may not
//! contain `:`, so no namespace can name another's databases.
//!
//! A token marked `admin` may also change quotas: a tenant's own token must
//! not be able to lift the limit that protects everyone else.

use std::collections::HashMap;

pub const DEFAULT_NAMESPACE: &str = "default";

/// What a token opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub namespace: String,
    pub admin: bool,
}

/// Bearer token → grant.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_token: HashMap<String, Grant>,
}

pub use kvlite_api::valid_namespace;

impl Tokens {
    /// Parse `namespace token [admin]` entries, one per line (or separated
    /// by `;`); blank lines and `#` comments are ignored.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut by_token = HashMap::new();
        for (i, entry) in text.split(['\n', ';']).enumerate() {
            let entry = entry.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            let mut parts = entry.split_whitespace();
            let (Some(ns), Some(token), role, None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(format!(
                    "entry {}: expected `namespace token [admin]`",
                    i + 1
                ));
            };
            let admin = match role {
                None => false,
                Some("admin") => true,
                Some(other) => {
                    return Err(format!(
                        "entry {}: unknown role {other:?} (the only role is `admin`)",
                        i + 1
                    ));
                }
            };
            if !valid_namespace(ns) {
                return Err(format!(
                    "entry {}: namespace {ns:?} must be 1-64 of [A-Za-z0-9_-]",
                    i + 1
                ));
            }
            if token.len() < 16 {
                return Err(format!(
                    "entry {}: token for {ns:?} is shorter than 16 characters",
                    i + 1
                ));
            }
            let grant = Grant {
                namespace: ns.to_string(),
                admin,
            };
            if by_token.insert(token.to_string(), grant).is_some() {
                return Err(format!("entry {}: token used twice", i + 1));
            }
        }
        Ok(Tokens { by_token })
    }

    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    /// What a token opens.
    pub fn grant_for(&self, token: &str) -> Option<&Grant> {
        // Compare against every token in constant time per token, so the
        // time taken does not reveal how much of a guess was right.
        let mut found = None;
        for (t, grant) in &self.by_token {
            if constant_time_eq(t.as_bytes(), token.as_bytes()) {
                found = Some(grant);
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Maps a client's database names into the engine's name space, and says
/// whether the connection may administer them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    name: String,
    admin: bool,
}

impl Namespace {
    pub fn new(ns: &str) -> Self {
        Namespace {
            name: ns.to_string(),
            admin: false,
        }
    }

    pub fn admin(ns: &str) -> Self {
        Namespace {
            name: ns.to_string(),
            admin: true,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_admin(&self) -> bool {
        self.admin
    }

    fn is_default(&self) -> bool {
        self.name == DEFAULT_NAMESPACE
    }

    /// The engine's name for a client's database name.
    pub fn engine_name(&self, name: &str) -> Result<String, kvlite_api::Error> {
        // `ns:name` is tenant ns's database, as it is in process: an
        // administrator may name any tenant's; a tenant names only its own.
        if self.admin
            && let Some((ns, rest)) = name.split_once(':')
            && valid_namespace(ns)
            && !rest.is_empty()
            && !rest.contains(':')
        {
            return Ok(if ns == DEFAULT_NAMESPACE {
                rest.to_string()
            } else {
                name.to_string()
            });
        }
        if name.contains(':') {
            return Err(kvlite_api::Error::invalid(
                kvlite_api::InvalidKind::Name,
                format!("database names may not contain ':' ({name:?})"),
            ));
        }
        Ok(if self.is_default() {
            name.to_string()
        } else {
            format!("{}:{name}", self.name)
        })
    }

    /// The client's name for an engine name, if it is in this namespace.
    pub fn client_name<'a>(&self, engine_name: &'a str) -> Option<&'a str> {
        if self.is_default() {
            (!engine_name.contains(':')).then_some(engine_name)
        } else {
            engine_name
                .strip_prefix(self.name.as_str())
                .and_then(|rest| rest.strip_prefix(':'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn administrators_name_any_tenants_database() {
        let admin = Namespace::admin("ops");
        assert_eq!(admin.engine_name("x").unwrap(), "ops:x");
        assert_eq!(admin.engine_name("alice:x").unwrap(), "alice:x");
        assert_eq!(admin.engine_name("default:x").unwrap(), "x");
        assert!(admin.engine_name("alice:x:y").is_err());
        let tenant = Namespace::new("beta");
        assert!(tenant.engine_name("alice:x").is_err());
        assert_eq!(tenant.engine_name("x").unwrap(), "beta:x");
    }

    #[test]
    fn tokens_parse_and_reject_bad_entries() {
        let t = Tokens::parse(
            "# tenants\nalpha aaaaaaaaaaaaaaaaaaaa\n\nbeta bbbbbbbbbbbbbbbbbbbb admin # note",
        )
        .expect("parse");
        let grant = |tok: &str| t.grant_for(tok).map(|g| (g.namespace.as_str(), g.admin));
        assert_eq!(t.len(), 2);
        assert_eq!(grant("aaaaaaaaaaaaaaaaaaaa"), Some(("alpha", false)));
        assert_eq!(grant("bbbbbbbbbbbbbbbbbbbb"), Some(("beta", true)));
        assert_eq!(grant("aaaaaaaaaaaaaaaaaaab"), None);
        assert_eq!(grant(""), None);
        assert!(Tokens::parse("alpha aaaaaaaaaaaaaaaaaaaa root").is_err());
        assert!(Tokens::parse("alpha short").is_err());
        assert!(Tokens::parse("al/pha aaaaaaaaaaaaaaaaaaaa").is_err());
        assert!(Tokens::parse("alpha").is_err());
        assert!(
            Tokens::parse("a aaaaaaaaaaaaaaaaaaaa; b aaaaaaaaaaaaaaaaaaaa").is_err(),
            "duplicate token"
        );
    }

    #[test]
    fn namespaces_cannot_reach_each_other() {
        let default = Namespace::new(DEFAULT_NAMESPACE);
        let alpha = Namespace::new("alpha");
        assert_eq!(default.engine_name("db").as_deref(), Ok("db"));
        assert_eq!(alpha.engine_name("db").as_deref(), Ok("alpha:db"));
        assert!(default.engine_name("alpha:db").is_err());
        assert_eq!(alpha.client_name("alpha:db"), Some("db"));
        assert_eq!(alpha.client_name("alphabet:db"), None);
        assert_eq!(alpha.client_name("db"), None);
        assert_eq!(default.client_name("alpha:db"), None);
        assert_eq!(default.client_name("db"), Some("db"));
    }
}
