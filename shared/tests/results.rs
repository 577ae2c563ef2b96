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
        ]
    );
}
