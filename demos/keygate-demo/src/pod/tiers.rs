//! The pod's plans: "Keys are rate-limited per pod tier". Every key gets its
//! owner's tier quota, unless the key carries a rate limit of its own.

use std::{collections::HashSet, sync::Arc};

use auth_core::AuthContext;
use auth_ratelimit::{tiers::QuotaResolver, LimitStoreError, Quota};

/// Who is on the pro tier; everyone else is on the free tier. A real pod
/// would read its subscription from the billing system here: the answer is
/// cached by the limiter, so this is asked about once a minute per key.
#[derive(Clone, Debug)]
pub struct Plans {
    pro_users: Arc<HashSet<String>>,
    pro: Quota,
}

impl Plans {
    /// `pro_users` get `pro`; the others the free quota of the tier rule.
    pub fn new(pro_users: impl IntoIterator<Item = String>, pro: Quota) -> Self {
        Self {
            pro_users: Arc::new(pro_users.into_iter().collect()),
            pro,
        }
    }
}

impl QuotaResolver for Plans {
    async fn quota(&self, ctx: &AuthContext) -> Result<Option<Quota>, LimitStoreError> {
        Ok(self
            .pro_users
            .contains(ctx.actor().user_id())
            .then_some(self.pro))
    }
}
