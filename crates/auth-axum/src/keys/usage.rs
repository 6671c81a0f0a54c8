//! `GET /{id}/usage?bucket=hour|day&since=<RFC 3339>`: the activity chart's
//! counts, per time bucket and outcome.

use auth_core::{audit::UsageBucket, audit::UsageCount, audit::UsageQuery};
use serde::{Deserialize, Serialize};
use time::{format_description::well_known::Rfc3339, Duration, OffsetDateTime};

use super::error::KeyApiError;

/// Most buckets one answer may hold (41 days of hours, 2.7 years of days).
pub(crate) const MAX_BUCKETS: i64 = 1000;

/// The query string.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageParams {
    /// `hour` (default) or `day`.
    pub(crate) bucket: Option<String>,
    /// RFC 3339; by default 7 days of hours, 30 of days.
    pub(crate) since: Option<String>,
}

/// The answer: every bucket from `since`'s to now's, oldest first, empty
/// ones included (zeros), so a chart can draw them as they come.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub(crate) struct Usage {
    pub(crate) bucket: UsageBucket,
    pub(crate) buckets: Vec<UsageCount>,
}

impl UsageParams {
    /// The store query for `key`, checked: 422 naming the bad parameter.
    pub(crate) fn query(
        &self,
        key_id: auth_core::KeyId,
        now: OffsetDateTime,
    ) -> Result<UsageQuery, KeyApiError> {
        let bucket = match self.bucket.as_deref() {
            None | Some("hour") => UsageBucket::Hour,
            Some("day") => UsageBucket::Day,
            Some(_) => return Err(KeyApiError::invalid("bucket must be hour or day")),
        };
        let since = match self.since.as_deref() {
            None => {
                now - match bucket {
                    UsageBucket::Hour => Duration::days(7),
                    UsageBucket::Day => Duration::days(30),
                }
            }
            Some(t) => OffsetDateTime::parse(t, &Rfc3339).map_err(|_| {
                KeyApiError::invalid(
                    "since must be an RFC 3339 date-time such as 2030-01-01T00:00:00Z",
                )
            })?,
        };
        if since > now {
            return Err(KeyApiError::invalid("since must not be in the future"));
        }
        let span = (now - since).whole_seconds() / bucket.seconds();
        if span >= MAX_BUCKETS {
            return Err(KeyApiError::invalid(format!(
                "At most {MAX_BUCKETS} buckets: since must be later, or bucket wider"
            )));
        }
        Ok(UsageQuery::new(key_id, since, bucket))
    }
}

/// `counted` (sparse, oldest first) spread over every bucket up to `now`.
pub(crate) fn dense(query: &UsageQuery, counted: Vec<UsageCount>, now: OffsetDateTime) -> Usage {
    let width = Duration::seconds(query.bucket.seconds());
    let last = query.bucket.start_of(now);
    let mut start = query.bucket.start_of(query.since);
    let mut counted = counted.into_iter().peekable();
    let mut buckets = Vec::new();
    while start <= last {
        let mut bucket = UsageCount::empty(start);
        while let Some(c) = counted.next_if(|c| c.start <= start) {
            if c.start == start {
                bucket = c;
            }
        }
        buckets.push(bucket);
        start += width;
    }
    Usage {
        bucket: query.bucket,
        buckets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auth_core::KeyId;
    use time::macros::datetime;

    #[test]
    fn parameters_are_checked_and_buckets_filled() {
        let now = datetime!(2030-01-10 12:30 UTC);
        let id = KeyId::random();
        let p = |bucket: Option<&str>, since: Option<&str>| UsageParams {
            bucket: bucket.map(Into::into),
            since: since.map(Into::into),
        };
        let q = p(None, None).query(id, now).unwrap();
        assert_eq!(
            (q.bucket, q.since),
            (UsageBucket::Hour, now - Duration::days(7))
        );
        let q = p(Some("day"), None).query(id, now).unwrap();
        assert_eq!(q.since, now - Duration::days(30));
        for (bucket, since, needle) in [
            (Some("week"), None, "bucket"),
            (None, Some("yesterday"), "since"),
            (None, Some("2030-01-11T00:00:00Z"), "future"),
            (Some("hour"), Some("2029-01-01T00:00:00Z"), "1000"),
        ] {
            let e = p(bucket, since).query(id, now).unwrap_err();
            assert!(
                matches!(e, KeyApiError::Auth(ref e) if e.status() == 422 && e.message().contains(needle)),
                "{needle}"
            );
        }

        let q = p(Some("hour"), Some("2030-01-10T09:45:00Z"))
            .query(id, now)
            .unwrap();
        let ten = datetime!(2030-01-10 10:00 UTC);
        let mut count = UsageCount::empty(ten);
        count.success = 3;
        let counted = vec![count];
        let usage = dense(&q, counted, now);
        let starts: Vec<_> = usage.buckets.iter().map(|b| b.start.hour()).collect();
        assert_eq!(starts, [9, 10, 11, 12]);
        let successes: Vec<_> = usage.buckets.iter().map(|b| b.success).collect();
        assert_eq!(successes, [0, 3, 0, 0]);
    }
}
