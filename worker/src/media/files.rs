//! Which pictures and videos an item has, read from the JSON it was stored with: I/O-free, so
//! every shape can be tested. The URLs chosen are the ones the reference client downloads:
//! a picture's largest candidate, a video's first version, a profile's HD picture.

use serde_json::Value;
use trawl_shared::results::{MediaFile, MediaVariant};

/// An item whose JSON names no picture to fetch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} names no picture or video")]
pub struct NoMedia(pub String);

fn url(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

/// A picture's URL in the web shape (`display_url`) or the mobile one (the first
/// `image_versions2` candidate, the largest).
fn picture_url(node: &Value) -> Option<String> {
    url(&node["display_url"])
        .or_else(|| url(&node["image_versions2"]["candidates"][0]["url"]))
        .or_else(|| {
            node["display_resources"]
                .as_array()
                .and_then(|r| r.last())
                .and_then(|r| url(&r["src"]))
        })
}

fn is_video(node: &Value) -> bool {
    node["is_video"].as_bool() == Some(true) || node["media_type"].as_i64() == Some(2)
}

fn video_url(node: &Value) -> Option<String> {
    url(&node["video_url"]).or_else(|| url(&node["video_versions"][0]["url"]))
}

/// The files of one node at `position`: its picture (a video's thumbnail), and its video.
fn node_files(node: &Value, position: i32, out: &mut Vec<MediaFile>) {
    if let Some(url) = picture_url(node) {
        out.push(MediaFile {
            position,
            variant: MediaVariant::Picture,
            url,
        });
    }
    if is_video(node)
        && let Some(url) = video_url(node)
    {
        out.push(MediaFile {
            position,
            variant: MediaVariant::Video,
            url,
        });
    }
}

/// A post's files: a sidecar's children numbered from 1 (its own cover is not a file of its
/// own, as the reference client saves only the children), any other post's at 0.
pub fn post_files(raw: &Value) -> Result<Vec<MediaFile>, NoMedia> {
    let children: Vec<&Value> = match (
        raw["edge_sidecar_to_children"]["edges"].as_array(),
        raw["carousel_media"].as_array(),
    ) {
        (Some(edges), _) => edges.iter().map(|e| &e["node"]).collect(),
        (None, Some(items)) => items.iter().collect(),
        (None, None) => Vec::new(),
    };
    let mut files = Vec::new();
    if children.is_empty() {
        node_files(raw, 0, &mut files);
    } else {
        for (i, child) in children.into_iter().enumerate() {
            node_files(child, i32::try_from(i + 1).unwrap_or(i32::MAX), &mut files);
        }
    }
    if files.is_empty() {
        return Err(NoMedia(format!("post {}", shown_id(raw))));
    }
    Ok(files)
}

/// A story or highlight item's files: its picture (a video's thumbnail) and its video.
pub fn story_files(raw: &Value) -> Result<Vec<MediaFile>, NoMedia> {
    let mut files = Vec::new();
    node_files(raw, 0, &mut files);
    if files.is_empty() {
        return Err(NoMedia(format!("story item {}", shown_id(raw))));
    }
    Ok(files)
}

/// A profile's picture, the largest the answer names.
pub fn profile_pic_file(raw: &Value) -> Result<Vec<MediaFile>, NoMedia> {
    url(&raw["hd_profile_pic_url_info"]["url"])
        .or_else(|| url(&raw["profile_pic_url_hd"]))
        .or_else(|| url(&raw["profile_pic_url"]))
        .map(|url| {
            vec![MediaFile {
                position: 0,
                variant: MediaVariant::Picture,
                url,
            }]
        })
        .ok_or_else(|| NoMedia(format!("profile {}", shown_id(raw))))
}

fn shown_id(raw: &Value) -> String {
    ["shortcode", "code", "username", "id", "pk"]
        .iter()
        .find_map(|k| match &raw[*k] {
            Value::String(s) => Some(s.chars().take(64).collect()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| "(no id)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shown(files: &[MediaFile]) -> Vec<(i32, &'static str, &str)> {
        files
            .iter()
            .map(|f| (f.position, f.variant.as_str(), f.url.as_str()))
            .collect()
    }

    #[test]
    fn web_posts_give_their_picture_video_and_sidecar_children() {
        let image = json!({"shortcode": "a", "display_url": "p.jpg", "is_video": false});
        assert_eq!(
            shown(&post_files(&image).unwrap()),
            [(0, "picture", "p.jpg")]
        );
        let video = json!({"display_url": "t.jpg", "is_video": true, "video_url": "v.mp4"});
        assert_eq!(
            shown(&post_files(&video).unwrap()),
            [(0, "picture", "t.jpg"), (0, "video", "v.mp4")]
        );
        let sidecar = json!({"display_url": "cover.jpg", "edge_sidecar_to_children": {"edges": [
            {"node": {"display_url": "1.jpg", "is_video": false}},
            {"node": {"display_url": "2.jpg", "is_video": true, "video_url": "2.mp4"}}]}});
        assert_eq!(
            shown(&post_files(&sidecar).unwrap()),
            [
                (1, "picture", "1.jpg"),
                (2, "picture", "2.jpg"),
                (2, "video", "2.mp4")
            ]
        );
    }

    #[test]
    fn mobile_items_give_their_first_candidate_and_version() {
        let carousel = json!({"code": "c", "carousel_media": [
            {"media_type": 1, "image_versions2": {"candidates": [{"url": "big.jpg"}, {"url": "small.jpg"}]}},
            {"media_type": 2, "image_versions2": {"candidates": [{"url": "thumb.jpg"}]},
             "video_versions": [{"url": "v.mp4"}]}]});
        assert_eq!(
            shown(&post_files(&carousel).unwrap()),
            [
                (1, "picture", "big.jpg"),
                (2, "picture", "thumb.jpg"),
                (2, "video", "v.mp4")
            ]
        );
        let story = json!({"pk": "7", "media_type": 2,
            "image_versions2": {"candidates": [{"url": "s.jpg"}]}, "video_versions": [{"url": "s.mp4"}]});
        assert_eq!(
            shown(&story_files(&story).unwrap()),
            [(0, "picture", "s.jpg"), (0, "video", "s.mp4")]
        );
    }

    #[test]
    fn profiles_give_their_largest_picture_and_items_without_media_are_named() {
        let user = json!({"username": "u", "profile_pic_url": "small.jpg",
            "hd_profile_pic_url_info": {"url": "hd.jpg"}});
        assert_eq!(
            shown(&profile_pic_file(&user).unwrap()),
            [(0, "picture", "hd.jpg")]
        );
        assert_eq!(
            post_files(&json!({"shortcode": "gone"}))
                .unwrap_err()
                .to_string(),
            "post gone names no picture or video"
        );
        assert!(story_files(&json!({"pk": 9, "image_versions2": {"candidates": []}})).is_err());
    }
}
