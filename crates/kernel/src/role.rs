//! Role names as a type: the supervisor, the handle registry, the
//! readiness board and the role table all say `RoleName::Storage`, so a
//! publisher and the supervisor's withdraw cannot disagree on a spelling.

use std::fmt;

/// Every role a macronode binary can run, production roles in start order
/// (downstreams before the roles that call them), then the test role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RoleName {
    Storage,
    Index,
    Mailbox,
    Registry,
    Overlay,
    Omnigate,
    /// A built-in role that can be told to fail, panic or hold requests
    /// open (feature `test-roles`): the supervisor is tested for real.
    TestRole,
}

impl RoleName {
    /// Every role, in start order.
    pub const ALL: [RoleName; 7] = [
        RoleName::Storage,
        RoleName::Index,
        RoleName::Mailbox,
        RoleName::Registry,
        RoleName::Overlay,
        RoleName::Omnigate,
        RoleName::TestRole,
    ];

    /// The production roles (all but the test role), in start order.
    pub const PRODUCTION: &'static [RoleName] = Self::ALL.split_at(6).0;

    /// The name in `--roles`, config sections, logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            RoleName::Storage => "storage",
            RoleName::Index => "index",
            RoleName::Mailbox => "mailbox",
            RoleName::Registry => "registry",
            RoleName::Overlay => "overlay",
            RoleName::Omnigate => "omnigate",
            RoleName::TestRole => "testrole",
        }
    }

    /// The cargo feature that compiles the role in.
    pub const fn feature(self) -> &'static str {
        match self {
            RoleName::TestRole => "test-roles",
            other => other.as_str(),
        }
    }

    pub fn parse(s: &str) -> Option<RoleName> {
        RoleName::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in RoleName::ALL {
            assert_eq!(RoleName::parse(r.as_str()), Some(r));
        }
        assert_eq!(RoleName::parse("nosuch"), None);
        assert_eq!(RoleName::TestRole.feature(), "test-roles");
        assert_eq!(RoleName::PRODUCTION.len(), 6);
        assert!(!RoleName::PRODUCTION.contains(&RoleName::TestRole));
    }
}
