//! The results tables against a real PostgreSQL: upserts store an item once and keep what a
//! thinner record leaves out, exports stream in key order, counts see every table.

use futures_util::TryStreamExt;
use serde_json::json;
use sqlx::Row;
use trawl_shared::results::{self, Kind, Listing, PostRow, UserRow};
use trawl_shared::testing::fresh_db;

fn user(id: i64, username: &str, biography: Option<&str>) -> UserRow {
    UserRow {
        id,
        username: username.into(),
        full_name: None,
        is_private: None,
        is_verified: None,
        biography: biography.map(str::to_owned),
        follower_count: None,
        following_count: None,
        post_count: None,
        raw: json!({ "id": id.to_string(), "username": username }),
        ..UserRow::default()
    }
}

fn post(id: i64, owner_id: i64) -> PostRow {
    PostRow {
        id,
        shortcode: format!("sc{id}"),
        owner_id,
        owner_username: None,
        typename: None,
        taken_at: None,
        caption: None,
        like_count: Some(id),
        comment_count: None,
        is_video: None,
        raw: json!({ "id": id }),
        ..PostRow::default()
    }
}

#[tokio::test]
async fn items_are_stored_once_and_read_back_in_key_order() {
    let db = fresh_db().await;
    let mut tx = db.pool.begin().await.unwrap();
    // The same user twice in one page: one row, the last wins.
    let stored = results::upsert_users(
        &mut tx,
        1,
        &[user(7, "ada", Some("first")), user(7, "ada", Some("maths"))],
    )
    .await
    .unwrap();
    assert_eq!(stored, 1);
    results::upsert_posts(&mut tx, 1, &[post(30, 7), post(20, 7)])
        .await
        .unwrap();
    results::upsert_follows(&mut tx, 1, &[(8, 7), (8, 7), (9, 7)])
        .await
        .unwrap();
    results::upsert_hashtag_posts(&mut tx, 1, "sunset", &[30, 30])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // A later, thinner record of the same user keeps what the first one knew.
    let mut tx = db.pool.begin().await.unwrap();
    results::upsert_users(&mut tx, 2, &[user(7, "ada", None)])
        .await
        .unwrap();
    let known = results::stored_by_others(&mut tx, Listing::Posts, 2, &[20, 30, 40])
        .await
        .unwrap();
    assert_eq!(known.len(), 2, "posts stored by job 1 count for job 2");
    let own = results::stored_by_others(&mut tx, Listing::Posts, 1, &[20, 30])
        .await
        .unwrap();
    assert!(own.is_empty(), "a job's own items do not count");
    tx.commit().await.unwrap();

    let users: Vec<_> = results::export_rows(&db.pool, Kind::Users, None, None)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(
        users[0].get::<Option<String>, _>("biography").as_deref(),
        Some("maths")
    );
    assert_eq!(users[0].get::<Option<i64>, _>("last_job_id"), Some(2));

    let posts: Vec<i64> = results::export_rows(&db.pool, Kind::Posts, Some("ada".into()), None)
        .map_ok(|r| r.get::<i64, _>("id"))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        posts,
        vec![20, 30],
        "matched by the owner's username, in id order"
    );

    let counts = results::counts(&db.pool).await.unwrap();
    assert_eq!(
        counts,
        vec![
            (Kind::Users, 1),
            (Kind::Posts, 2),
            (Kind::Comments, 0),
            (Kind::Follows, 2),
            (Kind::Stories, 0),
            (Kind::HashtagPosts, 1),
            (Kind::V1Users, 0),
            (Kind::V1Posts, 0),
            (Kind::V1Comments, 0),
            (Kind::V1Follows, 0),
            (Kind::V1Stories, 0),
            (Kind::V1Notifications, 0),
            (Kind::V1Hashtags, 0),
            (Kind::V1Locations, 0),
        ]
    );
}

/// v1 items are keyed by kind and id: a user seen in a listing and then on its profile is one
/// row that keeps what either answer told; an export narrows by owner.
#[tokio::test]
async fn v1_items_merge_by_kind_and_id_and_export_by_owner() {
    use trawl_shared::results::{V1Item, V1Row};
    let db = fresh_db().await;
    let row = |id: &str, owner: Option<&str>, raw: serde_json::Value| V1Row {
        id: id.into(),
        owner_id: owner.map(str::to_owned),
        raw,
    };
    let mut tx = db.pool.begin().await.unwrap();
    results::upsert_v1_items(
        &mut tx,
        1,
        V1Item::User,
        &[row("5", None, json!({"user_id": "5", "username": "ana"}))],
    )
    .await
    .unwrap();
    results::upsert_v1_items(
        &mut tx,
        2,
        V1Item::User,
        &[row("5", None, json!({"user_id": "5", "bio": "hi"}))],
    )
    .await
    .unwrap();
    // The same id as a post is another item.
    results::upsert_v1_items(
        &mut tx,
        2,
        V1Item::Post,
        &[
            row("5", Some("5"), json!({"post_id": "5"})),
            row("9", Some("5"), json!({"post_id": "9"})),
            row("7", Some("6"), json!({"post_id": "7"})),
        ],
    )
    .await
    .unwrap();
    results::upsert_v1_follows(&mut tx, 2, &[("6".into(), "5".into())])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let user: serde_json::Value =
        sqlx::query_scalar("SELECT raw FROM v1_items WHERE item = 'user' AND id = '5'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        user,
        json!({"user_id": "5", "username": "ana", "bio": "hi"})
    );
    let posts: Vec<String> = results::export_rows(&db.pool, Kind::V1Posts, Some("5".into()), None)
        .map_ok(|r| r.get::<String, _>("id"))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(posts, vec!["5", "9"]);
    let counts = results::counts(&db.pool).await.unwrap();
    let count = |k: Kind| counts.iter().find(|(kind, _)| *kind == k).unwrap().1;
    assert_eq!(
        (
            count(Kind::V1Users),
            count(Kind::V1Posts),
            count(Kind::V1Follows)
        ),
        (1, 3, 1)
    );
}

/// The `*_as_sent` columns give objects back with their keys in the order they were stored
/// (jsonb `raw` does not), and a post keeps its listing's and its own query's objects apart.
#[tokio::test]
async fn objects_as_sent_keep_their_key_order_and_their_answer() {
    use trawl_shared::results::{CommentRow, PostSource, StoryRow};
    let db = fresh_db().await;
    let listing: serde_json::Value =
        serde_json::from_str(r#"{"zeta":1,"alpha":{"y":2,"b":[3,{"d":4,"c":5}]},"pk":9}"#).unwrap();
    let full: serde_json::Value = serde_json::from_str(r#"{"pk":9,"code":"sc9","b":1}"#).unwrap();
    let profile: serde_json::Value = serde_json::from_str(r#"{"pk":"7","id":"7"}"#).unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    let mut ada = user(7, "Ada", None);
    ada.profile_as_sent = Some(profile.clone());
    results::upsert_users(&mut tx, 1, &[ada]).await.unwrap();
    let listed = PostRow {
        raw: listing.clone(),
        source: PostSource::Listing,
        ..post(9, 7)
    };
    results::upsert_posts(&mut tx, 1, &[listed]).await.unwrap();
    let loaded = PostRow {
        raw: full.clone(),
        source: PostSource::Full,
        ..post(9, 7)
    };
    results::upsert_posts(&mut tx, 2, &[loaded]).await.unwrap();
    let comment: serde_json::Value = serde_json::from_str(r#"{"text":"hi","id":"5"}"#).unwrap();
    results::upsert_comments(
        &mut tx,
        2,
        &[CommentRow {
            id: 5,
            post_shortcode: "sc9".into(),
            raw: comment.clone(),
            ..CommentRow::default()
        }],
    )
    .await
    .unwrap();
    let app: serde_json::Value = serde_json::from_str(r#"{"pk":11,"id":"11_7"}"#).unwrap();
    let web: serde_json::Value = serde_json::from_str(r#"{"id":"11","__typename":"X"}"#).unwrap();
    results::upsert_stories(
        &mut tx,
        3,
        &[StoryRow {
            id: "11_7".into(),
            owner_id: 7,
            raw: app.clone(),
            web_item_as_sent: Some(web.clone()),
            ..StoryRow::default()
        }],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let text = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
    let profiles = results::archived_profiles(&db.pool, &["ADA".into()])
        .await
        .unwrap();
    assert_eq!(profiles.len(), 1);
    assert_eq!(
        text(&profiles[0].profile_as_sent),
        Some(profile.to_string())
    );
    assert_eq!(
        results::archived_profiles(&db.pool, &[]).await.unwrap(),
        profiles,
        "without names: every profile that owns posts or story items"
    );
    let stored = results::archived_post(&db.pool, 9).await.unwrap().unwrap();
    assert_eq!(text(&stored.listing_as_sent), Some(listing.to_string()));
    assert_eq!(text(&stored.full_as_sent), Some(full.to_string()));
    assert_eq!(results::archived_post_ids(&db.pool, 7).await.unwrap(), [9]);
    let comments = results::archived_comments(&db.pool, "sc9").await.unwrap();
    assert_eq!(text(&comments[0].as_sent), Some(comment.to_string()));
    let items = results::archived_story_items(&db.pool, 7).await.unwrap();
    assert_eq!(text(&items[0].app_item_as_sent), Some(app.to_string()));
    assert_eq!(text(&items[0].web_item_as_sent), Some(web.to_string()));
}
