//! The live feed: activities the app's backend publishes (`post`, `comment`, `like`, …), stored
//! so a client can page through what it missed, and aggregated into trending targets and
//! per-type statistics. Fan-out to sockets is the realtime layer's job; this module only says
//! what was stored and who may see it.
//!
//! Who sees an activity (the "viewer's feed"): activities whose actor the viewer follows, any
//! audience; plus, unless `following_only`, every `public` activity. The viewer's own
//! activities are never in their feed, matching live delivery, where the actor's own sockets
//! are skipped.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use entity::{feed_activity, follow};
use sea_orm::sea_query::{Expr, Func, Query};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Set,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::{AppError, AppResult, FieldError};
use crate::time::serde_rfc3339;
use crate::write_path::WritePath;

/// Longest `content`, in characters.
pub const MAX_CONTENT_CHARS: usize = 4000;
/// Largest `metadata`, serialized, in bytes: enough for ids and counters, not for documents.
pub const MAX_METADATA_BYTES: usize = 4096;
/// Longest `targetId`, in characters.
pub const MAX_TARGET_ID_CHARS: usize = 128;
/// The window trending is computed over.
const TRENDING_WINDOW_HOURS: i64 = 24;
/// Most `types` one feed query may filter on.
pub const MAX_TYPES: usize = 32;

/// Whether `s` is a valid activity or target type (`^[a-z][a-z_]{0,31}$`).
pub fn is_valid_type(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && s.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c == '_')
}

/// Who an activity is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Audience {
    /// The actor's followers only (the default).
    #[default]
    Followers,
    /// Followers and every `feed:public` subscriber.
    Public,
}

impl Audience {
    /// The stored and wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Followers => "followers",
            Self::Public => "public",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "public" {
            Self::Public
        } else {
            Self::Followers
        }
    }
}

/// An activity as stored and as sent to clients.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    pub id: String,
    pub activity_type: String,
    pub actor_id: String,
    pub target_id: String,
    pub target_type: String,
    /// `null` when the backend sent none.
    #[schema(required = true)]
    pub content: Option<String>,
    /// An object, or `null` when the backend sent none.
    pub metadata: Value,
    pub audience: Audience,
    #[serde(with = "serde_rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl From<feed_activity::Model> for Activity {
    fn from(row: feed_activity::Model) -> Self {
        Self {
            id: row.id,
            activity_type: row.activity_type,
            actor_id: row.actor_id,
            target_id: row.target_id,
            target_type: row.target_type,
            content: row.content,
            metadata: row
                .metadata
                .and_then(|m| serde_json::from_str(&m).ok())
                .unwrap_or(Value::Null),
            audience: Audience::parse(&row.audience),
            created_at: row.created_at,
        }
    }
}

/// An activity to publish, as the service API received it.
#[derive(Clone, Debug)]
pub struct NewActivity {
    pub activity_type: String,
    pub actor_id: String,
    pub target_id: String,
    pub target_type: String,
    pub content: Option<String>,
    pub metadata: Option<Value>,
    pub audience: Audience,
}

impl NewActivity {
    /// Checks every field, reporting all failures at once under their wire names.
    pub fn validate(&self) -> AppResult<()> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, field: &str, message: String| {
            if !ok {
                errors.push(FieldError::new(field, message));
            }
        };
        let type_rule = "must match ^[a-z][a-z_]{0,31}$".to_owned();
        check(
            is_valid_type(&self.activity_type),
            "activityType",
            type_rule.clone(),
        );
        check(is_valid_type(&self.target_type), "targetType", type_rule);
        check(
            is_user_id(&self.actor_id),
            "actorId",
            "must be 1 to 128 characters".to_owned(),
        );
        let target_len = self.target_id.chars().count();
        check(
            (1..=MAX_TARGET_ID_CHARS).contains(&target_len),
            "targetId",
            format!("must be 1 to {MAX_TARGET_ID_CHARS} characters"),
        );
        if let Some(content) = &self.content {
            check(
                content.chars().count() <= MAX_CONTENT_CHARS,
                "content",
                format!("must be at most {MAX_CONTENT_CHARS} characters"),
            );
        }
        match &self.metadata {
            None | Some(Value::Null) => {}
            Some(Value::Object(_)) => {
                let size = self.metadata.as_ref().map_or(0, |m| m.to_string().len());
                check(
                    size <= MAX_METADATA_BYTES,
                    "metadata",
                    format!("must be at most {MAX_METADATA_BYTES} bytes serialized"),
                );
            }
            Some(_) => check(false, "metadata", "must be an object".to_owned()),
        }
        match errors.first() {
            None => Ok(()),
            Some(first) => Err(AppError::InvalidPayload {
                message: format!("{}: {}", first.field, first.message),
                details: errors,
            }),
        }
    }
}

fn is_user_id(id: &str) -> bool {
    !id.is_empty() && id.chars().count() <= crate::auth::MAX_USER_ID_LEN
}

/// How far back a feed query looks (`time_range`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeRange {
    Hour,
    Day,
    Week,
    Month,
}

impl TimeRange {
    /// Parses `1h`, `24h`, `7d` or `30d`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "1h" => Some(Self::Hour),
            "24h" => Some(Self::Day),
            "7d" => Some(Self::Week),
            "30d" => Some(Self::Month),
            _ => None,
        }
    }

    /// How far back the range reaches from now.
    pub fn duration(self) -> Duration {
        match self {
            Self::Hour => Duration::hours(1),
            Self::Day => Duration::hours(24),
            Self::Week => Duration::days(7),
            Self::Month => Duration::days(30),
        }
    }
}

/// Parses the comma-separated `types` filter; empty entries are ignored, so `types=` means
/// "no filter".
pub fn parse_types(raw: &str) -> AppResult<Option<Vec<String>>> {
    let types: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(bad) = types.iter().find(|t| !is_valid_type(t)) {
        return Err(AppError::field(
            "types",
            format!("`{bad}` must match ^[a-z][a-z_]{{0,31}}$"),
        ));
    }
    if types.len() > MAX_TYPES {
        return Err(AppError::field(
            "types",
            format!("at most {MAX_TYPES} types"),
        ));
    }
    Ok(if types.is_empty() { None } else { Some(types) })
}

/// A page request over the viewer's feed.
#[derive(Clone, Debug, Default)]
pub struct FeedQuery {
    pub limit: u64,
    /// An activity id: only older activities are returned.
    pub before: Option<String>,
    /// Only actors the viewer follows (no public activities of strangers).
    pub following_only: bool,
    pub types: Option<Vec<String>>,
    pub time_range: Option<TimeRange>,
}

/// A target with recent activity, for `GET /feed/trending`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trending {
    pub target_id: String,
    pub target_type: String,
    pub count: u64,
    #[serde(with = "serde_rfc3339")]
    pub last_activity_at: DateTime<Utc>,
}

/// Activity counts per type over the viewer's feed.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct Statistics {
    #[serde(rename = "last24h")]
    pub last_24h: BTreeMap<String, u64>,
    #[serde(rename = "last7d")]
    pub last_7d: BTreeMap<String, u64>,
}

/// Stores and reads feed activities.
pub struct FeedService {
    db: DatabaseConnection,
    writes: WritePath,
}

impl FeedService {
    /// A service over the shared connection pool.
    pub fn new(db: DatabaseConnection, writes: WritePath) -> Self {
        Self { db, writes }
    }

    /// Validates and stores an activity; the result is what gets fanned out.
    pub async fn publish(&self, input: NewActivity) -> AppResult<Activity> {
        input.validate()?;
        let row = feed_activity::ActiveModel {
            id: Set(crate::domain::chat::new_id()),
            activity_type: Set(input.activity_type),
            actor_id: Set(input.actor_id),
            target_id: Set(input.target_id),
            target_type: Set(input.target_type),
            content: Set(input.content),
            metadata: Set(input
                .metadata
                .filter(|m| !m.is_null())
                .map(|m| m.to_string())),
            audience: Set(input.audience.as_str().to_owned()),
            created_at: Set(Utc::now()),
        };
        let stored = feed_activity::Entity::insert(row)
            .exec_with_returning(&*self.writes.turn().await?)
            .await?;
        Ok(stored.into())
    }

    /// A page of the viewer's feed, newest first, and the cursor of the next page.
    pub async fn list(
        &self,
        viewer: &str,
        query: &FeedQuery,
    ) -> AppResult<(Vec<Activity>, Option<String>)> {
        let mut select = feed_activity::Entity::find()
            .filter(visible_to(viewer, query.following_only))
            .order_by_desc(feed_activity::Column::Id)
            .limit(query.limit + 1);
        if let Some(before) = &query.before {
            select = select.filter(feed_activity::Column::Id.lt(before.as_str()));
        }
        if let Some(types) = &query.types {
            select =
                select.filter(feed_activity::Column::ActivityType.is_in(types.iter().cloned()));
        }
        if let Some(range) = query.time_range {
            select =
                select.filter(feed_activity::Column::CreatedAt.gte(Utc::now() - range.duration()));
        }
        let mut rows = select.all(&self.db).await?;
        let has_more = rows.len() as u64 > query.limit;
        rows.truncate(usize::try_from(query.limit).unwrap_or(usize::MAX));
        let next = if has_more {
            rows.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok((rows.into_iter().map(Activity::from).collect(), next))
    }

    /// Targets with the most activities in the last 24 hours, most active first (ties: the most
    /// recently active first). Counted over all activities: the result names targets and
    /// counts, never who did what, so followers-only activities do not leak.
    pub async fn trending(&self, limit: u64) -> AppResult<Vec<Trending>> {
        let since = Utc::now() - Duration::hours(TRENDING_WINDOW_HOURS);
        let count = Expr::from(Func::count(Expr::col(feed_activity::Column::Id)));
        let last = Expr::from(Func::max(Expr::col(feed_activity::Column::CreatedAt)));
        let rows = feed_activity::Entity::find()
            .select_only()
            .column(feed_activity::Column::TargetId)
            .column(feed_activity::Column::TargetType)
            .column_as(count.clone(), "activity_count")
            .column_as(last.clone(), "last_activity_at")
            .filter(feed_activity::Column::CreatedAt.gte(since))
            .group_by(feed_activity::Column::TargetType)
            .group_by(feed_activity::Column::TargetId)
            .order_by_desc(count)
            .order_by_desc(last)
            .limit(limit)
            .into_tuple::<(String, String, i64, DateTime<Utc>)>()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(target_id, target_type, count, last)| Trending {
                target_id,
                target_type,
                count: u64::try_from(count).unwrap_or_default(),
                last_activity_at: last,
            })
            .collect())
    }

    /// Counts per activity type in the viewer's feed (followed actors plus public activities,
    /// as `list` without `following_only`) over the last 24 hours and 7 days, in one query.
    pub async fn statistics(&self, viewer: &str) -> AppResult<Statistics> {
        let now = Utc::now();
        let day = Expr::case(
            feed_activity::Column::CreatedAt.gte(now - Duration::hours(24)),
            Expr::cust("1"),
        )
        .finally(Expr::cust("0"));
        let rows = feed_activity::Entity::find()
            .select_only()
            .column(feed_activity::Column::ActivityType)
            .column_as(Expr::from(Func::sum(day)), "last_day")
            .column_as(
                Expr::from(Func::count(Expr::col(feed_activity::Column::Id))),
                "last_week",
            )
            .filter(visible_to(viewer, false))
            .filter(feed_activity::Column::CreatedAt.gte(now - Duration::days(7)))
            .group_by(feed_activity::Column::ActivityType)
            .into_tuple::<(String, i64, i64)>()
            .all(&self.db)
            .await?;
        let mut stats = Statistics::default();
        for (activity_type, day, week) in rows {
            let day = u64::try_from(day).unwrap_or_default();
            if day > 0 {
                stats.last_24h.insert(activity_type.clone(), day);
            }
            stats
                .last_7d
                .insert(activity_type, u64::try_from(week).unwrap_or_default());
        }
        Ok(stats)
    }
}

/// What a summary counts: the viewer's feed, or the comments on one target.
#[derive(Clone, Copy, Debug)]
pub enum Summary<'a> {
    /// The viewer's feed (as `list`), all types.
    Feed { following_only: bool },
    /// `comment` activities on one target that the viewer's feed would show.
    Comments { target_id: &'a str },
}

/// How many activities arrived in a window, and the newest of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Arrived {
    pub count: u64,
    pub latest_id: Option<String>,
}

impl FeedService {
    /// The id of the newest stored activity, anyone's: the cursor a summary starts from, and a
    /// cheap check whether anything arrived at all (one index lookup).
    pub async fn newest_id(&self) -> AppResult<Option<String>> {
        let newest: Option<Option<String>> = feed_activity::Entity::find()
            .select_only()
            .column_as(
                Expr::from(Func::max(Expr::col(feed_activity::Column::Id))),
                "newest",
            )
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(newest.flatten())
    }

    /// Activities of `summary` visible to `viewer` with `after < id <= up_to` (ids are
    /// time-ordered), for the "N new posts" banner and new-comment counts.
    pub async fn arrived(
        &self,
        viewer: &str,
        summary: Summary<'_>,
        after: Option<&str>,
        up_to: &str,
    ) -> AppResult<Arrived> {
        let mut select = feed_activity::Entity::find()
            .select_only()
            .column_as(
                Expr::from(Func::count(Expr::col(feed_activity::Column::Id))),
                "arrived",
            )
            .column_as(
                Expr::from(Func::max(Expr::col(feed_activity::Column::Id))),
                "latest",
            )
            .filter(feed_activity::Column::Id.lte(up_to));
        if let Some(after) = after {
            select = select.filter(feed_activity::Column::Id.gt(after));
        }
        select = match summary {
            Summary::Feed { following_only } => select.filter(visible_to(viewer, following_only)),
            Summary::Comments { target_id } => select
                .filter(visible_to(viewer, false))
                .filter(feed_activity::Column::ActivityType.eq("comment"))
                .filter(feed_activity::Column::TargetId.eq(target_id)),
        };
        let row: Option<(i64, Option<String>)> = select.into_tuple().one(&self.db).await?;
        let (count, latest_id) = row.unwrap_or((0, None));
        Ok(Arrived {
            count: u64::try_from(count).unwrap_or_default(),
            latest_id,
        })
    }
}

/// The viewer's feed as a condition: followed actors (and, unless `following_only`, public
/// activities), never the viewer's own. One subquery on the follows primary key, so the
/// following list is never loaded into memory.
fn visible_to(viewer: &str, following_only: bool) -> Condition {
    let followed = Query::select()
        .column(follow::Column::FolloweeId)
        .from(follow::Entity)
        .and_where(follow::Column::FollowerId.eq(viewer))
        .to_owned();
    let by_followed = feed_activity::Column::ActorId.in_subquery(followed);
    let audience = if following_only {
        Condition::all().add(by_followed)
    } else {
        Condition::any()
            .add(by_followed)
            .add(feed_activity::Column::Audience.eq(Audience::Public.as_str()))
    };
    Condition::all()
        .add(audience)
        .add(feed_activity::Column::ActorId.ne(viewer))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn valid() -> NewActivity {
        NewActivity {
            activity_type: "post".into(),
            actor_id: "alice".into(),
            target_id: "post-1".into(),
            target_type: "post".into(),
            content: Some("hello".into()),
            metadata: Some(json!({ "likes": 1 })),
            audience: Audience::Followers,
        }
    }

    fn fields(result: AppResult<()>) -> Vec<String> {
        match result {
            Err(AppError::InvalidPayload { details, .. }) => {
                details.into_iter().map(|d| d.field).collect()
            }
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(()) => Vec::new(),
        }
    }

    #[test]
    fn accepts_a_valid_activity() {
        assert!(valid().validate().is_ok());
        let bare = NewActivity {
            content: None,
            metadata: None,
            ..valid()
        };
        assert!(bare.validate().is_ok());
    }

    #[test]
    fn reports_every_bad_field_by_wire_name() {
        let bad = NewActivity {
            activity_type: "Post".into(),
            actor_id: String::new(),
            target_id: "x".repeat(129),
            target_type: "_x".into(),
            content: Some("a".repeat(MAX_CONTENT_CHARS + 1)),
            metadata: Some(json!([1, 2])),
            audience: Audience::Public,
        };
        assert_eq!(
            fields(bad.validate()),
            [
                "activityType",
                "targetType",
                "actorId",
                "targetId",
                "content",
                "metadata"
            ]
        );
    }

    #[test]
    fn content_counts_characters_not_bytes() {
        let ok = NewActivity {
            content: Some("é".repeat(MAX_CONTENT_CHARS)),
            ..valid()
        };
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn metadata_size_is_bounded() {
        let big = NewActivity {
            metadata: Some(json!({ "blob": "x".repeat(MAX_METADATA_BYTES) })),
            ..valid()
        };
        assert_eq!(fields(big.validate()), ["metadata"]);
        let null = NewActivity {
            metadata: Some(Value::Null),
            ..valid()
        };
        assert!(null.validate().is_ok());
    }

    #[test]
    fn type_pattern() {
        assert!(is_valid_type("group_invite"));
        assert!(is_valid_type(&"a".repeat(32)));
        assert!(!is_valid_type(&"a".repeat(33)));
        assert!(!is_valid_type(""));
        assert!(!is_valid_type("a1"));
    }

    #[test]
    fn types_filter_parsing() {
        assert_eq!(parse_types("").ok(), Some(None));
        assert_eq!(
            parse_types("post, like,").ok(),
            Some(Some(vec!["post".to_owned(), "like".to_owned()]))
        );
        assert!(parse_types("post,Like").is_err());
    }

    #[test]
    fn time_ranges() {
        assert_eq!(TimeRange::parse("7d"), Some(TimeRange::Week));
        assert_eq!(TimeRange::parse("2h"), None);
        assert_eq!(TimeRange::Month.duration(), Duration::days(30));
    }

    #[test]
    fn activity_wire_shape() {
        let activity = Activity {
            id: "id".into(),
            activity_type: "post".into(),
            actor_id: "a".into(),
            target_id: "t".into(),
            target_type: "post".into(),
            content: None,
            metadata: Value::Null,
            audience: Audience::Public,
            created_at: DateTime::<Utc>::UNIX_EPOCH,
        };
        assert_eq!(
            serde_json::to_value(&activity).ok(),
            Some(json!({
                "id": "id", "activityType": "post", "actorId": "a", "targetId": "t",
                "targetType": "post", "content": null, "metadata": null, "audience": "public",
                "createdAt": "1970-01-01T00:00:00.000Z",
            }))
        );
    }
}
