//! Scopes: validated permission strings carried by a key, and implication policies.

use std::{collections::HashMap, fmt, sync::Arc};

use serde::{Deserialize, Serialize};

/// Longest scope accepted.
pub const MAX_SCOPE_LEN: usize = 64;

/// The scope string is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope {0:?}: 1-64 characters, letters, digits and ':._-', starting with a letter or digit")]
pub struct InvalidScope(pub String);

/// Checks one scope: `read:entities`, `hub-protocol.read`, `skills.invoke`, …
pub fn validate_scope(s: &str) -> Result<(), InvalidScope> {
    let ok = !s.is_empty()
        && s.len() <= MAX_SCOPE_LEN
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidScope(s.chars().take(MAX_SCOPE_LEN + 1).collect()))
    }
}

/// A set of scopes. Additive: holding a scope never takes anything away.
///
/// Cheap to clone (shared, sorted). A set may also be *unrestricted*, which
/// holds every scope: what a [`ScopePolicy`] wildcard such as `admin` expands to.
///
/// ```
/// use auth_core::ScopeSet;
/// let s = ScopeSet::parse(["hub-protocol.read", "skills.invoke"]).unwrap();
/// assert!(s.has("skills.invoke"));
/// assert!(s.has_any(["read:entities", "hub-protocol.read"]));
/// assert!(!s.has_all(["skills.invoke", "chat.stream"]));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ScopeSet {
    scopes: Arc<[Box<str>]>,
    unrestricted: bool,
}

impl ScopeSet {
    /// The empty set.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Validates and collects scopes; duplicates are merged.
    pub fn parse<I, S>(scopes: I) -> Result<Self, InvalidScope>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut v = Vec::new();
        for s in scopes {
            let s = s.as_ref();
            validate_scope(s)?;
            v.push(Box::<str>::from(s));
        }
        Ok(Self::from_sorted(v, false))
    }

    fn from_sorted(mut v: Vec<Box<str>>, unrestricted: bool) -> Self {
        v.sort_unstable();
        v.dedup();
        Self {
            scopes: v.into(),
            unrestricted,
        }
    }

    /// Whether the set holds `scope`.
    pub fn has(&self, scope: &str) -> bool {
        self.unrestricted || self.scopes.binary_search_by(|s| (**s).cmp(scope)).is_ok()
    }

    /// Whether the set holds at least one of `scopes`.
    pub fn has_any<I: IntoIterator<Item = S>, S: AsRef<str>>(&self, scopes: I) -> bool {
        scopes.into_iter().any(|s| self.has(s.as_ref()))
    }

    /// Whether the set holds every one of `scopes`.
    pub fn has_all<I: IntoIterator<Item = S>, S: AsRef<str>>(&self, scopes: I) -> bool {
        scopes.into_iter().all(|s| self.has(s.as_ref()))
    }

    /// The first of `scopes` that the set lacks, if any.
    pub fn first_missing<'a, I: IntoIterator<Item = &'a str>>(&self, scopes: I) -> Option<&'a str> {
        scopes.into_iter().find(|s| !self.has(s))
    }

    /// Whether this set holds every scope.
    pub fn is_unrestricted(&self) -> bool {
        self.unrestricted
    }

    /// The scopes listed in the set, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.scopes.iter().map(|s| &**s)
    }

    /// Number of listed scopes.
    pub fn len(&self) -> usize {
        self.scopes.len()
    }

    /// Whether no scope is listed (and the set is not unrestricted).
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty() && !self.unrestricted
    }

    /// The scopes held by both sets: what a key may do while acting as a subject.
    pub fn intersect(&self, other: &ScopeSet) -> ScopeSet {
        match (self.unrestricted, other.unrestricted) {
            (true, true) => self.clone(),
            (true, false) => other.clone(),
            (false, true) => self.clone(),
            (false, false) => {
                let v = self
                    .iter()
                    .filter(|s| other.has(s))
                    .map(Box::from)
                    .collect();
                Self::from_sorted(v, false)
            }
        }
    }

    /// Whether every scope of `self` is held by `ceiling`.
    pub fn is_subset_of(&self, ceiling: &ScopeSet) -> bool {
        if self.unrestricted {
            return ceiling.unrestricted;
        }
        self.iter().all(|s| ceiling.has(s))
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut l = f.debug_set();
        l.entries(self.iter());
        if self.unrestricted {
            l.entry(&"*");
        }
        l.finish()
    }
}

impl Serialize for ScopeSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for ScopeSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        ScopeSet::parse(v).map_err(serde::de::Error::custom)
    }
}

/// How scopes imply others, supplied by the application.
///
/// ```
/// use auth_core::{scope::ScopePolicy, ScopeSet};
/// let policy = ScopePolicy::new()
///     .wildcard("admin")
///     .implies("write:entities", ["read:entities"]);
/// let s = policy.expand(&ScopeSet::parse(["write:entities"]).unwrap());
/// assert!(s.has("read:entities"));
/// assert!(policy.expand(&ScopeSet::parse(["admin"]).unwrap()).has("anything"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct ScopePolicy {
    implies: HashMap<Box<str>, Vec<Box<str>>>,
    wildcards: Vec<Box<str>>,
}

impl ScopePolicy {
    /// A policy with no implications.
    pub fn new() -> Self {
        Self::default()
    }

    /// Holding `scope` grants every scope.
    pub fn wildcard(mut self, scope: &str) -> Self {
        self.wildcards.push(scope.into());
        self
    }

    /// Holding `scope` also grants each of `implied` (transitively).
    pub fn implies<I: IntoIterator<Item = S>, S: AsRef<str>>(
        mut self,
        scope: &str,
        implied: I,
    ) -> Self {
        self.implies
            .entry(scope.into())
            .or_default()
            .extend(implied.into_iter().map(|s| Box::from(s.as_ref())));
        self
    }

    /// The set with every implied scope added.
    pub fn expand(&self, set: &ScopeSet) -> ScopeSet {
        if self.implies.is_empty() && self.wildcards.is_empty() {
            return set.clone();
        }
        let unrestricted = set.unrestricted || self.wildcards.iter().any(|w| set.has(w));
        let mut out: Vec<Box<str>> = set.scopes.to_vec();
        let mut i = 0;
        while i < out.len() {
            if let Some(more) = self.implies.get(&out[i]) {
                for m in more {
                    if !out.contains(m) {
                        out.push(m.clone());
                    }
                }
            }
            i += 1;
        }
        ScopeSet::from_sorted(out, unrestricted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_scopes() {
        for s in ["", " read", "read entities", "-x", &"a".repeat(65), "é"] {
            assert!(validate_scope(s).is_err(), "{s:?}");
        }
        for s in [
            "read:entities",
            "hub-protocol.read",
            "skills.invoke",
            "sudo",
        ] {
            validate_scope(s).unwrap();
        }
    }

    #[test]
    fn intersection_and_subset() {
        let a = ScopeSet::parse(["a", "b", "c"]).unwrap();
        let b = ScopeSet::parse(["b", "c", "d"]).unwrap();
        let i = a.intersect(&b);
        assert_eq!(i.iter().collect::<Vec<_>>(), ["b", "c"]);
        assert!(i.is_subset_of(&a) && i.is_subset_of(&b));
        assert!(!a.is_subset_of(&b));
    }

    #[test]
    fn implications_are_transitive() {
        let p = ScopePolicy::new().implies("a", ["b"]).implies("b", ["c"]);
        let s = p.expand(&ScopeSet::parse(["a"]).unwrap());
        assert!(s.has_all(["a", "b", "c"]));
        assert!(!s.has("d"));
    }
}
